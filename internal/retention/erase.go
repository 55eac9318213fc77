package retention

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/phone"
	"github.com/delauto/delauto/workers/store"
)

// Eraser removes a person's data on request (delauto erase).
type Eraser struct {
	// Store is the call log.
	Store *store.Store
	// Accounts finds each campaign's Twilio account, to delete recordings.
	Accounts Accounts
	// Kube, when set, deletes the Deliveries that call the number (they
	// hold it, with the name and address); nil leaves them to the user.
	Kube ctrlclient.Client
	// Tries and Pause are how often and how patiently each recording is
	// tried; defaults 3 and 500ms.
	Tries int
	Pause time.Duration
}

// EraseReport is what Erase did.
type EraseReport struct {
	// Deliveries deleted (namespace/name), or found holding the number when
	// Kube is nil.
	Deliveries []string
	// Attempts found calling the number; Cancelled of them were still
	// planned; Anonymized had their personal data removed.
	Attempts, Cancelled, Anonymized int
	// Recordings deleted at Twilio; RecordingsFailed could not be (their
	// attempts keep the recording SIDs, without the number, for another run).
	Recordings, RecordingsFailed int
	// OptOutsHashed are opt-outs that held the number and now hold its hash.
	OptOutsHashed int
}

// Print writes the report for a person to read.
func (r EraseReport) Print(w io.Writer, number string, deleteDeliveries bool) {
	fmt.Fprintf(w, "erased the data of %s\n", phone.Mask(number))
	verb := "deleted"
	if !deleteDeliveries {
		verb = "holding the number (delete them: they are your records)"
	}
	fmt.Fprintf(w, "  deliveries %s: %d\n", verb, len(r.Deliveries))
	for _, d := range r.Deliveries {
		fmt.Fprintf(w, "    %s\n", d)
	}
	fmt.Fprintf(w, "  call attempts: %d found, %d cancelled before calling, %d anonymized\n", r.Attempts, r.Cancelled, r.Anonymized)
	fmt.Fprintf(w, "  recordings deleted at Twilio: %d", r.Recordings)
	if r.RecordingsFailed > 0 {
		fmt.Fprintf(w, " (%d could not be deleted: run erase again)", r.RecordingsFailed)
	}
	fmt.Fprintf(w, "\n  opt-outs kept as a salted hash: %d\n", r.OptOutsHashed)
}

// Erase removes the data of the person at number: the Deliveries calling it
// (with Kube), then every call attempt's personal data (planned calls are
// cancelled first), their recordings and transcriptions at Twilio, and the
// number itself from opt-outs, which keep only a salted hash so the person
// is still not called. It goes on past a recording it cannot delete and
// then returns an error with the report; running it again finishes the job.
func (e *Eraser) Erase(ctx context.Context, number string) (EraseReport, error) {
	var rep EraseReport
	if err := phone.Validate(number); err != nil {
		return rep, err
	}
	tries, pause := e.Tries, e.Pause
	if tries <= 0 {
		tries = 3
	}
	if pause <= 0 {
		pause = 500 * time.Millisecond
	}
	// The Deliveries go first, so the operator plans no new call meanwhile.
	if err := e.deleteDeliveries(ctx, number, &rep); err != nil {
		return rep, err
	}
	attempts, err := e.Store.AttemptsTo(ctx, number)
	if err != nil {
		return rep, err
	}
	rep.Attempts = len(attempts)
	if e.Kube == nil {
		seen := map[string]bool{}
		for _, a := range attempts {
			if k := a.Delivery.Namespace + "/" + a.Delivery.Name; !seen[k] {
				seen[k] = true
				rep.Deliveries = append(rep.Deliveries, k)
			}
		}
		slices.Sort(rep.Deliveries)
	}
	var failures []error
	for i := range attempts {
		a := &attempts[i]
		if a.State.Claimable() {
			_, err := e.Store.MarkCancelled(ctx, a.ID, store.AnyFence, "erased on request")
			switch {
			case err == nil:
				rep.Cancelled++
			case !errors.Is(err, store.ErrInvalidTransition):
				return rep, fmt.Errorf("cancel attempt %s: %w", a.ID, err)
			}
		}
		sids := a.PendingRecordingSIDs()
		deleted := 0
		if len(sids) > 0 {
			r, err := e.Accounts.Recordings(ctx, a.Campaign)
			if err == nil {
				deleted, err = deleteAll(ctx, r, sids, tries, pause)
			}
			if err != nil {
				failures = append(failures, fmt.Errorf("attempt %s: %w", a.ID, err))
			}
			rep.Recordings += deleted
			rep.RecordingsFailed += len(sids) - deleted
			if deleted > 0 && deleted < len(sids) {
				if _, err := e.Store.DeleteRecordingsDone(ctx, a.ID, sids[:deleted]); err != nil {
					return rep, err
				}
			}
		}
		if _, err := e.Store.Anonymize(ctx, a.ID, deleted == len(sids)); err != nil && !errors.Is(err, store.ErrNotFound) {
			return rep, fmt.Errorf("anonymize attempt %s: %w", a.ID, err)
		}
		rep.Anonymized++
	}
	if rep.OptOutsHashed, err = e.Store.EraseOptOuts(ctx, number); err != nil {
		return rep, err
	}
	if len(failures) > 0 {
		return rep, fmt.Errorf("some recordings could not be deleted at Twilio: %w", errors.Join(failures...))
	}
	return rep, nil
}

// deleteDeliveries deletes the Deliveries whose recipient is number.
func (e *Eraser) deleteDeliveries(ctx context.Context, number string, rep *EraseReport) error {
	if e.Kube == nil {
		return nil
	}
	var list v1.DeliveryList
	if err := e.Kube.List(ctx, &list); err != nil {
		return fmt.Errorf("list Deliveries: %w", err)
	}
	for i := range list.Items {
		d := &list.Items[i]
		if string(d.Spec.Recipient.Phone) != number {
			continue
		}
		uid := d.UID
		if err := e.Kube.Delete(ctx, d, ctrlclient.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete Delivery %s/%s: %w", d.Namespace, d.Name, err)
		}
		rep.Deliveries = append(rep.Deliveries, d.Namespace+"/"+d.Name)
	}
	slices.Sort(rep.Deliveries)
	return nil
}
