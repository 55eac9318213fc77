package callurls

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/delauto/delauto/internal/phone/phonetest"
)

const id = "0fd165f5-7d9b-40fb-a16d-5c7d76d5e74d-2"

func TestRoundTrip(t *testing.T) {
	for _, base := range []string{"https://calls.example.com", "https://calls.example.com/", "https://x.example.com/delauto"} {
		s, err := For(base, StatusPath, id, 7)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := Parse(u.Query())
		if err != nil || ref.AttemptID != id || ref.Fence != 7 {
			t.Errorf("%s: Parse = %+v, %v", s, ref, err)
		}
		if want := StatusPath; u.Path != want && u.Path != "/delauto"+want {
			t.Errorf("path = %s", u.Path)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	for _, q := range []url.Values{
		{},
		{"attempt": {id}},
		{"attempt": {id}, "fence": {"0"}},
		{"attempt": {id}, "fence": {"x"}},
		{"attempt": {"../../etc"}, "fence": {"1"}},
		{"attempt": {id + "0000"}, "fence": {"1"}},
		{"attempt": {"0FD165F5-7D9B-40FB-A16D-5C7D76D5E74D-1"}, "fence": {"1"}},
	} {
		if _, err := Parse(q); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%v) = %v, want ErrMalformed", q, err)
		}
	}
	if _, err := For("ftp://x", VoicePath, id, 1); err == nil {
		t.Error("an ftp base URL was accepted")
	}
}

// TestForRefusesBasesWithQueryOrFragment: the paths were appended after a
// base's query or fragment, so Twilio would have called the base's path
// (found by FuzzRoundTrip). A base is one check for the dialer, the
// callbacks server and For.
func TestForRefusesBasesWithQueryOrFragment(t *testing.T) {
	for _, base := range []string{"http://10.0.0.1:8080/a?b=c", "https://x.example.com/d#frag", "https://x.example.com?", "https://x.example.com#"} {
		if s, err := For(base, VoicePath, id, 1); err == nil {
			t.Errorf("For(%q) = %q, want an error", base, s)
		}
		if _, err := CheckBase(base); err == nil || !strings.Contains(err.Error(), "without query or fragment") {
			t.Errorf("CheckBase(%q) = %v", base, err)
		}
	}
}

// TestParseMasksNumbers: a refused reference is quoted in the error, which
// is logged, so a phone number in it is masked, also where quoting joins an
// escape's digits to the digits after it (found by FuzzParse).
func TestParseMasksNumbers(t *testing.T) {
	_, err := Parse(url.Values{"attempt": {"+14155550123"}, "fence": {"1"}})
	if err == nil || strings.Contains(err.Error(), "14155550123") || !strings.Contains(err.Error(), "+141******23") {
		t.Errorf("Parse = %v, want the number masked", err)
	}
	_, err = Parse(url.Values{"attempt": {"\x015550123"}, "fence": {"1"}})
	if err == nil || phonetest.ShowsNumber(err.Error()) {
		t.Errorf("Parse = %v, want the escaped digits masked", err)
	}
}
