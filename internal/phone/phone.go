// Package phone validates E.164 numbers and masks them for logs.
package phone

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// Validate reports whether s is a valid E.164 number (a plausible number of
// a known country, written as +<country code><number>).
func Validate(s string) error {
	if !strings.HasPrefix(s, "+") {
		return fmt.Errorf("phone number %s must start with '+' and the country code (E.164)", Mask(s))
	}
	n, err := phonenumbers.Parse(s, "")
	if err != nil {
		return fmt.Errorf("phone number %s is not E.164: %v", Mask(s), err)
	}
	if !phonenumbers.IsValidNumber(n) {
		return fmt.Errorf("phone number %s is not a valid number of its country", Mask(s))
	}
	if got := phonenumbers.Format(n, phonenumbers.E164); got != s {
		return fmt.Errorf("phone number %s is not in E.164 form (expected %s)", Mask(s), Mask(got))
	}
	return nil
}

// Mask hides all but the country-code-ish prefix and the last two digits of a
// number, so logs can tell numbers apart without revealing them:
// +14155550123 becomes +141******23. It counts characters, not bytes, so a
// number typed in another script's digits stays valid text.
func Mask(s string) string {
	r := []rune(s)
	if len(r) <= 5 {
		return strings.Repeat("*", len(r))
	}
	keep := 4
	if !strings.HasPrefix(s, "+") {
		keep = 3
	}
	return string(r[:keep]) + strings.Repeat("*", len(r)-keep-2) + string(r[len(r)-2:])
}

// numberRE finds phone numbers in free text (error texts quote them): eight
// or more characters of digits and separators, the digits of any script
// (the number parser reads fullwidth and Arabic-Indic digits too).
var numberRE = regexp.MustCompile(`\+?\p{Nd}[\p{Nd}\-. ()]{6,}\p{Nd}`)

// Scrub masks every phone number in s (see Mask), for logs and stored
// error texts.
func Scrub(s string) string {
	return numberRE.ReplaceAllStringFunc(s, Mask)
}
