package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/outcome"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestReplanLosingToAClaimFollowsTheClaimedAttempt: the window changes just
// as a worker claims the attempt, between the operator's read of the call
// log and its cancel. The operator must not plan attempt 2 while attempt 1
// may be calling; it follows attempt 1 and plans attempt 2 from its outcome.
func TestReplanLosingToAClaimFollowsTheClaimedAttempt(t *testing.T) {
	ctx := context.Background()
	var (
		mu      sync.Mutex
		st      *store.Store
		claimed *store.Attempt
	)
	o := startOperator(t, func(r *controllers.DeliveryReconciler) {
		controllers.SetBeforeReplan(r, func(id string) {
			mu.Lock()
			defer mu.Unlock()
			if claimed != nil {
				return
			}
			a, err := st.Claim(ctx, id, "worker-1", time.Minute)
			if err != nil {
				t.Errorf("worker claim of %s: %v", id, err)
				return
			}
			claimed = a
		})
	})
	mu.Lock()
	st = o.store
	mu.Unlock()
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "race").Name, v1.DeliveryScheduled)

	o.moveWindowToTomorrow(t, d)
	eventually(t, 15*time.Second, "the window change observed", func() error {
		d = o.get(t, "race")
		if d.Status.ObservedGeneration != d.Generation {
			return fmt.Errorf("observed generation %d of %d", d.Status.ObservedGeneration, d.Generation)
		}
		return nil
	})
	mu.Lock()
	c := claimed
	mu.Unlock()
	if c == nil {
		t.Fatal("the re-plan never reached the cancel of attempt 1")
	}
	as := o.attempts(t, d)
	if len(as) != 1 {
		t.Fatalf("%d attempts while attempt 1 is dialing (states %v): a second call can be placed", len(as), states(as))
	}
	if as[0].State != store.StateDialing {
		t.Fatalf("attempt 1 is %s, want still dialing (the worker holds it)", as[0].State)
	}
	if d.Status.Phase != v1.DeliveryCalling {
		t.Fatalf("phase %s while attempt 1 is dialing, want Calling", d.Status.Phase)
	}

	// Attempt 1's call ends unanswered: attempt 2 is planned from that
	// outcome.
	sid := nextSID()
	if _, err := o.store.MarkDialed(ctx, c.ID, c.Fence, sid, "+493012345670"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.store.ApplyCallStatus(ctx, store.CallRef{AttemptID: c.ID}, store.StatusUpdate{Status: "no-answer", Seq: 3, CallSID: sid}); err != nil {
		t.Fatal(err)
	}
	if err := outcome.Publish(ctx, o.rdb, outcome.Event{AttemptID: c.ID, Namespace: d.Namespace, Name: d.Name, State: "no-answer"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "attempt 2 planned after attempt 1's outcome", func() error {
		as := o.attempts(t, d)
		if len(as) != 2 {
			return fmt.Errorf("%d attempts (%v)", len(as), states(as))
		}
		if as[0].State != store.StateCompleted || as[1].State != store.StateQueued || as[1].Number != 2 {
			return fmt.Errorf("attempts %v", states(as))
		}
		if as[1].Due.Before(*as[0].EndedAt) {
			return fmt.Errorf("attempt 2 due %s, before attempt 1 ended (%s)", as[1].Due, as[0].EndedAt)
		}
		return nil
	})
}

func states(as []store.Attempt) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = fmt.Sprintf("%d:%s", a.Number, a.State)
	}
	return out
}

