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

// For builds the URL of path for an attempt and fence under base (the
// campaign's public callback URL, with or without a trailing slash).
func For(base, path, attemptID string, fence int64) (string, error) {
	u, err := url.Parse(strings.TrimRight(base, "/") + path)
	if err != nil {
		return "", fmt.Errorf("callback URL %q: %w", base, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("callback URL %q must be an absolute http(s) URL", base)
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

// Parse reads the attempt id and fence from a callback URL's query.
func Parse(q url.Values) (Ref, error) {
	id := q.Get(ParamAttempt)
	if !ValidAttemptID(id) {
		return Ref{}, fmt.Errorf("%w: attempt id %q", ErrMalformed, truncate(id))
	}
	f, err := strconv.ParseInt(q.Get(ParamFence), 10, 64)
	if err != nil || f < 1 {
		return Ref{}, fmt.Errorf("%w: fence %q", ErrMalformed, truncate(q.Get(ParamFence)))
	}
	return Ref{AttemptID: id, Fence: f}, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
