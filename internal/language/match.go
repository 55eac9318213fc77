package language

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// MaxSpeech bounds the transcript Match reads, in bytes: Twilio's speech
// results are short, and a long one is cut, not read in full.
const MaxSpeech = 2000

// fold maps letters that do not decompose into a base letter and a mark.
var fold = strings.NewReplacer("ß", "ss", "ł", "l", "Ł", "l", "ø", "o", "Ø", "o", "æ", "ae", "Æ", "ae", "œ", "oe", "Œ", "oe")

// Clauses splits a transcript into clauses (at punctuation) of normalized
// words: lower case, without accents, apostrophes splitting words. "Ja, das
// passt!" is [[ja] [das passt]]. Digits stay words of their own: "press 1"
// is [press 1], "12b" is [12 b].
func Clauses(s string) [][]string {
	if len(s) > MaxSpeech {
		s = s[:MaxSpeech]
	}
	s = norm.NFD.String(fold.Replace(s))
	var clauses [][]string
	var words []string
	var w strings.Builder
	digits := 0 // bytes of w, when w is a number
	endWord := func() {
		if w.Len() > 0 {
			words = append(words, w.String())
			w.Reset()
		}
		digits = 0
	}
	endClause := func() {
		endWord()
		if len(words) > 0 {
			clauses = append(clauses, words)
			words = nil
		}
	}
	for _, r := range s {
		switch {
		case unicode.Is(unicode.Mn, r): // an accent, after NFD
		case unicode.IsDigit(r):
			if digits != w.Len() {
				endWord() // a number after letters: a word of its own
			}
			w.WriteRune(r)
			digits = w.Len()
		case unicode.IsLetter(r):
			if digits > 0 {
				endWord()
			}
			w.WriteRune(unicode.ToLower(r))
		case unicode.IsSpace(r), r == '\'', r == '’', r == '-', r == '`':
			endWord()
		default: // punctuation ends a clause
			endClause()
		}
	}
	endClause()
	return clauses
}

// normalize is a phrase as Clauses reads it, its words joined by spaces.
func normalize(phrase string) []string {
	var out []string
	for _, c := range Clauses(phrase) {
		out = append(out, c...)
	}
	return out
}

// Key returns the option of a key pressed on the keypad.
func Key(digits string) (Option, bool) {
	if digits == "" {
		return "", false
	}
	for o, k := range Keys {
		if digits[:1] == k {
			return o, true
		}
	}
	return "", false
}

// matcher is a Wording's words, normalized once.
type matcher struct {
	words     map[Option][][]string
	negations map[string]bool
}

func newMatcher(w *Wording) *matcher {
	m := &matcher{words: map[Option][][]string{}, negations: map[string]bool{}}
	for o, ws := range w.Words {
		for _, p := range ws {
			if n := normalize(p); len(n) > 0 {
				m.words[o] = append(m.words[o], n)
			}
		}
	}
	for _, n := range w.Negations {
		for _, x := range normalize(n) {
			m.negations[x] = true
		}
	}
	return m
}

// Match reads a spoken answer as an option of w's menu. It copes with case,
// accents and punctuation, a key's digit or its number spoken as a word
// ("eins", "one"), and an option named inside a sentence ("ja, das passt").
// When an answer names several options, the one of most consequence wins
// (stop, reschedule, instructions, repeat, confirm), so "yes, but stop
// calling" stops. A confirming word near a negation ("passt nicht") does
// not confirm.
func (w *Wording) Match(speech string) (Option, bool) {
	m := w.m
	if m == nil {
		m = newMatcher(w)
	}
	clauses := Clauses(speech)
	for _, o := range Options {
		for _, c := range clauses {
			if m.in(o, c) {
				return o, true
			}
		}
	}
	return "", false
}

// in reports whether clause c names option o: a digit of its key, or one of
// its phrases (a confirming phrase not next to a negation).
func (m *matcher) in(o Option, c []string) bool {
	for _, word := range c {
		if word == Keys[o] {
			return true
		}
	}
	for _, p := range m.words[o] {
		for i := 0; i+len(p) <= len(c); i++ {
			if !equal(c[i:i+len(p)], p) {
				continue
			}
			if o == Confirm && m.negated(c, i, i+len(p)) {
				continue
			}
			return true
		}
	}
	return false
}

// negated reports a negation up to two words before the words c[i:j]
// ("non va bene") or right after them ("passt nicht").
func (m *matcher) negated(c []string, i, j int) bool {
	for k := max(i-2, 0); k < i; k++ {
		if m.negations[c[k]] {
			return true
		}
	}
	return j < len(c) && m.negations[c[j]]
}

func equal(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
