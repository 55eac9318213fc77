package relay

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/workers/store"
)

func secretK() ([]byte, error) { return []byte("k"), nil }

// webhookAfter processes a reschedule answer once and returns the webhook
// notification as the call log keeps it.
func webhookAfter(t *testing.T, f *fixture) store.Notification {
	t.Helper()
	ctx := context.Background()
	a := f.answered(t, v1.ChoiceReschedule)
	if _, err := f.s.Process(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	b, err := f.st.Get(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	return b.Notify.Webhook
}

// TestWebhookRefusesPrivateAddresses checks that, without AllowPrivate, the
// relay does not connect to a loopback receiver (or any private or
// link-local one) and does not send over plain http.
func TestWebhookRefusesPrivateAddresses(t *testing.T) {
	f := newFixture(t, secretK, func(c *Config) { c.AllowPrivate = false })
	n := webhookAfter(t, f)
	if f.hooks.Load() != 0 || n.State == store.NotifySent || !strings.Contains(n.LastError, "https://") {
		t.Errorf("http to 127.0.0.1: %d requests, notification %+v; want none sent and the https error", f.hooks.Load(), n)
	}
	// https to a loopback address: refused when dialling.
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { f.hooks.Add(1) }))
	defer tls.Close()
	f.camp.Spec.Relay.Webhook.URL = tls.URL
	n = webhookAfter(t, f)
	if f.hooks.Load() != 0 || n.State == store.NotifySent || !strings.Contains(n.LastError, "private, loopback or link-local") {
		t.Errorf("https to 127.0.0.1: %d requests, notification %+v; want it refused at dial time", f.hooks.Load(), n)
	}
	for addr, ok := range map[string]bool{
		"127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false, "169.254.169.254": false,
		"100.64.0.1": false, "0.0.0.0": false, "::1": false, "fe80::1": false, "fd00::1": false, "::ffff:127.0.0.1": false,
		"224.0.0.1": false, "8.8.8.8": true, "2001:4860:4860::8888": true, "93.184.216.34": true,
	} {
		if got := publicAddr(netip.MustParseAddr(addr)); got != ok {
			t.Errorf("publicAddr(%s) = %v, want %v", addr, got, ok)
		}
		err := dialControl("tcp", netip.AddrPortFrom(netip.MustParseAddr(addr), 443).String(), nil)
		if (err == nil) != ok || err != nil && !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("dialControl(%s) = %v", addr, err)
		}
	}
}

// TestWebhookRedirectIsNotFollowed checks that a 3xx is a failed send and
// the redirect's target is never contacted.
func TestWebhookRedirectIsNotFollowed(t *testing.T) {
	var reached atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Add(1) }))
	defer target.Close()
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	f := newFixture(t, secretK)
	f.camp.Spec.Relay.Webhook.URL = redirect.URL
	n := webhookAfter(t, f)
	if reached.Load() != 0 || n.State == store.NotifySent || !strings.Contains(n.LastError, "307") {
		t.Errorf("redirect: target reached %d times, notification %+v; want not followed, 307 reported", reached.Load(), n)
	}
}

// TestWebhookErrorQuotesNoBody checks that a failing dispatch system's
// answer (which may echo the payload) is not kept or logged: the status
// code only.
func TestWebhookErrorQuotesNoBody(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad payload for +14155550123: leave it with the neighbour", http.StatusBadRequest)
	}))
	defer echo.Close()
	f := newFixture(t, secretK)
	f.camp.Spec.Relay.Webhook.URL = echo.URL
	n := webhookAfter(t, f)
	if !strings.Contains(n.LastError, "400") || strings.Contains(n.LastError, "neighbour") || strings.Contains(n.LastError, "4155550123") {
		t.Errorf("last error %q, want the status code only", n.LastError)
	}
}
