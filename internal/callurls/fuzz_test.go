package callurls

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/delauto/delauto/internal/phone/phonetest"
)

// The fuzz targets' seed corpora run in every `go test`; `make fuzz`
// fuzzes them for longer.

// FuzzParse feeds any query string to the callback URL parser: it accepts
// only a well-formed attempt id and a positive fence, and its error is
// ErrMalformed, short, and quotes no phone number.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"attempt=" + id + "&fence=7",
		"attempt=" + id + "&fence=1&attempt=x",
		"fence=7",
		"attempt=" + id + "&fence=0",
		"attempt=" + id + "&fence=-3",
		"attempt=" + id + "&fence=99999999999999999999",
		"attempt=..%2F..%2Fetc&fence=1",
		"attempt=%2B14155550123&fence=%2B14155550123",
		"attempt=" + strings.Repeat("a", 200) + "&fence=1",
		"attempt=0FD165F5-7D9B-40FB-A16D-5C7D76D5E74D-1&fence=1",
		"attempt=" + id + "%0A&fence=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		ref, err := Parse(q)
		if err == nil {
			if !ValidAttemptID(ref.AttemptID) || ref.Fence < 1 || ref.AttemptID != q.Get(ParamAttempt) {
				t.Fatalf("Parse(%q) = %+v", query, ref)
			}
			return
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("Parse(%q) error is not ErrMalformed: %v", query, err)
		}
		if msg := err.Error(); len(msg) > 300 || phonetest.ShowsNumber(msg) {
			t.Fatalf("Parse(%q) error is long or quotes a number: %s", query, msg)
		}
	})
}

// FuzzRoundTrip builds a callback URL from any base URL, path, attempt id
// and fence: a URL that is built parses back to the same attempt and fence,
// under the base's host and path; a base that is not an absolute http(s)
// URL is refused.
func FuzzRoundTrip(f *testing.F) {
	f.Add("https://calls.example.com", uint8(0), id, int64(7))
	f.Add("https://calls.example.com/", uint8(5), id, int64(1))
	f.Add("https://x.example.com/delauto", uint8(2), id, int64(1<<62))
	f.Add("http://10.0.0.1:8080/a?b=c", uint8(3), id, int64(2))
	f.Add("https://x.example.com/d#frag", uint8(4), id, int64(3))
	f.Add("ftp://x", uint8(1), id, int64(1))
	f.Add("calls.example.com", uint8(6), id, int64(1))
	f.Add("https://x.example.com/%zz", uint8(0), id, int64(1))
	f.Add("https://x.example.com", uint8(0), "not-an-id", int64(0))
	paths := []string{VoicePath, GatherPath, RecordPath, RecordingPath, TranscriptionPath, StatusPath, AMDPath}
	f.Fuzz(func(t *testing.T, base string, pathIndex uint8, attempt string, fence int64) {
		path := paths[int(pathIndex)%len(paths)]
		s, err := For(base, path, attempt, fence)
		if err != nil {
			return
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("For(%q) built %q, which does not parse: %v", base, s, err)
		}
		if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
			t.Fatalf("For(%q) built %q, not an absolute http(s) URL", base, s)
		}
		if !strings.HasSuffix(u.Path, path) {
			t.Fatalf("For(%q, %q) built %q with path %q", base, path, s, u.Path)
		}
		if b, err := url.Parse(strings.TrimRight(base, "/")); err == nil && u.Host != b.Host {
			t.Fatalf("For(%q) built %q on another host %q", base, s, u.Host)
		}
		ref, err := Parse(u.Query())
		if !ValidAttemptID(attempt) || fence < 1 {
			if err == nil {
				t.Fatalf("For(%q, %q, %d) parsed back although the reference is malformed", base, attempt, fence)
			}
			return
		}
		if err != nil || ref.AttemptID != attempt || ref.Fence != fence {
			t.Fatalf("For(%q, %q, %d) = %q parses back to %+v, %v", base, attempt, fence, s, ref, err)
		}
	})
}