// TestCancelledDeliveryWhileDialingIsNeverCalledLater: the Delivery is
// cancelled while a worker holds its attempt; the worker then puts the
// attempt back (rate limited, draining). The attempt must end cancelled,
// and no later claim may take it.
func TestCancelledDeliveryWhileDialingIsNeverCalledLater(t *testing.T) {
	ctx := context.Background()
	o := startOperator(t)
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "cancel-dialing").Name, v1.DeliveryScheduled)
	a := o.attempts(t, d)[0]
	c, err := o.store.Claim(ctx, a.ID, "worker-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	update(t, d, func(d *v1.Delivery) { d.Spec.Cancelled = true })
	o.waitPhase(t, d.Name, v1.DeliveryCancelled)

	released, err := o.store.Release(ctx, a.ID, c.Fence, o.clock.Now(), "draining")
	if err != nil {
		t.Fatal(err)
	}
	if released.State != store.StateCancelled {
		t.Errorf("the released attempt of a cancelled Delivery is %s, want cancelled", released.State)
	}
	if again, err := o.store.Claim(ctx, a.ID, "worker-2", time.Minute); err == nil {
		t.Fatalf("a worker claimed the attempt of a cancelled Delivery again (fence %d): it would call", again.Fence)
	} else if !errors.Is(err, store.ErrNotClaimable) {
		t.Fatal(err)
	}
}

// TestDeletedDeliveryWhileDialingIsNeverCalledLater: the Delivery is
// deleted while a worker holds its attempt. Its finalizer stays while the
// attempt may still call; the worker puts the attempt back; it ends
// cancelled, no later claim takes it, and then the Delivery goes.
func TestDeletedDeliveryWhileDialingIsNeverCalledLater(t *testing.T) {
	ctx := context.Background()
	o := startOperator(t)
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "delete-dialing").Name, v1.DeliveryScheduled)
	a := o.attempts(t, d)[0]
	c, err := o.store.Claim(ctx, a.ID, "worker-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Kube.Client.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	gone := func() bool {
		err := env.Kube.Client.Get(ctx, client.ObjectKeyFromObject(d), &v1.Delivery{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		return apierrors.IsNotFound(err)
	}
	eventually(t, 15*time.Second, "the deletion handled", func() error {
		if gone() {
			return nil
		}
		if cur, err := o.store.Get(ctx, a.ID); err != nil || !cur.CancelRequested {
			return fmt.Errorf("attempt %s not marked for cancellation yet (%v)", a.ID, err)
		}
		return nil
	})
	if gone() {
		t.Fatalf("the Delivery was let go while its attempt %s was dialing", a.ID)
	}

	released, err := o.store.Release(ctx, a.ID, c.Fence, o.clock.Now(), "rate limited")
	if err != nil {
		t.Fatal(err)
	}
	if released.State != store.StateCancelled {
		t.Errorf("the released attempt of a deleted Delivery is %s, want cancelled", released.State)
	}
	if again, err := o.store.Claim(ctx, a.ID, "worker-2", time.Minute); err == nil {
		t.Fatalf("a worker claimed the attempt of a deleted Delivery again (fence %d): it would call", again.Fence)
	} else if !errors.Is(err, store.ErrNotClaimable) {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the Delivery goes once no attempt may call", func() error {
		if !gone() {
			return errors.New("still there")
		}
		return nil
	})
}

