package callbacks

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/language"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

// twimlVerb is a TwiML element as the tests read it: its name, attributes,
// text and children.
type twimlVerb struct {
	XMLName xml.Name
	Attrs   []xml.Attr  `xml:",any,attr"`
	Text    string      `xml:",chardata"`
	Verbs   []twimlVerb `xml:",any"`
}

func (v twimlVerb) attr(name string) string {
	for _, a := range v.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// walk calls f for v and every element inside it.
func (v twimlVerb) walk(f func(twimlVerb)) {
	f(v)
	for _, c := range v.Verbs {
		c.walk(f)
	}
}

func parseTwiML(t *testing.T, doc string) twimlVerb {
	t.Helper()
	var r twimlVerb
	if err := xml.Unmarshal([]byte(doc), &r); err != nil {
		t.Fatalf("TwiML does not parse: %v\n%s", err, doc)
	}
	return r
}

// twimlSeen is every TwiML document the simulator fetched for a call, in order.
func twimlSeen(h *harness, sid string) []string {
	var docs []string
	for _, kind := range []string{"voice", "action"} {
		for _, cb := range h.sim.CallbacksFor(sid, kind) {
			if cb.TwiML != "" {
				docs = append(docs, cb.TwiML)
			}
		}
	}
	return docs
}

// checkSpokenIn checks that every <Say> of the documents speaks w's
// language and every <Gather> recognizes it with w's hints, and returns the
// spoken texts.
func checkSpokenIn(t *testing.T, w *language.Wording, docs []string) []string {
	t.Helper()
	var said []string
	for _, d := range docs {
		parseTwiML(t, d).walk(func(v twimlVerb) {
			switch v.XMLName.Local {
			case "Say":
				said = append(said, v.Text)
				if v.attr("language") != w.SayLanguage {
					t.Errorf("%s: <Say language=%q>%s, want %s", w.Code, v.attr("language"), v.Text, w.SayLanguage)
				}
			case "Gather":
				if v.attr("language") != w.SpeechLanguage || v.attr("hints") != w.HintList() {
					t.Errorf("%s: <Gather language=%q hints=%q>, want %s and %q", w.Code, v.attr("language"), v.attr("hints"), w.SpeechLanguage, w.HintList())
				}
			}
		})
	}
	return said
}

// setLanguage makes the harness's campaign default to lang and its
// recipients speak it; the greeting is the language's built-in one.
func setLanguage(h *harness, lang string, edit func(*v1.CallScript)) {
	c := *h.camp
	c.Spec.Script.Greeting = ""
	c.Spec.Script.DefaultLanguage = lang
	if edit != nil {
		edit(&c.Spec.Script)
	}
	h.camp = &c
	h.src.p.Store(&c)
	h.lang = lang
}

// answers are what a recipient says for each option, as a speech
// recognizer writes it down, in each built-in language.
var answers = map[string]map[language.Option]string{
	"en": {language.Confirm: "Yes, that works.", language.Reschedule: "Can we do another day?", language.Instructions: "I have instructions for the driver.",
		language.Stop: "Please don't call me again.", language.Repeat: "Sorry, could you repeat that?"},
	"de": {language.Confirm: "Ja, das passt.", language.Reschedule: "Können wir das verschieben?", language.Instructions: "Ich habe einen Hinweis für den Fahrer.",
		language.Stop: "Bitte rufen Sie mich nicht mehr an.", language.Repeat: "Wie bitte? Noch einmal, bitte."},
	"fr": {language.Confirm: "Oui, d'accord.", language.Reschedule: "Plutôt un autre jour, s'il vous plaît.", language.Instructions: "J'ai des consignes pour le livreur.",
		language.Stop: "Arrêtez de m'appeler.", language.Repeat: "Pardon, vous pouvez répéter ?"},
	"es": {language.Confirm: "Sí, claro.", language.Reschedule: "Mejor otro día, por favor.", language.Instructions: "Tengo instrucciones para el repartidor.",
		language.Stop: "No me llamen más, por favor.", language.Repeat: "¿Puede repetir?"},
	"it": {language.Confirm: "Sì, va bene.", language.Reschedule: "Meglio un altro giorno.", language.Instructions: "Ho delle istruzioni per il corriere.",
		language.Stop: "Non chiamatemi più.", language.Repeat: "Può ripetere, per favore?"},
	"nl": {language.Confirm: "Ja, dat klopt.", language.Reschedule: "Kan het een andere dag?", language.Instructions: "Ik heb instructies voor de bezorger.",
		language.Stop: "Niet meer bellen alstublieft.", language.Repeat: "Kunt u dat herhalen?"},
	"pl": {language.Confirm: "Tak, pasuje.", language.Reschedule: "Proszę przełożyć na inny dzień.", language.Instructions: "Mam instrukcje dla kuriera.",
		language.Stop: "Proszę nie dzwonić więcej.", language.Repeat: "Proszę powtórzyć."},
}

// one is the number one spoken as a word, which confirms.
var one = map[string]string{"en": "one", "de": "eins", "fr": "un", "es": "uno", "it": "uno", "nl": "één", "pl": "jeden"}

// TestEveryLanguageAnswersEveryOption calls a recipient in every built-in
// language through the simulator and answers every option by speech and by
// key: the answer is understood, recorded, and every word of the call is
// spoken and recognized in the recipient's language.
func TestEveryLanguageAnswersEveryOption(t *testing.T) {
	if len(answers) != len(language.Codes()) {
		t.Fatalf("answers cover %d languages, the catalogue has %v", len(answers), language.Codes())
	}
	h := newHarness(t, harnessOpts{noWebhook: true})
	for _, code := range language.Codes() {
		setLanguage(h, code, nil)
		w := language.Builtin(code)
		day := w.Dates.Date(time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC))
		for _, opt := range language.Options {
			for _, by := range []string{"speech", "dtmf"} {
				in := twiliosim.Input{Speech: answers[code][opt], Confidence: 0.9}
				if by == "dtmf" {
					in = twiliosim.Input{Digits: language.Keys[opt]}
				}
				sc := twiliosim.Scenario{Name: code + "-" + string(opt) + "-" + by, Inputs: []twiliosim.Input{in}}
				want, end := choices[opt], map[language.Option]string{language.Confirm: w.Confirmed, language.Reschedule: w.Reschedule,
					language.Stop: w.OptedOut, language.Instructions: w.InstructionsSaved}[opt]
				switch opt {
				case language.Repeat: // the menu again, then "one" as a word
					sc.Inputs = append(sc.Inputs, twiliosim.Input{Speech: one[code], Confidence: 0.9})
					want, end = v1.ChoiceConfirm, w.Confirmed
				case language.Instructions:
					sc.Message, sc.RecordFinishKey = "Bitte beim Nachbarn abgeben", "#"
				}
				sms := len(h.messagesTo(agentPhone))
				a, c := h.call(sc, dialOpts{prime: by == "dtmf", timeLimit: 600})
				if a.Response == nil || a.Response.Choice != want {
					t.Errorf("%s: response %+v, want %s", sc.Name, a.Response, want)
					continue
				}
				docs := twimlSeen(h, c.Sid)
				said := checkSpokenIn(t, w, docs)
				joined := strings.Join(said, "\n")
				if !strings.Contains(joined, "Anna Schmidt") || !strings.Contains(joined, day) || !strings.Contains(joined, w.Menu) {
					t.Errorf("%s: greeting with %q or menu not said:\n%s", sc.Name, day, joined)
				}
				if len(said) == 0 || said[len(said)-1] != end {
					t.Errorf("%s: the call ended with %q, want %q", sc.Name, said[len(said)-1:], end)
				}
				if opt == language.Repeat && strings.Count(joined, "Anna Schmidt") != 2 {
					t.Errorf("%s: the greeting was not repeated:\n%s", sc.Name, joined)
				}
				if opt == language.Instructions && by == "dtmf" {
					checkSMSIn(t, h, w, sms)
				}
			}
		}
	}
	if n := testCounter(t, h, "delauto_callbacks_menu_answers_total", "option", "repeat"); n != float64(2*len(answers)) {
		t.Errorf("%v repeat answers counted, want %d", n, 2*len(answers))
	}
}

