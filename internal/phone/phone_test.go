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
