// Package phonetest holds what tests of several packages check about phone
// numbers in text: that an error or a log line shows no whole number.
package phonetest

import "unicode"

// LongestDigitRun is the longest run of consecutive decimal digits, of any
// script, in s.
func LongestDigitRun(s string) int {
	longest, run := 0, 0
	for _, r := range s {
		if unicode.IsDigit(r) {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return longest
}

// ShowsNumber reports whether s could show a whole phone number: eight or
// more digits in a row, which phone.Scrub never leaves and phone.Mask never
// shows.
func ShowsNumber(s string) bool { return LongestDigitRun(s) >= 8 }
