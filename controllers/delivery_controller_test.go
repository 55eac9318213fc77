package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/outcome"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

// clock is the operator's and the call log's time: real time plus an offset
// the test moves forward.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// operator is a running Delivery controller with its stores.
type operator struct {
	store *store.Store
	queue *queue.Queue
	rdb   *redis.Client
	clock *clock
	ns    string
	reg   *prometheus.Registry
}

func startOperator(t *testing.T, edit ...func(*controllers.DeliveryReconciler)) *operator {
	t.Helper()
	return startOperatorIn(t, namespace(t), env.Kube.Config, func(r *controllers.DeliveryReconciler) {
		for _, e := range edit {
			e(r)
		}
	})
}

// startOperatorIn starts the Delivery controller in namespace ns, reaching
// the apiserver with cfg; mutate, when set, adjusts the reconciler first.
func startOperatorIn(t *testing.T, ns string, cfg *rest.Config, mutate func(*controllers.DeliveryReconciler)) *operator {
	t.Helper()
	ctx := context.Background()
	clk := &clock{}
	st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: "op_" + ns, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	rdb := env.Redis.Client()
	q := queue.New(rdb, queue.Options{})
	t.Cleanup(func() { st.Close(context.Background()); rdb.Close() })

	mgr := newManagerAs(t, cfg, ns)
	src := controllers.NewOutcomeSource(rdb, "op-"+ns, nil)
	if err := mgr.Add(src); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r := &controllers.DeliveryReconciler{
		Metrics:  controllers.NewMetrics(reg),
		Client:   mgr.GetClient(),
		Store:    st,
		Queue:    q,
		Recorder: mgr.GetEventRecorder("delauto-operator"),
		Now:      clk.Now,
		Outcomes: src.Events,

		CallLogRetention:     24 * time.Hour,
		PhaseSummaryInterval: 300 * time.Millisecond,
	}
	if mutate != nil {
		mutate(r)
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	run(t, mgr)
	return &operator{store: st, queue: q, rdb: rdb, clock: clk, ns: ns, reg: reg}
}

// campaign creates a campaign that may call at any hour, with 2 retries.
func (o *operator) campaign(t *testing.T, mutate ...func(*v1.CallCampaign)) *v1.CallCampaign {
	t.Helper()
	c := &v1.CallCampaign{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.ns, Name: "spree"},
		Spec: v1.CallCampaignSpec{
			DeliverySelector: &metav1.LabelSelector{MatchLabels: map[string]string{"route": "b17"}},
			Schedule: v1.ScheduleSpec{
				LeadTime:        &metav1.Duration{Duration: time.Hour},
				CallingHours:    v1.CallingHours{Start: "00:00", End: "23:59"},
				DefaultTimeZone: "UTC",
			},
			Retry: v1.RetryPolicy{
				MaxAttempts: 3,
				Backoff:     []metav1.Duration{{Duration: 10 * time.Minute}},
				RetryOn:     []v1.CallResult{v1.CallNoAnswer, v1.CallBusy, v1.CallFailed},
			},
			Script: v1.CallScript{CompanyName: "Spree"},
			Twilio: v1.TwilioSpec{
				CredentialsSecretRef: v1.TwilioCredentials{Name: "twilio"},
				FromNumbers:          []v1.PhoneNumber{"+493012345670"},
				CallbackURL:          "https://calls.example.com",
			},
			Sharding: v1.ShardingSpec{By: v1.ShardByHash, Count: 2},
		},
	}
	for _, m := range mutate {
		m(c)
	}
	if err := env.Kube.Client.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// delivery creates a Delivery whose window opened 10 minutes ago, so its
// first call is due at once.
func (o *operator) delivery(t *testing.T, name string, mutate ...func(*v1.Delivery)) *v1.Delivery {
	t.Helper()
	now := o.clock.Now()
	d := &v1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.ns, Name: name, Labels: map[string]string{"route": "b17"}},
		Spec: v1.DeliverySpec{
			Recipient: v1.Recipient{Name: "Anna", Phone: "+4915112345678", TimeZone: "Europe/Berlin"},
			Address:   v1.Address{Line1: "Torstrasse 1", City: "Berlin"},
			Window:    v1.DeliveryWindow{Start: metav1.NewTime(now.Add(-10 * time.Minute)), End: metav1.NewTime(now.Add(3 * time.Hour))},
			Agent:     v1.Agent{Name: "Route B-17"},
		},
	}
	for _, m := range mutate {
		m(d)
	}
	if err := env.Kube.Client.Create(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// moveWindowToTomorrow moves d's window to a two-hour window that opens a
// day from now on the operator's clock, and returns when it opens.
func (o *operator) moveWindowToTomorrow(t *testing.T, d *v1.Delivery) time.Time {
	t.Helper()
	start := o.clock.Now().Add(24 * time.Hour).Truncate(time.Second)
	update(t, d, func(d *v1.Delivery) {
		d.Spec.Window = v1.DeliveryWindow{Start: metav1.NewTime(start), End: metav1.NewTime(start.Add(2 * time.Hour))}
	})
	return start
}

func (o *operator) get(t *testing.T, name string) *v1.Delivery {
	t.Helper()
	d := &v1.Delivery{}
	if err := env.Kube.Client.Get(context.Background(), client.ObjectKey{Namespace: o.ns, Name: name}, d); err != nil {
		t.Fatal(err)
	}
	return d
}

// waitPhase waits until the Delivery reaches phase.
func (o *operator) waitPhase(t *testing.T, name string, phase v1.DeliveryPhase) *v1.Delivery {
	t.Helper()
	var d *v1.Delivery
	eventually(t, 15*time.Second, fmt.Sprintf("%s reaches %s", name, phase), func() error {
		d = o.get(t, name)
		if d.Status.Phase != phase {
			return fmt.Errorf("phase %q, conditions %v", d.Status.Phase, d.Status.Conditions)
		}
		return nil
	})
	return d
}

// attempts reads a Delivery's attempts from the call log.
func (o *operator) attempts(t *testing.T, d *v1.Delivery) []store.Attempt {
	t.Helper()
	as, err := o.store.ForDelivery(context.Background(), string(d.UID))
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// queued reports whether attempt id waits in its shard's queue: in the due
// set (with its due time) or, when due at once, in the ready stream.
func (o *operator) queued(t *testing.T, d *v1.Delivery, id string) (time.Time, bool) {
	t.Helper()
	ctx := context.Background()
	s := queue.Shard{Namespace: o.ns, Campaign: d.Status.Campaign, Name: d.Status.Shard}
	score, err := o.rdb.ZScore(ctx, s.DueKey(), id).Result()
	if err == nil {
		return time.UnixMilli(int64(score)), true
	}
	if err != redis.Nil {
		t.Fatal(err)
	}
	ok, err := o.rdb.HExists(ctx, s.IndexKey(), id).Result()
	if err != nil {
		t.Fatal(err)
	}
	return time.Time{}, ok
}

// queuedCount is the number of attempts waiting in the Delivery's shard
// queue (due set and ready stream).
func (o *operator) queuedCount(t *testing.T, d *v1.Delivery) int64 {
	ctx := context.Background()
	s := queue.Shard{Namespace: o.ns, Campaign: d.Status.Campaign, Name: d.Status.Shard}
	n, err := o.rdb.ZCard(ctx, s.DueKey()).Result()
	if err != nil {
		t.Fatal(err)
	}
	m, err := o.rdb.HLen(ctx, s.IndexKey()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n + m
}

var sidCounter struct {
	sync.Mutex
	n int
}

func nextSID() string {
	sidCounter.Lock()
	defer sidCounter.Unlock()
	sidCounter.n++
	return fmt.Sprintf("CA%032d", sidCounter.n)
}

// call plays a worker and Twilio for the Delivery's open attempt: claim,
// dial, final status, an answer, then the outcome event.
func (o *operator) call(t *testing.T, d *v1.Delivery, status string, answer v1.ResponseChoice) store.Attempt {
	t.Helper()
	ctx := context.Background()
	as := o.attempts(t, d)
	a := as[len(as)-1]
	claimed, err := o.store.Claim(ctx, a.ID, "worker-1", time.Minute)
	if err != nil {
		t.Fatalf("claim %s: %v", a.ID, err)
	}
	sid := nextSID()
	if _, err := o.store.MarkDialed(ctx, a.ID, claimed.Fence, sid, "+493012345670"); err != nil {
		t.Fatal(err)
	}
	if answer != "" {
		if _, _, err := o.store.RecordResponse(ctx, a.ID, store.Answer{Choice: answer, Digits: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := o.store.ApplyCallStatus(ctx, store.CallRef{AttemptID: a.ID}, store.StatusUpdate{Status: status, Seq: 3, CallSID: sid, DurationSec: 20}); err != nil {
		t.Fatal(err)
	}
	if err := outcome.Publish(ctx, o.rdb, outcome.Event{AttemptID: a.ID, Namespace: d.Namespace, Name: d.Name, State: status}); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDeliveryIsScheduledOnceHoweverOftenItIsReconciled(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	d := o.delivery(t, "parcel-1")
	d = o.waitPhase(t, "parcel-1", v1.DeliveryScheduled)
	if d.Status.Campaign != "spree" || (d.Status.Shard != "shard-0" && d.Status.Shard != "shard-1") {
		t.Fatalf("campaign/shard = %s/%s", d.Status.Campaign, d.Status.Shard)
	}
	if err := hasCondition(d.Status.Conditions, v1.ConditionReady, metav1.ConditionTrue, "Planned"); err != nil {
		t.Error(err)
	}
	// Touch the Delivery many times: every reconcile must find the plan made.
	for i := 0; i < 10; i++ {
		cur := o.get(t, "parcel-1")
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations["touch"] = fmt.Sprint(i)
		if err := env.Kube.Client.Update(context.Background(), cur); err != nil && !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	as := o.attempts(t, d)
	if len(as) != 1 || as[0].Number != 1 || as[0].State != store.StateQueued {
		t.Fatalf("attempts in the call log = %+v, want one queued attempt 1", as)
	}
	if _, ok := o.queued(t, d, as[0].ID); !ok {
		t.Fatal("the attempt is not in the shard's queue")
	}
	if n := o.queuedCount(t, d); n != 1 {
		t.Errorf("the shard's queue holds %d attempts, want 1", n)
	}
	if cc := as[0].Context; cc == nil || cc.RecipientName != "Anna" || cc.TimeZone != "Europe/Berlin" || cc.Address != "Torstrasse 1, Berlin" || cc.AgentName != "Route B-17" {
		t.Errorf("call context = %+v", as[0].Context)
	}
	if d.Status.NextCallTime == nil || d.Status.NextCallTime.Time.Sub(as[0].Due).Abs() > time.Second {
		t.Errorf("nextCallTime %v, attempt due %s", d.Status.NextCallTime, as[0].Due)
	}
	if fin := o.get(t, "parcel-1").Finalizers; len(fin) != 1 || fin[0] != controllers.Finalizer {
		t.Errorf("finalizers = %v", fin)
	}
}

func TestDeliveryPhasesFollowOutcomes(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	cases := []struct {
		name   string
		status string
		answer v1.ResponseChoice
		want   v1.DeliveryPhase
	}{
		{"confirm", "completed", v1.ChoiceConfirm, v1.DeliveryConfirmed},
		{"reschedule", "completed", v1.ChoiceReschedule, v1.DeliveryRescheduleRequested},
		{"instructions", "completed", v1.ChoiceInstructions, v1.DeliveryInstructionsRecorded},
		{"optout", "completed", v1.ChoiceOptOut, v1.DeliveryOptedOut},
		{"hangup", "completed", "", v1.DeliveryUnreachable},
	}
	for _, tc := range cases {
		o.delivery(t, tc.name)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := o.waitPhase(t, tc.name, v1.DeliveryScheduled)
			o.call(t, d, tc.status, tc.answer)
			d = o.waitPhase(t, tc.name, tc.want)
			if d.Status.Attempts != 1 || d.Status.LastAttempt == nil || d.Status.LastAttempt.CallSID == "" {
				t.Errorf("attempts %d, last attempt %+v", d.Status.Attempts, d.Status.LastAttempt)
			}
			if tc.answer != "" && (d.Status.Response == nil || d.Status.Response.Choice != tc.answer) {
				t.Errorf("response = %+v, want %s", d.Status.Response, tc.answer)
			}
			if d.Status.FinishedTime == nil || d.Status.NextCallTime != nil {
				t.Errorf("finished %v, next call %v", d.Status.FinishedTime, d.Status.NextCallTime)
			}
			if n := len(o.attempts(t, d)); n != 1 {
				t.Errorf("%d attempts after a final answer, want 1", n)
			}
		})
	}
	// The transitions a person acts on left an Event on their Delivery; the
	// others are counted in the campaign's summary Event.
	eventually(t, 15*time.Second, "phase Events", func() error {
		var evs eventsv1.EventList
		if err := env.Kube.Client.List(context.Background(), &evs, client.InNamespace(o.ns)); err != nil {
			t.Fatal(err)
		}
		own := map[string]string{}
		summary := ""
		for _, e := range evs.Items {
			switch e.Regarding.Kind {
			case "Delivery":
				own[e.Regarding.Name] += e.Reason + " "
			case "CallCampaign":
				if e.Reason == controllers.ReasonPhaseSummary {
					summary += e.Note + "; "
				}
			}
		}
		if own["optout"] != "OptedOut " || own["hangup"] != "Unreachable " {
			return fmt.Errorf("Delivery Events %v, want OptedOut on optout and Unreachable on hangup", own)
		}
		for _, quiet := range []string{"confirm", "reschedule", "instructions"} {
			if own[quiet] != "" {
				t.Errorf("Delivery %s has Events %q; Scheduled and answered Deliveries have none of their own", quiet, own[quiet])
			}
		}
		for _, want := range []string{"Scheduled: ", "Confirmed: 1", "RescheduleRequested: 1"} {
			if !strings.Contains(summary, want) {
				return fmt.Errorf("the campaign's summary Events %q do not count %q", summary, want)
			}
		}
		return nil
	})
}

func TestDeliveryRetriesThenGivesUp(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	d := o.delivery(t, "retry")
	d = o.waitPhase(t, "retry", v1.DeliveryScheduled)
	first := o.call(t, d, "no-answer", "")

	eventually(t, 15*time.Second, "attempt 2 planned after the backoff", func() error {
		d = o.get(t, "retry")
		as := o.attempts(t, d)
		if len(as) != 2 || d.Status.Phase != v1.DeliveryScheduled || d.Status.Attempts != 1 {
			return fmt.Errorf("phase %s, %d calls made, %d attempts", d.Status.Phase, d.Status.Attempts, len(as))
		}
		gap := as[1].Due.Sub(*as[0].EndedAt)
		if gap < 10*time.Minute-time.Second || gap > 10*time.Minute+2*time.Second {
			return fmt.Errorf("attempt 2 is due %s after attempt 1 ended, want the 10m backoff", gap)
		}
		if _, ok := o.queued(t, d, as[1].ID); !ok {
			return fmt.Errorf("attempt 2 is not queued in Redis")
		}
		return nil
	})
	if d.Status.LastAttempt == nil || d.Status.LastAttempt.Result != v1.CallNoAnswer || d.Status.Attempts != 1 {
		t.Errorf("status after a no-answer: attempts %d, last %+v", d.Status.Attempts, d.Status.LastAttempt)
	}
	_ = first
	for n := 2; n <= 3; n++ {
		o.clock.Advance(11 * time.Minute)
		o.call(t, o.get(t, "retry"), "busy", "")
		if n < 3 {
			eventually(t, 15*time.Second, fmt.Sprintf("attempt %d planned", n+1), func() error {
				if as := o.attempts(t, d); len(as) != n+1 {
					return fmt.Errorf("%d attempts", len(as))
				}
				return nil
			})
		}
	}
	d = o.waitPhase(t, "retry", v1.DeliveryUnreachable)
	if d.Status.Attempts != 3 {
		t.Errorf("attempts = %d, want 3", d.Status.Attempts)
	}
	if err := hasCondition(d.Status.Conditions, v1.ConditionReady, metav1.ConditionTrue, "MaxAttemptsReached"); err != nil {
		t.Error(err)
	}
}

func TestDeliveryRejectedNumberFails(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "bad").Name, v1.DeliveryScheduled)
	ctx := context.Background()
	a := o.attempts(t, d)[0]
	claimed, err := o.store.Claim(ctx, a.ID, "w", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.store.MarkFailed(ctx, a.ID, claimed.Fence, 21211, "Invalid 'To' Phone Number"); err != nil {
		t.Fatal(err)
	}
	if err := outcome.Publish(ctx, o.rdb, outcome.Event{AttemptID: a.ID, Namespace: o.ns, Name: "bad"}); err != nil {
		t.Fatal(err)
	}
	d = o.waitPhase(t, "bad", v1.DeliveryFailed)
	if err := hasCondition(d.Status.Conditions, v1.ConditionReady, metav1.ConditionTrue, "NumberRejected"); err != nil {
		t.Error(err)
	}
	if d.Status.LastAttempt == nil || d.Status.LastAttempt.ErrorCode != 21211 {
		t.Errorf("last attempt = %+v", d.Status.LastAttempt)
	}
}

func TestDeliveryWindowChangeReplans(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "move").Name, v1.DeliveryScheduled)
	old := o.attempts(t, d)[0]

	// The window moves to tomorrow: the first call moves with it.
	newStart := o.moveWindowToTomorrow(t, d)
	eventually(t, 15*time.Second, "re-planned", func() error {
		d = o.get(t, "move")
		as := o.attempts(t, d)
		if len(as) != 2 {
			return fmt.Errorf("%d attempts", len(as))
		}
		if as[0].State != store.StateCancelled {
			return fmt.Errorf("the old attempt is %s, want cancelled", as[0].State)
		}
		if want := newStart.Add(-time.Hour); !as[1].Due.Equal(want) {
			return fmt.Errorf("new attempt due %s, want %s", as[1].Due, want)
		}
		if d.Status.Phase != v1.DeliveryScheduled || d.Status.NextCallTime == nil || !d.Status.NextCallTime.Time.Equal(as[1].Due) {
			return fmt.Errorf("status %s next %v", d.Status.Phase, d.Status.NextCallTime)
		}
		return nil
	})
	if _, ok := o.queued(t, d, old.ID); ok {
		t.Error("the re-planned attempt is still queued in Redis")
	}
	if n := o.queuedCount(t, d); n != 1 {
		t.Errorf("%d entries in the due set, want the new attempt only", n)
	}
	if d.Status.Attempts != 0 {
		t.Errorf("attempts = %d; no call was made", d.Status.Attempts)
	}
}

func TestDeliveryCancelAndDelete(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	ctx := context.Background()
	c := o.waitPhase(t, o.delivery(t, "cancel").Name, v1.DeliveryScheduled)
	del := o.waitPhase(t, o.delivery(t, "delete").Name, v1.DeliveryScheduled)

	update(t, c, func(d *v1.Delivery) { d.Spec.Cancelled = true })
	c = o.waitPhase(t, "cancel", v1.DeliveryCancelled)
	for _, a := range o.attempts(t, c) {
		if a.State != store.StateCancelled {
			t.Errorf("attempt %s is %s after cancellation", a.ID, a.State)
		}
		if _, ok := o.queued(t, c, a.ID); ok {
			t.Errorf("attempt %s still queued after cancellation", a.ID)
		}
	}

	if err := env.Kube.Client.Delete(ctx, del); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "deleted", func() error {
		err := env.Kube.Client.Get(ctx, client.ObjectKeyFromObject(del), &v1.Delivery{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	as := o.attempts(t, del)
	if len(as) != 1 || as[0].State != store.StateCancelled {
		t.Errorf("attempts after delete = %+v, want the queued one cancelled", as)
	}
	if _, ok := o.queued(t, del, as[0].ID); ok {
		t.Error("the deleted delivery's attempt is still queued")
	}
}

func TestFinishedDeliveryDeletedAfterRetention(t *testing.T) {
	o := startOperator(t)
	o.campaign(t, func(c *v1.CallCampaign) { c.Spec.Retention = &metav1.Duration{Duration: 2 * time.Second} })
	d := o.waitPhase(t, o.delivery(t, "old").Name, v1.DeliveryScheduled)
	o.call(t, d, "completed", v1.ChoiceConfirm)
	o.waitPhase(t, "old", v1.DeliveryConfirmed)
	eventually(t, 15*time.Second, "deleted after retention", func() error {
		err := env.Kube.Client.Get(context.Background(), client.ObjectKeyFromObject(d), &v1.Delivery{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	// Its calls expire from the call log by the same retention, counted
	// from each call's end (the purge or a TTL index deletes them).
	as := o.attempts(t, d)
	if len(as) != 1 || as[0].Response == nil || as[0].Response.Choice != v1.ChoiceConfirm {
		t.Fatalf("call log after retention = %+v", as)
	}
	if a := as[0]; a.RetentionSec == nil || *a.RetentionSec != 2 || a.ExpireAt == nil || !a.ExpireAt.Equal(a.EndedAt.Add(2*time.Second)) {
		t.Errorf("attempt retention %v, ended %v, expires %v; want the campaign's 2s after its end", a.RetentionSec, a.EndedAt, a.ExpireAt)
	}
}

func TestCallLogRetentionDefaultsToTheOperators(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	d := o.waitPhase(t, o.delivery(t, "kept").Name, v1.DeliveryScheduled)
	if as := o.attempts(t, d); len(as) != 1 || as[0].RetentionSec == nil || *as[0].RetentionSec != 24*3600 {
		t.Fatalf("attempt of a campaign without retention = %+v; want the operator's 24h", as)
	}
}

func TestDeliveryCampaignResolution(t *testing.T) {
	o := startOperator(t)
	ctx := context.Background()
	// No campaign yet: Pending with a reason; the campaign's arrival plans it.
	o.delivery(t, "early")
	eventually(t, 15*time.Second, "Pending NoMatchingCampaign", func() error {
		d := o.get(t, "early")
		if d.Status.Phase != v1.DeliveryPending {
			return fmt.Errorf("phase %q", d.Status.Phase)
		}
		return hasCondition(d.Status.Conditions, v1.ConditionReady, metav1.ConditionFalse, "NoMatchingCampaign")
	})
	o.campaign(t)
	o.waitPhase(t, "early", v1.DeliveryScheduled)

	// Two campaigns select it: a condition, not a guess.
	o.campaign(t, func(c *v1.CallCampaign) { c.Name = "other" })
	o.delivery(t, "both")
	eventually(t, 15*time.Second, "AmbiguousCampaign", func() error {
		return hasCondition(o.get(t, "both").Status.Conditions, v1.ConditionReady, metav1.ConditionFalse, "AmbiguousCampaign")
	})
	// An explicit reference settles it.
	o.delivery(t, "explicit", func(d *v1.Delivery) { d.Spec.CampaignRef = &v1.CampaignReference{Name: "other"} })
	if d := o.waitPhase(t, "explicit", v1.DeliveryScheduled); d.Status.Campaign != "other" {
		t.Errorf("campaign = %s, want other", d.Status.Campaign)
	}
	o.delivery(t, "missing", func(d *v1.Delivery) { d.Spec.CampaignRef = &v1.CampaignReference{Name: "nope"} })
	eventually(t, 15*time.Second, "CampaignNotFound", func() error {
		return hasCondition(o.get(t, "missing").Status.Conditions, v1.ConditionReady, metav1.ConditionFalse, "CampaignNotFound")
	})
	_ = ctx
}

func TestOptedOutNumberIsNotPlanned(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	if _, err := o.store.AddOptOut(context.Background(), o.ns, "+4915112345678", "", "said stop"); err != nil {
		t.Fatal(err)
	}
	d := o.waitPhase(t, o.delivery(t, "stop").Name, v1.DeliveryOptedOut)
	if as := o.attempts(t, d); len(as) != 0 {
		t.Errorf("an opted-out number got %d attempts", len(as))
	}
	_ = ptr.To(1)
}

func threeShards(c *v1.CallCampaign) { c.Spec.Sharding = v1.ShardingSpec{By: v1.ShardByHash, Count: 3} }

// deliveryOffShard0 creates Deliveries of a three-shard campaign until one
// is scheduled on a shard that going down to one shard removes (its UID
// hashes to shard-1 or shard-2; two in three do), and returns it.
func (o *operator) deliveryOffShard0(t *testing.T, mutate ...func(*v1.Delivery)) *v1.Delivery {
	t.Helper()
	for i := range 30 {
		name := fmt.Sprintf("parcel-%d", i)
		o.delivery(t, name, mutate...)
		if d := o.waitPhase(t, name, v1.DeliveryScheduled); d.Status.Shard != "shard-0" {
			return d
		}
	}
	t.Fatal("30 Deliveries all hashed to shard-0")
	return nil
}

// A retry planned after the campaign lost shards goes to a shard it still
// has: one no worker reads would never be called.
func TestRetryAfterShardCountShrinksIsQueuedOnACurrentShard(t *testing.T) {
	o := startOperator(t)
	c := o.campaign(t, threeShards)
	d := o.deliveryOffShard0(t)
	old := d.Status.Shard

	// Attempt 1 is being called when the campaign goes down to one shard.
	ctx := context.Background()
	first := o.attempts(t, d)[0]
	claimed, err := o.store.Claim(ctx, first.ID, "worker-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sid := nextSID()
	if _, err := o.store.MarkDialed(ctx, first.ID, claimed.Fence, sid, "+493012345670"); err != nil {
		t.Fatal(err)
	}
	update(t, c, func(c *v1.CallCampaign) { c.Spec.Sharding.Count = 1 })
	eventually(t, 15*time.Second, "status.shard names a shard the campaign has", func() error {
		if got := o.get(t, d.Name).Status.Shard; got != "shard-0" {
			return fmt.Errorf("status.shard = %s after the campaign went down to shard-0 alone", got)
		}
		return nil
	})

	// It goes unanswered: attempt 2 is planned on shard-0.
	if _, _, err := o.store.ApplyCallStatus(ctx, store.CallRef{AttemptID: first.ID}, store.StatusUpdate{Status: "no-answer", Seq: 3, CallSID: sid}); err != nil {
		t.Fatal(err)
	}
	if err := outcome.Publish(ctx, o.rdb, outcome.Event{AttemptID: first.ID, Namespace: d.Namespace, Name: d.Name, State: "no-answer"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "attempt 2 queued on shard-0", func() error {
		d = o.get(t, d.Name)
		as := o.attempts(t, d)
		if len(as) != 2 || d.Status.Phase != v1.DeliveryScheduled {
			return fmt.Errorf("phase %s, %d attempts", d.Status.Phase, len(as))
		}
		if as[1].Shard != "shard-0" {
			return fmt.Errorf("attempt 2 is planned on %s, which the campaign no longer has", as[1].Shard)
		}
		if _, ok := o.queued(t, d, as[1].ID); !ok {
			return fmt.Errorf("attempt 2 is not in shard-0's queue")
		}
		return nil
	})
	gone := queue.Shard{Namespace: o.ns, Campaign: "spree", Name: old}
	if err := o.rdb.ZScore(ctx, gone.DueKey(), o.attempts(t, d)[1].ID).Err(); err != redis.Nil {
		t.Errorf("attempt 2 is in the queue of removed shard %s too (%v)", old, err)
	}
}

// An attempt planned on a shard the campaign then loses moves, in the call
// log too, to a shard it has: the sweeper and the dialer's reconciler of
// that shard's workers queue it again should Redis lose it.
func TestQueuedAttemptOfARemovedShardMovesToACurrentShard(t *testing.T) {
	o := startOperator(t)
	c := o.campaign(t, threeShards)
	d := o.deliveryOffShard0(t, func(d *v1.Delivery) {
		start := o.clock.Now().Add(3 * time.Hour) // the call is due in two hours
		d.Spec.Window = v1.DeliveryWindow{Start: metav1.NewTime(start), End: metav1.NewTime(start.Add(2 * time.Hour))}
	})
	first := o.attempts(t, d)[0]
	update(t, c, func(c *v1.CallCampaign) { c.Spec.Sharding.Count = 1 })
	eventually(t, 15*time.Second, "attempt 1 moved to shard-0", func() error {
		as := o.attempts(t, d)
		if len(as) != 1 {
			return fmt.Errorf("attempts %v", states(as))
		}
		if as[0].Shard != "shard-0" || as[0].State != store.StateQueued {
			return fmt.Errorf("attempt 1 %s on %s", as[0].State, as[0].Shard)
		}
		if d = o.get(t, d.Name); d.Status.Shard != "shard-0" {
			return fmt.Errorf("status.shard = %s", d.Status.Shard)
		}
		if due, ok := o.queued(t, d, first.ID); !ok || due.UnixMilli() != first.Due.UnixMilli() {
			return fmt.Errorf("queued on shard-0: %v, due %s, want %s", ok, due, first.Due)
		}
		return nil
	})
}

// A Delivery whose status write was lost (the leader died between planning
// attempt 1 and writing Scheduled, and the new leader sees an empty phase)
// while attempt 1 ended without an answer must still get attempt 2. The
// reconcile that follows such a call must leave the "never planned" state,
// or every later reconcile takes it for a new Delivery again.
func TestDeliveryWithLostStatusIsPlannedAfterItsFirstCallEnds(t *testing.T) {
	o := startOperator(t)
	o.campaign(t)
	d := o.delivery(t, "lost-status")
	d = o.waitPhase(t, "lost-status", v1.DeliveryScheduled)

	// The Scheduled write never happened, as far as the apiserver knows.
	d.Status = v1.DeliveryStatus{}
	if err := env.Kube.Client.Status().Update(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	o.call(t, o.get(t, "lost-status"), "no-answer", "")

	eventually(t, 30*time.Second, "attempt 2 planned after the unanswered first call", func() error {
		d = o.get(t, "lost-status")
		as := o.attempts(t, d)
		if len(as) != 2 || d.Status.Phase != v1.DeliveryScheduled || d.Status.Attempts != 1 {
			return fmt.Errorf("phase %q, %d calls made, %d attempts", d.Status.Phase, d.Status.Attempts, len(as))
		}
		if _, ok := o.queued(t, d, as[1].ID); !ok {
			return fmt.Errorf("attempt 2 is not queued in Redis")
		}
		return nil
	})
}
