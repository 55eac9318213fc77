package relay

import (
	"strings"
	"testing"
	"unicode/utf8"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/language"
)

// The fuzz targets' seed corpora run in every `go test`; `make fuzz`
// fuzzes them for longer.

// FuzzSMSText writes the agent's SMS from any transcription (the
// recipient's words, as Twilio transcribed them), address, recipient name,
// time zone and recording URL, in every built-in language. The SMS is at
// most MaxSMSLen characters of valid text, and with a name, company and
// delivery of ordinary length it always keeps the delivery's reference: the
// transcription, then the address, give way.
func FuzzSMSText(f *testing.F) {
	a := attempt(v1.ChoiceInstructions, "")
	for i, tr := range []string{
		"Leave it  with\nthe neighbour.", "", strings.Repeat("Please ring twice and wait, I am upstairs. ", 20),
		strings.Repeat("Bitte beim Nachbarn abgeben, Hausnummer zwölf — danke! ", 10), "{ref} {name} {body}", "\xff\xfe",
		strings.Repeat("👍🏽", 400), "http://not-a-link", "   \t\n  ",
	} {
		f.Add(tr, a.Context.Address, a.Context.RecipientName, a.Context.TimeZone, a.Response.RecordingURL, uint8(i))
	}
	f.Add("x", strings.Repeat("Very Long Street Name ", 30), "Anna", "Mars/Olympus", "", uint8(1))
	f.Add("", "", "", "", "", uint8(2))
	codes := language.Codes()
	choices := []v1.ResponseChoice{v1.ChoiceInstructions, v1.ChoiceReschedule, v1.ChoiceConfirm, v1.ChoiceOptOut, ""}
	f.Fuzz(func(t *testing.T, transcription, address, name, tz, recording string, pick uint8) {
		a := attempt(choices[int(pick)%len(choices)], transcription)
		a.Context.Address, a.Context.RecipientName, a.Context.TimeZone = address, name, tz
		a.Response.RecordingURL = recording
		w := language.Builtin(codes[int(pick/8)%len(codes)])
		msg := SMSText(a, "Example Logistics", "UTC", w)
		if n := utf8.RuneCountInString(msg); n > MaxSMSLen {
			t.Fatalf("%d characters: %q", n, msg)
		}
		valid := utf8.ValidString(transcription) && utf8.ValidString(address) && utf8.ValidString(name) && utf8.ValidString(recording)
		if valid && !utf8.ValidString(msg) {
			t.Fatalf("not valid UTF-8: %q", msg)
		}
		if valid && utf8.RuneCountInString(name) <= 40 && utf8.RuneCountInString(recording) <= 100 &&
			!strings.Contains(msg, "Ref shop/parcel-42") {
			t.Fatalf("the delivery's reference is lost: %q", msg)
		}
	})
}
