package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

func TestEraseRefusesBadArguments(t *testing.T) {
	t.Setenv("MONGO_URI", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--phone is required"},
		{[]string{"--phone", "017699887766", "--mongo-uri", "mongodb://m"}, "--phone: phone number"},
		{[]string{"--phone", "+4917699887766"}, "set --mongo-uri"},
		{[]string{"--phone", "+4917699887766", "--mongo-uri", "mongodb://m", "--twilio-account-sid", twiliosim.DefaultAccountSID}, "set both --twilio-account-sid and --twilio-auth-token"},
		{[]string{"--phone", "+4917699887766", "--mongo-uri", "mongodb://m", "extra"}, "unexpected arguments: extra"},
	} {
		err := erase(context.Background(), tc.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("erase %v = %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "17699887766") {
			t.Errorf("erase %v: the error shows the number: %v", tc.args, err)
		}
	}
}

// TestEraseCommand runs `delauto erase` against FerretDB and the Twilio
// simulator (the Kubernetes side is tested in internal/retention).
func TestEraseCommand(t *testing.T) {
	ctx := context.Background()
	db := "erase_cmd"
	st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Mongo.DropDatabase(db); _ = st.Close(ctx) })
	sim, err := twiliosim.New(twiliosim.Options{Instant: true, Numbers: []string{"+14155550100"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	const num = "+4915112345678"
	a, _, err := st.CreateAttempt(ctx, store.NewAttempt{Delivery: store.DeliveryRef{UID: "u1", Namespace: "shop", Name: "parcel-1"},
		Campaign: "shop/evening", Shard: "s0", Number: 1, Due: time.Now(), To: num, Context: &store.CallContext{RecipientName: "Anna"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := sim.AddRecording("CA00000000000000000000000000000001", 4, "back door")
	if _, _, err := st.RecordRecording(ctx, a.ID, store.Recording{SID: rec.Sid, URL: rec.URL}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = erase(ctx, []string{"--phone", num, "--mongo-uri", env.Mongo.URI, "--mongo-database", db, "--keep-deliveries",
		"--twilio-account-sid", sim.AccountSID(), "--twilio-auth-token", sim.AuthToken(), "--twilio-base-url", sim.URL()}, &out)
	if err != nil {
		t.Fatalf("erase: %v\n%s", err, out.String())
	}
	for _, want := range []string{"erased the data of +491********78", "shop/parcel-1", "1 found, 1 cancelled before calling, 1 anonymized", "recordings deleted at Twilio: 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), num) {
		t.Errorf("output shows the number:\n%s", out.String())
	}
	if got, _ := st.Get(ctx, a.ID); got.To != "" || got.State != store.StateCancelled || got.Context != nil {
		t.Errorf("attempt after erase: %+v", got)
	}
	if r := sim.Recordings(); len(r) != 1 || !r[0].Deleted {
		t.Errorf("recording after erase: %+v", r)
	}
}
