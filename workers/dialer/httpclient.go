package dialer

import (
	"net/http"
	"time"

	"github.com/delauto/delauto/internal/twilioclient"
)

// HTTPClient is the *http.Client for the worker's twilio-go client: like
// twilioclient.HTTPClient (timeout, redirects returned, not followed;
// baseURL redirects every request to another server such as the simulator,
// empty means Twilio), but keeping up to conns idle connections to the API
// instead of net/http's default two, so a worker placing conns calls at once
// does not open a new TLS connection for most of them.
func HTTPClient(baseURL string, timeout time.Duration, conns int) (*http.Client, error) {
	if timeout <= 0 {
		timeout = twilioclient.DefaultTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(conns, 2)
	tr.MaxIdleConns = max(conns, 100)
	var rt http.RoundTripper = tr
	if baseURL != "" {
		var err error
		if rt, err = twilioclient.RedirectTransport(baseURL, tr); err != nil {
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