// TestWindowMovedWhileDialingCallsOffTheTakenAttempt: a Delivery's window
// moves to the next day while a worker holds attempt 1 (dialing, no call
// placed yet). When the worker puts the attempt back (a rate-limit wait, or
// the reconciler finding no call after an ambiguous dial), it must end
// cancelled, not be dialed again on its old due time, and the next call is
// planned for the new window. make chaos found the attempt dialed again
// three minutes after the change.
func TestWindowMovedWhileDialingCallsOffTheTakenAttempt(t *testing.T) {
	ctx := context.Background()
	o := startOperator(t)
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "moved").Name, v1.DeliveryScheduled)
	as := o.attempts(t, d)
	if len(as) != 1 {
		t.Fatalf("%d attempts planned, want 1", len(as))
	}
	held, err := o.store.Claim(ctx, as[0].ID, "worker-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	newStart := o.moveWindowToTomorrow(t, d)
	eventually(t, 15*time.Second, "attempt 1 called off while the worker holds it", func() error {
		as := o.attempts(t, d)
		if len(as) != 1 {
			return fmt.Errorf("%d attempts while attempt 1 is held (%v): a second call can be placed", len(as), states(as))
		}
		if as[0].State != store.StateDialing || !as[0].CancelRequested {
			return fmt.Errorf("attempt 1 is %s, cancel requested %v", as[0].State, as[0].CancelRequested)
		}
		return nil
	})

	// The worker puts it back: it ends cancelled, and attempt 2 is planned
	// for the new window.
	b, err := o.store.Release(ctx, held.ID, held.Fence, o.clock.Now(), "rate limited")
	if err != nil {
		t.Fatal(err)
	}
	if b.State != store.StateCancelled {
		t.Fatalf("released attempt 1 is %s, want cancelled", b.State)
	}
	if err := outcome.Publish(ctx, o.rdb, outcome.Event{AttemptID: b.ID, Namespace: d.Namespace, Name: d.Name, State: string(b.State)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "attempt 2 planned for the new window", func() error {
		as := o.attempts(t, d)
		if len(as) != 2 || as[1].State != store.StateQueued {
			return fmt.Errorf("attempts %v", states(as))
		}
		if as[1].Due.Before(newStart.Add(-24 * time.Hour / 2)) {
			return fmt.Errorf("attempt 2 due %s, not in the new window's day (it opens %s)", as[1].Due, newStart)
		}
		return nil
	})
}

// TestDeliveryStoppedWhileTheCallLogIsDownIsCalledOff: the Delivery is
// cancelled or deleted while the operator cannot reach MongoDB. Its queued
// attempt stays queued in the call log until the store is back and the
// reconcile, retried with back-off, cancels it; a worker reaching the store
// first would claim and call it (make chaos found such calls 30 to 50 s
// after the change). The operator must call the Delivery off in Redis,
// which the queue and the workers honour, and once the store is back the
// attempt ends cancelled.
func TestDeliveryStoppedWhileTheCallLogIsDownIsCalledOff(t *testing.T) {
	for _, how := range []string{"cancelled", "deleted"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			ns := namespace(t)
			o, proxy := startOperatorBehindProxy(t, ns)
			o.campaign(t)
			d := o.waitPhase(t, o.delivery(t, "stopped-"+how).Name, v1.DeliveryScheduled)
			a := o.attempts(t, d)[0]
			shard := queue.Shard{Namespace: ns, Campaign: d.Status.Campaign, Name: a.Shard}
			if off, _, err := queue.IsCalledOff(ctx, o.rdb, shard, a.ID); err != nil || off {
				t.Fatalf("attempt called off before anything happened (%v, %v)", off, err)
			}

			proxy.Down()
			if how == "cancelled" {
				update(t, d, func(d *v1.Delivery) { d.Spec.Cancelled = true })
			} else if err := env.Kube.Client.Delete(ctx, d); err != nil {
				t.Fatal(err)
			}
			eventually(t, 30*time.Second, "the Delivery's calls called off in Redis", func() error {
				off, _, err := queue.IsCalledOff(ctx, o.rdb, shard, a.ID)
				if err != nil {
					return err
				}
				if !off {
					cur, err := o.store.Get(ctx, a.ID)
					if err != nil {
						return err
					}
					return fmt.Errorf("not called off; a worker reaching the call log would claim the %s attempt and call", cur.State)
				}
				return nil
			})
			// The queue keeps it out too (the sweeper republishes queued
			// attempts missing from Redis).
			if r, err := o.queue.Schedule(ctx, shard, a.ID, time.Now()); err != nil || r != queue.CalledOff {
				t.Errorf("scheduling the attempt again: %v, %v; want %v", r, err, queue.CalledOff)
			}

			proxy.Up(t)
			eventually(t, 90*time.Second, "the attempt cancelled in the call log once it is back", func() error {
				cur, err := o.store.Get(ctx, a.ID)
				if err != nil {
					return err
				}
				if cur.State != store.StateCancelled {
					return fmt.Errorf("attempt is %s", cur.State)
				}
				return nil
			})
			if how == "deleted" {
				eventually(t, 30*time.Second, "the Delivery gone", func() error {
					err := env.Kube.Client.Get(ctx, client.ObjectKeyFromObject(d), &v1.Delivery{})
					if apierrors.IsNotFound(err) {
						return nil
					}
					return fmt.Errorf("still there (%v)", err)
				})
			} else {
				o.waitPhase(t, d.Name, v1.DeliveryCancelled)
			}
		})
	}
}

