package phone

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := []string{"+14155550123", "+4930123456", "+819012345678", "+442071838750"}
	for _, s := range good {
		if err := Validate(s); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", s, err)
		}
	}
	bad := []string{"", "14155550123", "+1 415 555 0123", "+1415555012", "+0123456789", "+999999999999", "tel:+14155550123"}
	for _, s := range bad {
		err := Validate(s)
		if err == nil {
			t.Errorf("Validate(%q) = nil, want an error", s)
			continue
		}
		if len(s) > 8 && strings.Contains(err.Error(), s) {
			t.Errorf("Validate(%q) error reveals the number: %v", s, err)
		}
	}
}

func TestMask(t *testing.T) {
	cases := map[string]string{
		"+14155550123": "+141******23",
		"+4930123456":  "+493*****56",
		"12345":        "*****",
		"":             "",
	}
	for in, want := range cases {
		if got := Mask(in); got != want {
			t.Errorf("Mask(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMaskAndScrubOtherScriptsDigits: the number parser reads fullwidth and
// Arabic-Indic digits, so such a number must be masked like any other, and
// masked as characters: cutting it by bytes left invalid UTF-8 in logs, and
// the scrubber let it through whole (found by FuzzMask and FuzzScrub).
func TestMaskAndScrubOtherScriptsDigits(t *testing.T) {
	for in, want := range map[string]string{
		"+１４１５５５５０１２３": "+１４１******２３",
		"+١٤١٥٥٥٥٠١٢٣": "+١٤١******٢٣",
	} {
		if got := Mask(in); got != want {
			t.Errorf("Mask(%q) = %q, want %q", in, got, want)
		}
		if got := Scrub("the number " + in + " is not valid"); got != "the number "+want+" is not valid" {
			t.Errorf("Scrub left %q", got)
		}
		if err := Validate(in); err == nil || strings.Contains(err.Error(), in) || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%q) = %v, want an error quoting %q", in, err, want)
		}
	}
}
