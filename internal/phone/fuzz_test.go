package phone

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"

	"github.com/delauto/delauto/internal/phone/phonetest"
)

// The fuzz targets' seed corpora run in every `go test`; `make fuzz`
// fuzzes them for longer.

// phoneSeeds are numbers as the tests and the samples write them, and as
// people mistype them.
var phoneSeeds = []string{
	"+14155550123", "+4930123456", "+819012345678", "+442071838750", "+493012345670",
	"", "14155550123", "+1 415 555 0123", "+1415555012", "+0123456789", "+999999999999",
	"tel:+14155550123", "+1 (415) 555-0123", "+49 30 1234567", "00493012345670",
	"+１４１５５５５０１２３", "+١٤١٥٥٥٥٠١٢٣", "+", "++14155550123", "+14155550123;ext=12",
}

// FuzzValidate checks the number check on any string: an accepted number is
// the E.164 form of itself, and an error never quotes the number it refuses
// (no run of more than six of its digits) and is valid text when the input
// is.
func FuzzValidate(f *testing.F) {
	for _, s := range phoneSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Validate(s)
		if err == nil {
			n, perr := phonenumbers.Parse(s, "")
			if perr != nil || !phonenumbers.IsValidNumber(n) || phonenumbers.Format(n, phonenumbers.E164) != s {
				t.Fatalf("Validate(%q) accepted a number that is not E.164 (%v)", s, perr)
			}
			if phonetest.LongestDigitRun(s) != len(s)-1 {
				t.Fatalf("Validate(%q) accepted more than a plus and digits", s)
			}
			return
		}
		msg := err.Error()
		if phonetest.LongestDigitRun(msg) > 6 {
			t.Fatalf("Validate(%q) error quotes digits of the number: %s", s, msg)
		}
		if utf8.ValidString(s) && !utf8.ValidString(msg) {
			t.Fatalf("Validate(%q) error is not valid UTF-8: %q", s, msg)
		}
		if !strings.HasPrefix(msg, "phone number ") {
			t.Fatalf("Validate(%q) error does not say what it is about: %s", s, msg)
		}
	})
}

// FuzzMask checks the masking of numbers for logs: the output has as many
// characters as the input, shows no more than the first four and the last
// two of them, and is valid text when the input is.
func FuzzMask(f *testing.F) {
	for _, s := range phoneSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := Mask(s)
		if !utf8.ValidString(s) {
			return
		}
		if !utf8.ValidString(m) {
			t.Fatalf("Mask(%q) = %q is not valid UTF-8", s, m)
		}
		in, out := []rune(s), []rune(m)
		if len(in) != len(out) {
			t.Fatalf("Mask(%q) = %q has %d characters, want %d", s, m, len(out), len(in))
		}
		shown := 0
		for i := range out {
			if out[i] != '*' {
				shown++
				if out[i] != in[i] {
					t.Fatalf("Mask(%q) = %q changes a character it shows", s, m)
				}
			}
		}
		if shown > 6 || (len(in) <= 5 && shown > 0) {
			t.Fatalf("Mask(%q) = %q shows %d characters", s, m, shown)
		}
	})
}

// FuzzScrub checks the scrubbing of free text (error texts, transcripts)
// around a number: no run of eight or more digits survives, so no full
// number does, in any script's digits, and text without digits is left as
// it is.
func FuzzScrub(f *testing.F) {
	for _, s := range phoneSeeds {
		f.Add("The 'To' number ", s, " is not a valid phone number.")
	}
	f.Add("call me on ", "030 1234567", " after 5")
	f.Add("", "+1-415-555-0123", "")
	f.Add("ref 12", "+14155550123", "99 ok")
	f.Add("(", "0049) 30 12 34 56 70", ")")
	f.Fuzz(func(t *testing.T, before, number, after string) {
		text := before + number + after
		got := Scrub(text)
		if phonetest.ShowsNumber(got) {
			t.Fatalf("Scrub(%q) = %q leaves a number", text, got)
		}
		if utf8.ValidString(text) && !utf8.ValidString(got) {
			t.Fatalf("Scrub(%q) = %q is not valid UTF-8", text, got)
		}
		if phonetest.LongestDigitRun(text) == 0 && got != text {
			t.Fatalf("Scrub(%q) = %q changed text without digits", text, got)
		}
	})
}