// TestNewWindowIsReplannedAfterAFailedReconcile: the reconcile that carries
// out a Delivery's new window fails at the cancel of the queued attempt (its
// lock held by another writer past the wait), while the call log still takes
// the status's insights write. The status must not record the generation as
// observed: the next reconcile would see no change and the attempt would be
// called on its old due time, outside the new window.
func TestNewWindowIsReplannedAfterAFailedReconcile(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	mc, err := mongo.Connect(options.Client().ApplyURI(env.Mongo.URI))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	locks := mc.Database("op_" + ns).Collection(store.LocksCollection)
	var (
		once   sync.Once
		locked = make(chan string, 1)
	)
	o := startOperatorIn(t, ns, env.Kube.Config, func(r *controllers.DeliveryReconciler) {
		st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: "op_" + ns, Now: r.Now, LockWait: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close(context.Background()) })
		r.Store = st
		controllers.SetBeforeReplan(r, func(id string) {
			once.Do(func() {
				// Another writer's lock, taken 50 s ago: it expires (LockTTL
				// 60 s) about 10 s from now, long after the 1 s wait failed.
				if _, err := locks.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "token", Value: "other-writer"},
					{Key: "at", Value: time.Now().Add(-50 * time.Second)}}); err != nil {
					t.Errorf("lock attempt %s: %v", id, err)
				}
				locked <- id
			})
		})
	})
	if o.store.Features().AtomicUpdates {
		t.Fatal("the call log takes atomic updates: no lock to hold, the test needs FerretDB")
	}
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "moved").Name, v1.DeliveryScheduled)
	first := o.attempts(t, d)[0]

	newStart := o.moveWindowToTomorrow(t, d)
	select {
	case id := <-locked:
		if id != first.ID {
			t.Fatalf("re-plan of attempt %s, want %s", id, first.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the new window never reached the re-plan of attempt 1")
	}
	eventually(t, 60*time.Second, "attempt 1 cancelled and attempt 2 planned for the new window", func() error {
		as := o.attempts(t, d)
		if len(as) != 2 || as[0].State != store.StateCancelled || as[1].State != store.StateQueued {
			return fmt.Errorf("attempts %v; attempt 1 due %s, the new window opens %s", states(as), first.Due, newStart)
		}
		if as[1].Due.Before(newStart.Add(-24 * time.Hour / 2)) {
			return fmt.Errorf("attempt 2 due %s, not in the new window's day (it opens %s)", as[1].Due, newStart)
		}
		// The status is written after the call log, at the reconcile's end.
		if cur := o.get(t, d.Name); cur.Status.ObservedGeneration != cur.Generation {
			return fmt.Errorf("observed generation %d of %d after the re-plan", cur.Status.ObservedGeneration, cur.Generation)
		}
		return nil
	})
}

// TestCancelledDeliveryWithoutItsCampaignIsCancelled: a Delivery's campaign
// is deleted while its attempt is queued, then the Delivery is cancelled.
// Its attempt must be cancelled and the Delivery end Cancelled: the
// reconcile stopped at CampaignNotFound, the attempt stayed queued (a
// campaign created again under the name would have called it), and the
// Delivery counted as a change not carried out at every relist.
func TestCancelledDeliveryWithoutItsCampaignIsCancelled(t *testing.T) {
	ctx := context.Background()
	o := startOperator(t)
	c := o.campaign(t)
	ref := o.delivery(t, "orphan", func(d *v1.Delivery) { d.Spec.CampaignRef = &v1.CampaignReference{Name: c.Name} })
	sel := o.delivery(t, "orphan-selected")
	d := o.waitPhase(t, ref.Name, v1.DeliveryScheduled)
	e := o.waitPhase(t, sel.Name, v1.DeliveryScheduled)
	if err := env.Kube.Client.Delete(ctx, c); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*v1.Delivery{d, e} {
		update(t, d, func(d *v1.Delivery) { d.Spec.Cancelled = true })
	}
	for _, d := range []*v1.Delivery{d, e} {
		d = o.waitPhase(t, d.Name, v1.DeliveryCancelled)
		for _, a := range o.attempts(t, d) {
			if a.State != store.StateCancelled {
				t.Errorf("%s: attempt %s is %s after cancellation without the campaign", d.Name, a.ID, a.State)
			}
			if _, ok := o.queued(t, d, a.ID); ok {
				t.Errorf("%s: attempt %s still queued after cancellation without the campaign", d.Name, a.ID)
			}
		}
		if err := hasCondition(d.Status.Conditions, v1.ConditionReady, metav1.ConditionTrue, "Finished"); err != nil {
			t.Errorf("%s: %v", d.Name, err)
		}
	}
}

// TestNewWindowWhileTheCallLogIsDownHoldsTheCalls: a Delivery gets a new
// window while the operator cannot reach MongoDB, so its queued attempt
// stays on the old plan until the reconcile, retried with back-off,
// re-plans it. A worker claiming the attempt as soon as MongoDB is back
// called it first (make chaos, seed 465066: a call 16 s after the change,
// given during a PostgreSQL stop). The operator must hold the Delivery's
// calls in Redis, which workers honour, and lift the hold once the attempt
// is re-planned.
func TestNewWindowWhileTheCallLogIsDownHoldsTheCalls(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	o, proxy := startOperatorBehindProxy(t, ns)
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "moved-while-down").Name, v1.DeliveryScheduled)
	a := o.attempts(t, d)[0]
	shard := queue.Shard{Namespace: ns, Campaign: d.Status.Campaign, Name: a.Shard}
	held := func() (bool, error) {
		_, held, err := queue.IsCalledOff(ctx, o.rdb, shard, a.ID)
		return held, err
	}
	if h, err := held(); err != nil || h {
		t.Fatalf("attempt held before anything happened (%v, %v)", h, err)
	}

	proxy.Down()
	newStart := o.moveWindowToTomorrow(t, d)
	eventually(t, 30*time.Second, "the Delivery's calls held in Redis", func() error {
		h, err := held()
		if err != nil {
			return err
		}
		if !h {
			return errors.New("not held: a worker reaching the call log first would call the attempt on its old plan")
		}
		return nil
	})
	if cur := o.get(t, d.Name); cur.Status.ObservedGeneration == cur.Generation {
		t.Fatalf("the new window is observed (generation %d) while the call log is down", cur.Generation)
	}

	proxy.Up(t)
	eventually(t, 90*time.Second, "attempt 1 re-planned for the new window and the hold lifted", func() error {
		as := o.attempts(t, d)
		if len(as) != 2 || as[0].State != store.StateCancelled || as[1].State != store.StateQueued {
			return fmt.Errorf("attempts %v", states(as))
		}
		if as[1].Due.Before(newStart.Add(-24 * time.Hour / 2)) {
			return fmt.Errorf("attempt 2 due %s, not in the new window's day (it opens %s)", as[1].Due, newStart)
		}
		if h, err := held(); err != nil || h {
			return fmt.Errorf("still held (%v, %v)", h, err)
		}
		return nil
	})
}

