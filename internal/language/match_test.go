package language

import (
	"testing"
	"unicode/utf8"
)

// every built-in language answers every option by its words, by the key's
// digit and by the key's number spoken as a word.
func TestBuiltinWordsChooseTheirOption(t *testing.T) {
	for _, code := range Codes() {
		w := Builtin(code)
		for _, o := range Options {
			if len(w.Words[o]) == 0 {
				t.Errorf("%s: no words for %s", code, o)
			}
			for _, p := range w.Words[o] {
				if got, ok := w.Match(p); !ok || got != o {
					t.Errorf("%s: %q chose %q (%v), want %s", code, p, got, ok, o)
				}
			}
			if got, ok := w.Match(Keys[o]); !ok || got != o {
				t.Errorf("%s: digit %s chose %q, want %s", code, Keys[o], got, o)
			}
			if got, ok := Key(Keys[o]); !ok || got != o {
				t.Errorf("key %s chose %q, want %s", Keys[o], got, o)
			}
		}
	}
}

func TestMatchRealTranscripts(t *testing.T) {
	cases := []struct {
		lang, speech string
		want         Option // "" for no option
	}{
		{"de", "Ja, das passt!", Confirm},
		{"de", "JA", Confirm},
		{"de", "eins", Confirm},
		{"de", "Das passt nicht.", ""},
		{"de", "Nein.", ""},
		{"de", "Können Sie das verschieben?", Reschedule},
		{"de", "Ich bin morgen nicht zu Hause", Reschedule},
		{"de", "Bitte rufen Sie mich nicht mehr an", Stop},
		{"de", "Bitte nicht mehr anrufen.", Stop},
		{"de", "Ja, aber bitte nicht mehr anrufen", Stop},
		{"de", "Ich habe einen Hinweis für den Fahrer", Instructions},
		{"de", "Wie bitte?", Repeat},
		{"de", "Bestaetigen", ""}, // a spelling, not an accent: not folded
		{"de", "bestätigen", Confirm},
		{"de", "BESTATIGEN", Confirm}, // accents do not matter
		{"de", "zwo", Reschedule},
		{"en", "Yes, that's fine.", Confirm},
		{"en", "one", Confirm},
		{"en", "Press 1", Confirm},
		{"en", "please leave it at number 12", ""}, // "12" is no key
		{"en", "not sure", ""},
		{"en", "Yes, but don't call me again", Stop},
		{"en", "Could you say that again?", Repeat},
		{"en", "I won't be home, another day please", Reschedule},
		{"fr", "Oui, d'accord.", Confirm},
		{"fr", "D’ACCORD", Confirm},
		{"fr", "pas d'accord", ""},
		{"fr", "Je préfère un autre jour", Reschedule},
		{"fr", "Répétez s'il vous plaît", Repeat},
		{"fr", "zero", Repeat},
		{"es", "Sí, claro.", Confirm},
		{"es", "si", Confirm},
		{"es", "No me llamen más", Stop},
		{"es", "Mejor otro día", Reschedule},
		{"it", "Sì, va bene", Confirm},
		{"it", "non va bene", ""},
		{"it", "Non chiamate più, grazie", Stop},
		{"it", "Può ripetere?", Repeat},
		{"nl", "Ja, dat klopt", Confirm},
		{"nl", "één", Confirm},
		{"nl", "Kunt u het nog een keer zeggen?", Repeat},
		{"nl", "Ik ben niet thuis", Reschedule},
		{"pl", "Tak, pasuje", Confirm},
		{"pl", "nie pasuje", ""},
		{"pl", "Proszę przełożyć na inny dzień", Reschedule},
		{"pl", "PRZELOZYC", Reschedule},
		{"pl", "dziewięć", Stop},
		{"pl", "Proszę nie dzwonić", Stop},
	}
	for _, c := range cases {
		got, ok := Builtin(c.lang).Match(c.speech)
		if c.want == "" && ok || c.want != "" && got != c.want {
			t.Errorf("%s %q: chose %q (%v), want %q", c.lang, c.speech, got, ok, c.want)
		}
	}
}

func TestClauses(t *testing.T) {
	got := Clauses("Ja, das PASST! Straße 12b. ÉÈ")
	want := [][]string{{"ja"}, {"das", "passt"}, {"strasse", "12", "b"}, {"ee"}}
	if len(got) != len(want) {
		t.Fatalf("clauses %q, want %q", got, want)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("clauses %q, want %q", got, want)
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("clauses %q, want %q", got, want)
			}
		}
	}
}

func FuzzMatch(f *testing.F) {
	for _, s := range []string{"Ja, das passt!", "one", "pas d'accord", "9", "Przełożyć", "", "\xff", "ǅ̈́", "12 3"} {
		f.Add(s, uint8(0))
	}
	codes := Codes()
	words := map[string]*Wording{}
	for _, c := range codes {
		words[c] = Builtin(c)
	}
	f.Fuzz(func(t *testing.T, speech string, lang uint8) {
		w := words[codes[int(lang)%len(codes)]]
		o, ok := w.Match(speech)
		if ok != (o != "") {
			t.Fatalf("Match(%q) = %q, %v", speech, o, ok)
		}
		if ok {
			if _, known := Keys[o]; !known {
				t.Fatalf("Match(%q) = unknown option %q", speech, o)
			}
		}
		for _, c := range Clauses(speech) {
			if len(c) == 0 {
				t.Fatalf("empty clause from %q", speech)
			}
			for _, word := range c {
				if word == "" || !utf8.ValidString(word) {
					t.Fatalf("word %q from %q", word, speech)
				}
			}
		}
		// Matching is the same on the normalized words: case and
		// punctuation never change the answer.
		if utf8.ValidString(speech) && len(speech) < MaxSpeech/2 {
			o2, ok2 := w.Match(speech + ".")
			if o2 != o || ok2 != ok {
				t.Fatalf("Match(%q) = %q but Match(%q.) = %q", speech, o, speech, o2)
			}
		}
	})
}
