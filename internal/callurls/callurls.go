// Package callurls builds and parses the webhook URLs DelAuto gives Twilio
// for a call. The attempt id and the claim's fence ride in every URL, so a
// callback names its attempt without a lookup and a stale claim is detected.
package callurls

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/delauto/delauto/internal/phone"
)

// The webhook paths, under the campaign's callback base URL.
const (
	VoicePath         = "/twilio/voice"
	GatherPath        = "/twilio/gather"
	RecordPath        = "/twilio/record"
	RecordingPath     = "/twilio/recording"
	TranscriptionPath = "/twilio/transcription"
	StatusPath        = "/twilio/status"
	AMDPath           = "/twilio/amd"
)

// Query parameter names.
const (
	ParamAttempt = "attempt"
	ParamFence   = "fence"
)

// attemptRE bounds what an attempt id may look like: the delivery UID and the
// attempt number (store.AttemptID), nothing that could smuggle anything else.
var attemptRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-[1-9][0-9]{0,2}$`)

// ValidAttemptID reports whether id has the form of an attempt id.
func ValidAttemptID(id string) bool { return attemptRE.MatchString(id) }

// CheckBase checks a callback base URL (a campaign's twilio.callbackURL, a
// worker's --callback-url or --public-url) and parses it: an absolute
// http(s) URL with a host and no query or fragment, since the webhook paths
// and the attempt reference are appended to it.
func CheckBase(base string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || strings.ContainsAny(base, "?#") {
		return nil, fmt.Errorf("callback URL %q must be an absolute http(s) URL without query or fragment", base)
	}
	return u, nil
}

// For builds the URL of path for an attempt and fence under base (the
// campaign's public callback URL, with or without a trailing slash; see
// CheckBase).
func For(base, path, attemptID string, fence int64) (string, error) {
	if _, err := CheckBase(base); err != nil {
		return "", err
	}
	u, err := url.Parse(strings.TrimRight(base, "/") + path)
	if err != nil {
		return "", fmt.Errorf("callback URL %q: %w", base, err)
	}
	q := u.Query()
	q.Set(ParamAttempt, attemptID)
	q.Set(ParamFence, strconv.FormatInt(fence, 10))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Ref is what a callback URL says about its call.
type Ref struct {
	AttemptID string
	Fence     int64
}

// ErrMalformed is returned for a missing or malformed attempt id or fence.
var ErrMalformed = errors.New("malformed attempt reference")

// Parse reads the attempt id and fence from a callback URL's query. Its
// error quotes what it refuses shortened, with any phone number masked.
func Parse(q url.Values) (Ref, error) {
	id := q.Get(ParamAttempt)
	if !ValidAttemptID(id) {
		return Ref{}, fmt.Errorf("%w: attempt id %s", ErrMalformed, quote(id))
	}
	f, err := strconv.ParseInt(q.Get(ParamFence), 10, 64)
	if err != nil || f < 1 {
		return Ref{}, fmt.Errorf("%w: fence %s", ErrMalformed, quote(q.Get(ParamFence)))
	}
	return Ref{AttemptID: id, Fence: f}, nil
}

// quote quotes s shortened for an error text (a refused request is logged)
// and masks the phone numbers in it, after quoting: an escape such as \x01
// before digits would otherwise join them into a number.
func quote(s string) string {
	// Bytes that quoting escapes (\xe5) take four characters each: the
	// quoted text is held to maxQuoted, not the input.
	const maxQuoted = 80
	q, cut := strconv.Quote(s), false
	for len(q) > maxQuoted {
		s, cut = s[:len(s)*maxQuoted/len(q)], true
		q = strconv.Quote(s)
	}
	if cut {
		q += "..."
	}
	return phone.Scrub(q)
}
