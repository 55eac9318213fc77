package callurls

import (
	"errors"
	"net/url"
	"testing"
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
