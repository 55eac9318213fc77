package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
)

func TestParseConfig(t *testing.T) {
	cfg, err := parseConfig([]string{"-cps", "5", "-mix", "press1=1,busy=1", "-rules", "01=no-answer", "-fault-429", "0.1",
		"-cb-out-of-order", "0.5", "-time-scale", "0.1", "-numbers", "+14155550100, +14155550101", "-callback-retries", "0",
		"-webhook-route", "https://calls.example.com=http://127.0.0.1:8080", "-webhook-insecure-tls"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.opts
	if o.CPS != 5 || len(o.Mix) != 2 || o.Suffixes["01"].Name != "no-answer" || o.Faults.RateLimit != 0.1 ||
		o.Faults.OutOfOrderCallback != 0.5 || o.TimeScale != 0.1 || len(o.Numbers) != 2 || o.CallbackRetries != -1 ||
		o.WebhookRoutes["https://calls.example.com"] != "http://127.0.0.1:8080" || o.HTTPClient == nil {
		t.Errorf("options %+v", o)
	}
	for _, bad := range [][]string{
		{"-mix", "press7=1"}, {"-rules", "01"}, {"-fault-429", "1.5"}, {"-time-scale", "0"}, {"-log-level", "loud"}, {"extra"}, {"-webhook-route", "nope"},
	} {
		if _, err := parseConfig(bad, io.Discard); err == nil {
			t.Errorf("parseConfig(%q) accepted", bad)
		}
	}
	var help bytes.Buffer
	if _, err := parseConfig([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "press3") || !strings.Contains(help.String(), "-fault-hang-after-create") {
		t.Errorf("-h: %v\n%s", err, help.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunServesAndPrintsStats(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-listen", addr, "-instant", "-mix", "busy=1"}, &out, &logs) }()

	base := "http://" + addr
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(base + "/sim/stats")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up: %v\n%s", err, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	hc, _ := twilioclient.HTTPClient(base, 2*time.Second)
	rc, err := twilioclient.New(twiliosim.DefaultAccountSID, twiliosim.DefaultAuthToken, hc)
	if err != nil {
		t.Fatal(err)
	}
	p := &api.CreateCallParams{}
	p.SetTo("+14155550123")
	p.SetFrom("+14155550100")
	p.SetTwiml("<Response><Say>Hello</Say></Response>")
	if _, err := rc.Api.CreateCall(p); err != nil {
		t.Fatalf("CreateCall against the command: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	var st twiliosim.Stats
	if err := json.Unmarshal([]byte(out.String()), &st); err != nil {
		t.Fatalf("stats output %q: %v", out.String(), err)
	}
	if st.CallsCreated != 1 || st.CallsByStatus["busy"] != 1 {
		t.Errorf("stats %+v", st)
	}
	if strings.Contains(logs.String(), "4155550123") {
		t.Errorf("logs reveal a phone number:\n%s", logs.String())
	}
}
