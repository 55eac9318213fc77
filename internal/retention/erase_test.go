package retention_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/retention"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

// campaign creates namespace ns with CallCampaign "evening" whose Twilio
// Secret holds the simulator's credentials.
func campaign(t *testing.T, ns string, sim *twiliosim.Sim) {
	t.Helper()
	ctx := context.Background()
	c := env.Kube.Client
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "twilio"},
			Data: map[string][]byte{"accountSID": []byte(sim.AccountSID()), "authToken": []byte(sim.AuthToken())}},
		&v1.CallCampaign{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "evening"}, Spec: v1.CallCampaignSpec{
			Script: v1.CallScript{CompanyName: "Example"},
			Twilio: v1.TwilioSpec{CredentialsSecretRef: v1.TwilioCredentials{Name: "twilio"},
				FromNumbers: []v1.PhoneNumber{"+14155550100"}, CallbackURL: "https://calls.example.com"},
		}},
	} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

func TestKubeAccountsReadTheCampaignSecret(t *testing.T) {
	ctx := context.Background()
	sim, _ := startSim(t)
	campaign(t, "accounts", sim)
	k := &retention.KubeAccounts{Reader: env.Kube.Client, BaseURL: sim.URL()}
	rec := sim.AddRecording("CA00000000000000000000000000000009", 3, "back door")
	r, err := k.Recordings(ctx, "accounts/evening")
	if err != nil {
		t.Fatalf("Recordings: %v", err)
	}
	if err := r.DeleteRecording(ctx, rec.Sid); err != nil {
		t.Fatalf("DeleteRecording: %v", err)
	}
	if got := simRecording(t, sim, rec.Sid); !got.Deleted || !got.TranscriptionDeleted {
		t.Fatalf("recording after delete: %+v", got)
	}
	if err := r.DeleteRecording(ctx, rec.Sid); err != nil {
		t.Fatalf("deleting a recording already gone: %v, want success", err)
	}
	for campaign, want := range map[string]string{
		"accounts/gone": "campaign accounts/gone no longer exists",
		"no-slash":      `campaign "no-slash" is not namespace/name`,
	} {
		if _, err := k.Recordings(ctx, campaign); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Recordings(%s) = %v, want %q", campaign, err, want)
		}
	}
	sec := &corev1.Secret{}
	if err := env.Kube.Client.Get(ctx, client.ObjectKey{Namespace: "accounts", Name: "twilio"}, sec); err != nil {
		t.Fatal(err)
	}
	sec.Data["authToken"] = []byte("not a token!")
	if err := env.Kube.Client.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Recordings(ctx, "accounts/evening"); err == nil || !strings.Contains(err.Error(), "auth token must contain only letters and digits") {
		t.Errorf("Recordings with a bad Secret = %v", err)
	}
}