// checkSMSIn waits for the agent's SMS after the first `before` and checks
// it is in w's language.
func checkSMSIn(t *testing.T, h *harness, w *language.Wording, before int) {
	t.Helper()
	head := strings.TrimPrefix(w.SMS.Instructions[:strings.Index(w.SMS.Instructions, "{name}")], "{company}")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := h.messagesTo(agentPhone); len(m) > before {
			if !strings.Contains(m[len(m)-1].Body, head) {
				t.Errorf("%s: agent SMS %q lacks %q", w.Code, m[len(m)-1].Body, head)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%s: the agent got no SMS", w.Code)
}

// TestLanguageFallbackAndOverrides: a recipient language without wording
// is spoken to in the campaign's default language; a campaign's entry for
// a language adds words and changes wording.
func TestLanguageFallbackAndOverrides(t *testing.T) {
	h := newHarness(t, harnessOpts{noWebhook: true})
	setLanguage(h, "de", func(s *v1.CallScript) {
		s.Languages = []v1.ScriptLanguage{{Code: "de", Greeting: "Moin {{.Name}}, {{.Company}} hier.", Words: &v1.MenuWords{Confirm: []string{"geht klar"}}}}
	})
	h.lang = "ja"
	a, c := h.call(twiliosim.Scenario{Name: "ja-geht-klar", Inputs: []twiliosim.Input{{Speech: "Geht klar!"}}}, dialOpts{timeLimit: 600})
	if a.Response == nil || a.Response.Choice != v1.ChoiceConfirm {
		t.Fatalf("response %+v, want Confirm by a campaign's word", a.Response)
	}
	said := checkSpokenIn(t, language.Builtin("de"), twimlSeen(h, c.Sid))
	if len(said) == 0 || said[0] != "Moin Anna Schmidt, Example Logistics hier." {
		t.Errorf("said %q, want the campaign's German greeting", said)
	}
}

// TestGermanSampleDelivery runs the sample German Delivery (config/samples)
// through the simulator with the sample campaign's script: the call is in
// German, "Ja, das passt" confirms it, and the TwiML the simulator saw is
// recorded in testdata/german-sample.twiml (UPDATE_GOLDEN=1 rewrites it).
func TestGermanSampleDelivery(t *testing.T) {
	var camp v1.CallCampaign
	readSample(t, "delauto_v1alpha1_callcampaign.yaml", &camp)
	var dlv v1.Delivery
	readSample(t, "delauto_v1alpha1_delivery.yaml", &dlv)
	if dlv.Name != "parcel-4711" || dlv.Spec.Recipient.Language != "de" || camp.Spec.Script.DefaultLanguage != "de" {
		t.Fatalf("sample delivery %s in %q, campaign default language %q: want the German parcel-4711 of a German campaign",
			dlv.Name, dlv.Spec.Recipient.Language, camp.Spec.Script.DefaultLanguage)
	}

	h := newHarness(t, harnessOpts{noWebhook: true})
	c := *h.camp
	c.Spec.Script = camp.Spec.Script
	c.Spec.Schedule.DefaultTimeZone = camp.Spec.Schedule.DefaultTimeZone
	h.camp = &c
	h.src.p.Store(&c)

	r := dlv.Spec.Recipient
	to := newTo()
	h.sim.SetScenario(to, twiliosim.Scenario{Name: "sample-de", Inputs: []twiliosim.Input{{Speech: "Ja, das passt.", Confidence: 0.92}}})
	at, _, err := h.st.CreateAttempt(context.Background(), store.NewAttempt{
		Delivery: store.DeliveryRef{UID: testservices.UUID(), Namespace: dlv.Namespace, Name: dlv.Name},
		Campaign: "shop/evening", Shard: "s0", Number: 1, Due: time.Now(), To: to,
		Context: &store.CallContext{RecipientName: r.Name, Language: r.Language, TimeZone: string(r.TimeZone),
			WindowStart: dlv.Spec.Window.Start.UTC(), WindowEnd: dlv.Spec.Window.End.UTC(),
			Address: dlv.Spec.Address.Line1 + ", " + dlv.Spec.Address.PostalCode + " " + dlv.Spec.Address.City,
			Region:  dlv.Spec.Region, AgentName: dlv.Spec.Agent.Name, AgentPhone: agentPhone},
	})
	if err != nil {
		t.Fatal(err)
	}
	at, sid := h.dial(at, dialOpts{prime: true, timeLimit: 600})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call, err := h.sim.WaitCall(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	a := h.waitAttempt(at.ID, "terminal", func(a *store.Attempt) bool { return a.State.Terminal() })
	if a.Response == nil || a.Response.Choice != v1.ChoiceConfirm || a.Response.Speech != "Ja, das passt." {
		t.Fatalf("response %+v, want Confirm by \"Ja, das passt.\"", a.Response)
	}
	docs := twimlSeen(h, call.Sid)
	w := language.Resolve(&c.Spec.Script, "de").Wording
	said := checkSpokenIn(t, w, docs)
	if len(said) < 2 || !strings.Contains(said[0], "Anna Schmidt") || !strings.Contains(said[0], "Mittwoch, 2. Dezember") ||
		!strings.Contains(said[0], "10:00") || said[len(said)-1] != w.Confirmed {
		t.Errorf("said %q", said)
	}

	// The record, with sorted attributes (the TwiML library writes them in
	// map order) and the attempt id replaced, so it is stable.
	got := fmt.Sprintf("<!-- voice: the call is answered -->\n%s<!-- action: SpeechResult=%q -->\n%s",
		canonical(parseTwiML(t, docs[0]), ""), "Ja, das passt.", canonical(parseTwiML(t, docs[len(docs)-1]), ""))
	got = regexp.MustCompile(`attempt=[^&"]+`).ReplaceAllString(got, "attempt=ATTEMPT")
	golden := filepath.Join("testdata", "german-sample.twiml")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (UPDATE_GOLDEN=1 writes it)", err)
	}
	if string(want) != got {
		t.Errorf("the TwiML the simulator saw differs from %s:\n%s", golden, got)
	}
	t.Logf("TwiML seen by the simulator:\n%s", got)
}

// canonical writes v as indented XML with its attributes sorted by name.
func canonical(v twimlVerb, indent string) string {
	var b strings.Builder
	attrs := append([]xml.Attr(nil), v.Attrs...)
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].Name.Local < attrs[j].Name.Local })
	b.WriteString(indent + "<" + v.XMLName.Local)
	for _, a := range attrs {
		b.WriteString(" " + a.Name.Local + "=\"")
		_ = xml.EscapeText(&b, []byte(a.Value))
		b.WriteString("\"")
	}
	text := strings.TrimSpace(v.Text)
	switch {
	case len(v.Verbs) > 0:
		b.WriteString(">\n")
		for _, c := range v.Verbs {
			b.WriteString(canonical(c, indent+"  "))
		}
		b.WriteString(indent + "</" + v.XMLName.Local + ">\n")
	case text != "":
		b.WriteString(">")
		_ = xml.EscapeText(&b, []byte(text))
		b.WriteString("</" + v.XMLName.Local + ">\n")
	default:
		b.WriteString("/>\n")
	}
	return b.String()
}

// readSample reads the first object of a file in config/samples.
func readSample(t *testing.T, name string, into any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "samples", name))
	if err != nil {
		t.Fatal(err)
	}
	doc, _, _ := strings.Cut(string(b), "\n---")
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}
