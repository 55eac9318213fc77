package twilioclient_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/delauto/delauto/internal/twilioclient"
)

const (
	sid   = "AC0123456789abcdef0123456789abcdef"
	token = "secrettoken42"
)

type seen struct {
	Host, Path, RawQuery, User, Pass, Body string
}

// fakeTwilio records what reaches it and answers like Twilio's call list
// (with a second page, to check next_page_uri is followed through the
// redirect).
func fakeTwilio(t *testing.T) (*httptest.Server, func() []seen) {
	var mu sync.Mutex
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		_ = r.ParseForm()
		mu.Lock()
		got = append(got, seen{Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery, User: u, Pass: p, Body: r.PostForm.Encode()})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost:
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(map[string]any{"sid": "CA1", "status": "queued", "duration": nil})
		case r.URL.Query().Get("Page") == "1":
			_ = json.NewEncoder(w).Encode(map[string]any{"calls": []any{map[string]any{"sid": "CA2"}}, "next_page_uri": nil})
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{
				"calls":         []any{map[string]any{"sid": "CA1"}},
				"next_page_uri": "/2010-04-01/Accounts/" + sid + "/Calls.json?Page=1&PageSize=1",
			})
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return append([]seen(nil), got...)
	}
}

func TestRestClientReachesBaseURL(t *testing.T) {
	srv, got := fakeTwilio(t)
	hc, err := twilioclient.HTTPClient(srv.URL, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := twilioclient.New(sid, token, hc)
	if err != nil {
		t.Fatal(err)
	}
	p := &api.CreateCallParams{}
	p.SetTo("+14155550123")
	p.SetFrom("+14155550100")
	p.SetUrl("https://hooks.example.com/voice?attempt=a1")
	c, err := rc.Api.CreateCall(p)
	if err != nil {
		t.Fatalf("CreateCall through the redirect: %v", err)
	}
	if *c.Sid != "CA1" {
		t.Errorf("sid %s", *c.Sid)
	}
	calls, err := rc.Api.ListCall(nil)
	if err != nil {
		t.Fatalf("ListCall: %v", err)
	}
	if len(calls) != 2 {
		t.Errorf("ListCall followed %d calls, want 2 over two pages", len(calls))
	}
	reqs := got()
	if len(reqs) != 3 {
		t.Fatalf("%d requests reached the server, want 3", len(reqs))
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, r := range reqs {
		if r.Host != host || r.User != sid || r.Pass != token {
			t.Errorf("request %+v: want host %s and the account's Basic credentials", r, host)
		}
	}
	if reqs[0].Path != "/2010-04-01/Accounts/"+sid+"/Calls.json" || !strings.Contains(reqs[0].Body, "attempt%3Da1") {
		t.Errorf("create request %+v", reqs[0])
	}
}

func TestRedirectTransportKeepsPathPrefixAndRequest(t *testing.T) {
	srv, got := fakeTwilio(t)
	rt, err := twilioclient.RedirectTransport(srv.URL+"/twilio/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://api.twilio.com/2010-04-01/Accounts/"+sid+"/Calls.json?To=%2B1415", nil)
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := got()[0]
	if r.Path != "/twilio/2010-04-01/Accounts/"+sid+"/Calls.json" || r.RawQuery != "To=%2B1415" {
		t.Errorf("redirected to %s?%s", r.Path, r.RawQuery)
	}
	if req.URL.Host != "api.twilio.com" {
		t.Errorf("the caller's request was modified: %s", req.URL)
	}
}

func TestBadInput(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "http://h/?q=1", "::"} {
		if _, err := twilioclient.RedirectTransport(u, nil); err == nil {
			t.Errorf("RedirectTransport(%q) accepted", u)
		}
	}
	if _, err := twilioclient.HTTPClient("not a url", time.Second); err == nil {
		t.Errorf("HTTPClient accepted a bad base URL")
	}
	for _, c := range []struct{ sid, token string }{
		{"", token}, {"AC123", token}, {"XX0123456789abcdef0123456789abcdef", token}, {sid, ""}, {sid, "to-ken"},
	} {
		if _, err := twilioclient.New(c.sid, c.token, nil); err == nil {
			t.Errorf("New(%q, %q) accepted", c.sid, c.token)
		} else if c.token != "" && strings.Contains(err.Error(), c.token) {
			t.Errorf("error reveals the token: %v", err)
		}
	}
	rc, err := twilioclient.New(sid, token, nil)
	if err != nil || rc == nil || rc.Api == nil {
		t.Errorf("New with the default HTTP client: %v", err)
	}
}
