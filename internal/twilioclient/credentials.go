package twilioclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/twilio/twilio-go"

	"github.com/delauto/delauto/internal/periodic"
)

// The files of a credentials folder: the keys of a campaign's Twilio Secret
// as the operator mounts them.
const (
	AccountSIDFile = "account-sid"
	AuthTokenFile  = "auth-token"
)

// The environment variables with an account's SID and auth token, for a
// process run by hand (a worker, `delauto erase`) instead of from a
// mounted Secret.
const (
	EnvAccountSID = "TWILIO_ACCOUNT_SID"
	EnvAuthToken  = "TWILIO_AUTH_TOKEN"
)

// DefaultOverlap is how long a replaced auth token still validates webhook
// signatures: requests Twilio signed just before a rotation arrive after it.
const DefaultOverlap = 10 * time.Minute

// Credentials are a Twilio account's SID and auth token. Read from a folder
// (a mounted Secret, which the kubelet updates in place), they are re-read
// by Reload, so a rotated auth token takes effect without a restart: REST
// requests use the new token at once (NewRotating), and webhook signatures
// made with the old one are still accepted for the overlap (Tokens).
type Credentials struct {
	dir     string
	overlap time.Duration
	now     func() time.Time

	mu        sync.RWMutex
	sid       string
	token     string
	prev      string
	prevUntil time.Time
}

// StaticCredentials are credentials that never change.
func StaticCredentials(accountSID, authToken string) (*Credentials, error) {
	if err := ValidateCredentials(accountSID, authToken); err != nil {
		return nil, err
	}
	return &Credentials{sid: accountSID, token: authToken, now: time.Now}, nil
}

// LoadCredentials reads AccountSIDFile and AuthTokenFile from dir. overlap
// is how long a replaced token still validates signatures (DefaultOverlap
// when zero).
func LoadCredentials(dir string, overlap time.Duration) (*Credentials, error) {
	if overlap <= 0 {
		overlap = DefaultOverlap
	}
	c := &Credentials{dir: dir, overlap: overlap, now: time.Now}
	sid, token, err := c.read()
	if err != nil {
		return nil, err
	}
	c.sid, c.token = sid, token
	return c, nil
}

// read reads and checks the folder's files.
func (c *Credentials) read() (sid, token string, err error) {
	sid, err1 := ReadSecretFile(filepath.Join(c.dir, AccountSIDFile))
	token, err2 := ReadSecretFile(filepath.Join(c.dir, AuthTokenFile))
	var err3 error
	switch {
	case err1 == nil && err2 == nil:
		err3 = ValidateCredentials(sid, token)
	case err1 == nil && !accountSIDPattern.MatchString(sid):
		err3 = ValidateCredentials(sid, "unread") // names the malformed SID as well
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", "", err
	}
	return sid, token, nil
}

// ReadSecretFile reads one credential file, trimmed of surrounding space.
func ReadSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// Current returns the account SID and the auth token in force.
func (c *Credentials) Current() (accountSID, authToken string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.sid, c.token
}

// Tokens returns the auth tokens whose webhook signatures are accepted: the
// current one, and the one it replaced until the overlap has passed.
func (c *Credentials) Tokens() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.prev != "" && c.now().Before(c.prevUntil) {
		return []string{c.token, c.prev}
	}
	return []string{c.token}
}

// Reload re-reads the folder. It reports whether the token changed. Files
// that cannot be read or hold malformed credentials (a Secret being
// rewritten) leave the credentials as they were and return the error. A
// different account SID is refused: the worker serves one account.
func (c *Credentials) Reload() (bool, error) {
	if c.dir == "" {
		return false, nil
	}
	sid, token, err := c.read()
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if sid != c.sid {
		return false, fmt.Errorf("the account SID in %s changed from %s to %s: restart the worker to serve another account", c.dir, c.sid, sid)
	}
	if token == c.token {
		return false, nil
	}
	c.prev, c.prevUntil, c.token = c.token, c.now().Add(c.overlap), token
	return true, nil
}

// Run reloads every interval until ctx ends; onChange and onError (either
// may be nil) hear of each change and failure.
func (c *Credentials) Run(ctx context.Context, interval time.Duration, onChange func(), onError func(error)) {
	periodic.Every(ctx, interval, func(context.Context) {
		changed, err := c.Reload()
		switch {
		case err != nil && onError != nil:
			onError(err)
		case changed && onChange != nil:
			onChange()
		}
	})
}

// NewRotating is New with credentials that may change: every request is
// authenticated with the token in force when it is sent.
func NewRotating(creds *Credentials, httpClient *http.Client) (*twilio.RestClient, error) {
	if httpClient == nil {
		var err error
		if httpClient, err = HTTPClient("", DefaultTimeout); err != nil {
			return nil, err
		}
	}
	hc := *httpClient
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = &authTransport{creds: creds, next: next}
	sid, token := creds.Current()
	return New(sid, token, &hc)
}

// authTransport sets the Basic credentials in force on each request.
type authTransport struct {
	creds *Credentials
	next  http.RoundTripper
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	sid, token := t.creds.Current()
	r.SetBasicAuth(sid, token)
	return t.next.RoundTrip(r)
}