func TestEraseANumberEverywhere(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, clk)
	sim, _ := startSim(t)
	const ns, num, other = "erase", "+4915112345678", "+4917612345678"
	campaign(t, ns, sim)
	kube := env.Kube.Client
	for name, phone := range map[string]string{"mine": num, "theirs": other} {
		d := &v1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.DeliverySpec{
			Recipient: v1.Recipient{Name: "Anna Schmidt", Phone: v1.PhoneNumber(phone), TimeZone: "Europe/Berlin"},
			Address:   v1.Address{Line1: "Torstrasse 101", City: "Berlin", Country: "DE"},
			Window:    v1.DeliveryWindow{Start: metav1.NewTime(clk.Now().Add(time.Hour)), End: metav1.NewTime(clk.Now().Add(3 * time.Hour))},
			Agent:     v1.Agent{Name: "Route 1"},
		}}
		if err := kube.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// The number's history: a finished call with a recording, a call still
	// planned, and an opt-out; another number's call stays as it is.
	newAttempt := func(uid, to string) store.NewAttempt {
		return store.NewAttempt{Delivery: store.DeliveryRef{UID: uid, Namespace: ns, Name: "mine"}, Campaign: ns + "/evening",
			Shard: "s0", Number: 1, Due: clk.Now(), To: to, Context: &store.CallContext{RecipientName: "Anna Schmidt", Address: "Torstrasse 101"}}
	}
	done, _, _ := s.CreateAttempt(ctx, newAttempt("u1", num))
	c, err := s.Claim(ctx, done.ID, "w", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkDialed(ctx, done.ID, c.Fence, "CA1", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RecordResponse(ctx, done.ID, store.Answer{Choice: v1.ChoiceInstructions, Speech: "back door"}); err != nil {
		t.Fatal(err)
	}
	rec := recorded(t, s, sim, done.ID)
	if _, _, err := s.ApplyCallStatus(ctx, store.CallRef{AttemptID: done.ID}, store.StatusUpdate{Status: "completed", Seq: 3}); err != nil {
		t.Fatal(err)
	}
	queued, _, _ := s.CreateAttempt(ctx, newAttempt("u2", num))
	untouched, _, _ := s.CreateAttempt(ctx, newAttempt("u3", other))
	if _, err := s.AddOptOut(ctx, ns, num, done.ID, "menu"); err != nil {
		t.Fatal(err)
	}

	e := &retention.Eraser{Store: s, Accounts: &retention.KubeAccounts{Reader: kube, BaseURL: sim.URL()}, Kube: kube, Pause: time.Millisecond}
	if _, err := e.Erase(ctx, "015112345678"); err == nil || !strings.Contains(err.Error(), "E.164") {
		t.Fatalf("Erase of a malformed number: %v", err)
	}
	rep, err := e.Erase(ctx, num)
	if err != nil {
		t.Fatalf("Erase: %v", err)
	}
	want := retention.EraseReport{Deliveries: []string{ns + "/mine"}, Attempts: 2, Cancelled: 1, Anonymized: 2, Recordings: 1}
	if strings.Join(rep.Deliveries, ",") != strings.Join(want.Deliveries, ",") || rep.Attempts != 2 || rep.Cancelled != 1 ||
		rep.Anonymized != 2 || rep.Recordings != 1 || rep.RecordingsFailed != 0 {
		t.Fatalf("report = %+v, want %+v", rep, want)
	}
	var out bytes.Buffer
	rep.Print(&out, num, true)
	if strings.Contains(out.String(), num) || !strings.Contains(out.String(), "+491********78") || !strings.Contains(out.String(), "recordings deleted at Twilio: 1") {
		t.Errorf("printed report:\n%s", out.String())
	}

	// Kubernetes: the Delivery holding the number is gone, the other stays.
	if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mine"}, &v1.Delivery{}); !apierrors.IsNotFound(err) {
		t.Errorf("Delivery of the erased number: %v, want deleted", err)
	}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: "theirs"}, &v1.Delivery{}); err != nil {
		t.Errorf("another number's Delivery: %v", err)
	}
	// Twilio: the recording and its transcription are gone.
	if r := simRecording(t, sim, rec.Sid); !r.Deleted || !r.TranscriptionDeleted {
		t.Errorf("recording at Twilio after erasure: %+v", r)
	}
	// The call log: nothing left that names the person; the planned call will not be made.
	if left, err := s.AttemptsTo(ctx, num); err != nil || len(left) != 0 {
		t.Fatalf("attempts still calling the number: %v, %v", left, err)
	}
	for _, id := range []string{done.ID, queued.ID} {
		a, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a.To != "" || a.Context != nil || (a.Response != nil && (a.Response.Speech != "" || a.Response.RecordingURL != "")) || a.ErasedAt == nil {
			t.Errorf("attempt %s after erasure: %+v", id, a)
		}
	}
	if a, _ := s.Get(ctx, queued.ID); a.State != store.StateCancelled {
		t.Errorf("planned attempt is %s after erasure, want cancelled", a.State)
	}
	if _, err := s.Claim(ctx, queued.ID, "w", time.Minute); !errors.Is(err, store.ErrNotClaimable) {
		t.Errorf("claim of the erased planned attempt: %v, want not claimable", err)
	}
	if a, _ := s.Get(ctx, untouched.ID); a.To != other || a.State != store.StateQueued {
		t.Errorf("another number's attempt changed: %+v", a)
	}
	// The opt-out keeps working without the number.
	if out, err := s.IsOptedOut(ctx, ns, num); err != nil || !out {
		t.Errorf("opt-out after erasure: %v, %v; want still opted out", out, err)
	}
	// Erasing again finds nothing more to do.
	if rep, err := e.Erase(ctx, num); err != nil || rep.Attempts != 0 || len(rep.Deliveries) != 0 {
		t.Errorf("second erasure: %+v, %v", rep, err)
	}
}

func TestEraseReportsRecordingsItCouldNotDelete(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, clk)
	sim, rc := startSim(t)
	const num = "+4915112345678"
	a := finished(t, s, "a", num, time.Hour)
	rec := recorded(t, s, sim, a.ID)
	sim.QueueFaults(twiliosim.EndpointDeleteRecording, twiliosim.FaultServerError, twiliosim.FaultServerError, twiliosim.FaultServerError)
	e := &retention.Eraser{Store: s, Accounts: oneAccount{rc}, Pause: time.Millisecond}
	rep, err := e.Erase(ctx, num)
	if err == nil || rep.RecordingsFailed != 1 || rep.Anonymized != 1 || strings.Join(rep.Deliveries, ",") != "shop/parcel-a" {
		t.Fatalf("erase while Twilio fails: %+v, %v; want the failure reported and the attempt anonymized", rep, err)
	}
	got, _ := s.Get(ctx, a.ID)
	if got.To != "" || strings.Join(got.PendingRecordingSIDs(), ",") != rec.Sid {
		t.Fatalf("attempt after a failed recording deletion: to %q, recordings %v; want anonymized, recording kept for a retry", got.To, got.PendingRecordingSIDs())
	}
	// The janitor finishes the job once Twilio answers.
	j := newJanitor(s, clk, oneAccount{rc})
	clk.Add(time.Hour)
	if res, err := j.Pass(ctx); err != nil || res.Recordings != 1 {
		t.Fatalf("janitor after the failed erasure: %+v, %v", res, err)
	}
	if !simRecording(t, sim, rec.Sid).Deleted {
		t.Fatal("recording still at Twilio")
	}
}