// TestChangedDeliveryIsHeldBeforeItsReconcile: a worker learnt that a
// Delivery got a new window, or was deleted, only from the reconcile that
// carries the change out. Behind an overloaded call log that reconcile came
// up to 90 s later, and workers called Deliveries after their new window or
// their deletion (make chaos, default profile). The operator must hold the
// Delivery's calls in Redis as soon as it sees the change, before that
// reconcile runs, and lift the hold once the change is carried out.
func TestChangedDeliveryIsHeldBeforeItsReconcile(t *testing.T) {
	ctx := context.Background()
	var (
		mu     sync.Mutex
		shard  queue.Shard
		rdb    = env.Redis.Client()
		atPlan = make(chan error, 1)
	)
	heldNow := func(id string) (bool, error) {
		mu.Lock()
		sh := shard
		mu.Unlock()
		_, held, err := queue.IsCalledOff(ctx, rdb, sh, id)
		return held, err
	}
	o := startOperator(t, func(r *controllers.DeliveryReconciler) {
		controllers.SetBeforeReplan(r, func(id string) {
			// Inside the reconcile of the new window, before it re-plans
			// the queued attempt in the call log.
			held, err := heldNow(id)
			if err == nil && !held {
				err = fmt.Errorf("attempt %s not held when the reconcile of the new window began: a worker could call it on its old plan until then", id)
			}
			select {
			case atPlan <- err:
			default:
			}
		})
	})
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "moved").Name, v1.DeliveryScheduled)
	e := o.waitPhase(t, o.delivery(t, "deleted").Name, v1.DeliveryScheduled)
	first := o.attempts(t, d)[0]
	mu.Lock()
	shard = queue.Shard{Namespace: d.Namespace, Campaign: d.Status.Campaign, Name: first.Shard}
	mu.Unlock()
	if h, err := heldNow(first.ID); err != nil || h {
		t.Fatalf("attempt held before anything happened (%v, %v)", h, err)
	}

	o.moveWindowToTomorrow(t, d)
	select {
	case err := <-atPlan:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the new window never reached the re-plan of attempt 1")
	}
	eventually(t, 30*time.Second, "attempt 1 re-planned and the hold lifted", func() error {
		as := o.attempts(t, d)
		if len(as) != 2 || as[0].State != store.StateCancelled || as[1].State != store.StateQueued {
			return fmt.Errorf("attempts %v", states(as))
		}
		if h, err := heldNow(as[1].ID); err != nil || h {
			return fmt.Errorf("attempt 2 held after the re-plan (%v, %v): it would never be called", h, err)
		}
		return nil
	})

	// A deleted Delivery's hold goes with its finalizer.
	if err := env.Kube.Client.Delete(ctx, e); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the deleted Delivery gone and its hold lifted", func() error {
		if err := env.Kube.Client.Get(ctx, client.ObjectKeyFromObject(e), &v1.Delivery{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		as := o.attempts(t, e)
		if len(as) != 1 || as[0].State != store.StateCancelled {
			return fmt.Errorf("attempts %v", states(as))
		}
		if h, err := heldNow(as[0].ID); err != nil || h {
			return fmt.Errorf("still held (%v, %v)", h, err)
		}
		return nil
	})
}

// startOperatorBehindProxy starts the Delivery controller in namespace ns
// with its call log reached through a proxy the test can take down, and
// short timeouts so its reconciles fail fast while it is down.
func startOperatorBehindProxy(t *testing.T, ns string) (*operator, *testservices.Proxy) {
	t.Helper()
	u, err := url.Parse(env.Mongo.URI)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testservices.StartProxy(t, u.Host)
	o := startOperatorIn(t, ns, env.Kube.Config, func(r *controllers.DeliveryReconciler) {
		st, err := store.Open(context.Background(), store.Config{URI: proxy.URL(t, env.Mongo.URI), Database: "op_" + ns, Now: r.Now,
			ConnectTimeout: 500 * time.Millisecond, ServerSelectionTimeout: 500 * time.Millisecond, OperationTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close(context.Background()) })
		r.Store = st
	})
	return o, proxy
}
