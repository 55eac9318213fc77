// Package twilioclient builds twilio-go REST clients for DelAuto, and points
// them at another Twilio-compatible server (the project's simulator) when asked.
//
// twilio-go (v1.31.0) has no base-URL setting: every service hard-codes
// https://api.twilio.com (or a regional host derived from it). What it does
// take is an *http.Client, through client.Client.HTTPClient and
// twilio.NewRestClientWithParams(twilio.ClientParams{Client: ...}). This
// package uses that hook: RedirectTransport wraps an http.RoundTripper and
// rewrites the scheme and host of every request to a base URL, so the same
// worker code talks to Twilio in production and to the simulator in tests
// and demos.
//
// The knob is the base URL:
//
//	hc, err := twilioclient.HTTPClient("http://127.0.0.1:8089", 10*time.Second)
//	rc, err := twilioclient.New(accountSID, authToken, hc)
//
// An empty base URL means "talk to Twilio itself". Paging URLs that Twilio
// returns (next_page_uri) are resolved by twilio-go against
// https://api.twilio.com and then rewritten the same way, so paging works
// against the simulator too.
package twilioclient

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
)

// DefaultTimeout is the request timeout of HTTPClient when none is given; it
// is twilio-go's own default.
const DefaultTimeout = 10 * time.Second

var (
	accountSIDPattern = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	alphanumeric      = regexp.MustCompile(`^[a-zA-Z0-9]+$`)
)

// ValidateCredentials reports whether accountSID looks like a Twilio account
// SID (AC followed by 32 hex digits) and authToken is a non-empty
// alphanumeric string (twilio-go refuses anything else before sending).
// The error never contains the token.
func ValidateCredentials(accountSID, authToken string) error {
	if !accountSIDPattern.MatchString(accountSID) {
		return fmt.Errorf("twilio account SID %q is not AC followed by 32 hexadecimal digits", accountSID)
	}
	if authToken == "" {
		return errors.New("twilio auth token is empty")
	}
	if !alphanumeric.MatchString(authToken) {
		return errors.New("twilio auth token must contain only letters and digits")
	}
	return nil
}

// New returns a twilio-go REST client that authenticates as accountSID with
// authToken and sends its requests through httpClient. A nil httpClient gets
// the same defaults as twilio-go's own (10 s timeout, redirects not followed).
// To reach the simulator, pass a client made by HTTPClient with its URL.
func New(accountSID, authToken string, httpClient *http.Client) (*twilio.RestClient, error) {
	if err := ValidateCredentials(accountSID, authToken); err != nil {
		return nil, err
	}
	if httpClient == nil {
		var err error
		if httpClient, err = HTTPClient("", DefaultTimeout); err != nil {
			return nil, err
		}
	}
	c := &client.Client{
		Credentials: client.NewCredentials(accountSID, authToken),
		HTTPClient:  httpClient,
	}
	c.SetAccountSid(accountSID)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Client: c}), nil
}

// HTTPClient returns an *http.Client for New. With a non-empty baseURL every
// request is sent to that server instead of Twilio (see RedirectTransport).
// timeout bounds each request (DefaultTimeout when zero); redirects are
// returned to twilio-go rather than followed, as twilio-go's default does.
// It keeps net/http's default of two idle connections to the API; a caller
// placing many requests at once uses PooledHTTPClient.
func HTTPClient(baseURL string, timeout time.Duration) (*http.Client, error) {
	return PooledHTTPClient(baseURL, timeout, 0)
}

// PooledHTTPClient is HTTPClient keeping up to conns idle connections to
// the API (at least net/http's default two), so a worker placing conns calls
// at once does not open a new TLS connection for most of them.
func PooledHTTPClient(baseURL string, timeout time.Duration, conns int) (*http.Client, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(conns, http.DefaultMaxIdleConnsPerHost)
	tr.MaxIdleConns = max(conns, tr.MaxIdleConns)
	var rt http.RoundTripper = tr
	if baseURL != "" {
		var err error
		if rt, err = RedirectTransport(baseURL, tr); err != nil {
			return nil, err
		}
	}
	return &http.Client{
		Transport: rt,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// RedirectTransport returns a RoundTripper that sends every request to
// baseURL: the scheme and host are replaced by baseURL's, and baseURL's path
// (if any) is put in front of the request's path. The query, body and
// headers (including the Basic credentials) are kept. next does the actual
// round trip; nil means http.DefaultTransport.
func RedirectTransport(baseURL string, next http.RoundTripper) (http.RoundTripper, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("twilio base URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("twilio base URL %q must be an absolute http or https URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("twilio base URL %q must not have a query or fragment", baseURL)
	}
	if next == nil {
		next = http.DefaultTransport
	}
	return &redirectTransport{scheme: u.Scheme, host: u.Host, prefix: strings.TrimSuffix(u.Path, "/"), next: next}, nil
}

type redirectTransport struct {
	scheme, host, prefix string
	next                 http.RoundTripper
}

func (t *redirectTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// A RoundTripper must not modify the caller's request: work on a copy.
	r := req.Clone(req.Context())
	r.URL.Scheme = t.scheme
	r.URL.Host = t.host
	r.Host = t.host
	if t.prefix != "" {
		r.URL.Path = t.prefix + r.URL.Path
		if r.URL.RawPath != "" {
			r.URL.RawPath = t.prefix + r.URL.RawPath
		}
	}
	return t.next.RoundTrip(r)
}
