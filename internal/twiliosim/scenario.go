package twiliosim

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Result is how a dialled number ends up, before any TwiML runs.
type Result string

// The results a callee can produce. The zero value answers.
const (
	ResultAnswer   Result = ""          // the call is answered and its TwiML runs
	ResultBusy     Result = "busy"      // the line is busy: final status busy
	ResultNoAnswer Result = "no-answer" // rings until the Timeout of the create request: final status no-answer
	ResultFailed   Result = "failed"    // the carrier fails the call: final status failed
)

// AnsweredBy values as Twilio's answering-machine detection reports them.
// A Scenario may also say AnsweredMachine, which becomes machine_start or
// machine_end_beep depending on the MachineDetection mode of the call.
const (
	AnsweredHuman          = "human"
	AnsweredMachine        = "machine"
	AnsweredMachineStart   = "machine_start"
	AnsweredMachineEndBeep = "machine_end_beep"
	AnsweredFax            = "fax"
	AnsweredUnknown        = "unknown"
)

// Input is what the callee does at one <Gather>.
type Input struct {
	// Digits pressed (DTMF). Only heard by a Gather whose input includes dtmf.
	Digits string
	// Speech said. Only heard by a Gather whose input includes speech.
	Speech string
	// Confidence of the speech recognition (0..1); 0.9 when zero.
	Confidence float64
	// Delay after the prompts end before the callee answers (simulated time);
	// 1 s when zero.
	Delay time.Duration
	// Hangup: the callee hangs up at this Gather instead of answering, Delay
	// after it starts (so usually during its prompt).
	Hangup bool
}

// Scenario is the behaviour of the person (or machine) at a destination
// number. Durations are in simulated time and scaled by Options.TimeScale.
type Scenario struct {
	// Name identifies the scenario in records and logs.
	Name string
	// Result says whether the call is answered, busy, unanswered or failed.
	Result Result
	// RingTime is how long the phone rings before it is answered (or before
	// busy/failed is reported). Default 3 s. An answer that would come after
	// the Timeout of the create request becomes no-answer.
	RingTime time.Duration
	// AnsweredBy is who picks up: human (default), machine, machine_start,
	// machine_end_beep, fax or unknown. It is only reported when the call asked
	// for MachineDetection.
	AnsweredBy string
	// AMDTime is how long answering-machine detection takes. Default 2.5 s for
	// a human and 4 s for a machine; with DetectMessageEnd a machine takes
	// GreetingLength instead.
	AMDTime time.Duration
	// GreetingLength is how long a machine's greeting lasts (default 10 s).
	GreetingLength time.Duration
	// Inputs are the callee's answers to the call's <Gather>s, in order. A
	// Gather beyond the list hears silence.
	Inputs []Input
	// Message is what the callee says into a <Record>; empty means silence
	// (Twilio then skips the Record's action and goes on with the next verb).
	Message string
	// MessageLength is how long the message lasts (default: 0.4 s per word).
	MessageLength time.Duration
	// RecordFinishKey is pressed after the message (for example "#"); empty
	// means the callee goes quiet and the Record ends on its timeout.
	RecordFinishKey string
	// HangupAfterRecord makes the callee hang up right after the message: the
	// Record's action gets Digits=hangup and the call ends.
	HangupAfterRecord bool
	// HangupAfter hangs the call up this long after the answer, wherever it is
	// (0: the callee never hangs up first).
	HangupAfter time.Duration
	// TranscriptionFails makes the transcription callback report failed.
	TranscriptionFails bool
	// CreateError refuses the create request itself with this Twilio error
	// code (for example 21214, "To number cannot be reached"); 0 accepts.
	CreateError int
}

// The named scenarios. DelAuto's menu is 1 confirm, 2 reschedule,
// 3 leave instructions (recorded and transcribed), 9 stop calling; speech
// answers "yes" and "reschedule" are accepted too.
var presets = map[string]Scenario{
	"press1":         {Inputs: []Input{{Digits: "1"}}},
	"press2":         {Inputs: []Input{{Digits: "2"}}},
	"press3":         {Inputs: []Input{{Digits: "3"}}, Message: "Please leave the parcel with the neighbour at number twelve", RecordFinishKey: "#"},
	"press9":         {Inputs: []Input{{Digits: "9"}}},
	"say-yes":        {Inputs: []Input{{Speech: "yes", Confidence: 0.93}}},
	"say-reschedule": {Inputs: []Input{{Speech: "reschedule", Confidence: 0.88}}},
	"busy":           {Result: ResultBusy, RingTime: time.Second},
	"no-answer":      {Result: ResultNoAnswer},
	"failed":         {Result: ResultFailed, RingTime: 500 * time.Millisecond},
	"voicemail":      {AnsweredBy: AnsweredMachine},
	"fax":            {AnsweredBy: AnsweredFax},
	"amd-unknown":    {AnsweredBy: AnsweredUnknown, Inputs: []Input{{Digits: "1"}}},
	"hangup":         {Inputs: []Input{{Hangup: true}}},
	"silence":        {},
	"unreachable":    {CreateError: 21214},
}

// ScenarioNames lists the named scenarios, sorted.
func ScenarioNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Named returns the named scenario (see ScenarioNames).
func Named(name string) (Scenario, error) {
	sc, ok := presets[name]
	if !ok {
		return Scenario{}, fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(ScenarioNames(), ", "))
	}
	sc.Name = name
	sc.Inputs = append([]Input(nil), sc.Inputs...)
	return sc, nil
}

// MustNamed is Named for names known to exist; it panics otherwise.
func MustNamed(name string) Scenario {
	sc, err := Named(name)
	if err != nil {
		panic(err)
	}
	return sc
}

// Weighted is one entry of a scenario mix.
type Weighted struct {
	Scenario Scenario
	Weight   float64
}

// DefaultMix is a plausible mix of callee behaviours for load runs.
func DefaultMix() []Weighted {
	w := []struct {
		name   string
		weight float64
	}{
		{"press1", 40}, {"press2", 8}, {"press3", 5}, {"press9", 2},
		{"say-yes", 10}, {"say-reschedule", 3},
		{"busy", 5}, {"no-answer", 8}, {"failed", 2},
		{"voicemail", 9}, {"hangup", 4}, {"silence", 4},
	}
	out := make([]Weighted, len(w))
	for i, e := range w {
		out[i] = Weighted{Scenario: MustNamed(e.name), Weight: e.weight}
	}
	return out
}

// ParseMix reads a mix written as "name=weight,name=weight" (for example
// "press1=60,busy=10,no-answer=30"). Weights are non-negative numbers and at
// least one must be positive.
func ParseMix(s string) ([]Weighted, error) {
	var out []Weighted
	total := 0.0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, ws, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("mix entry %q: want name=weight", part)
		}
		sc, err := Named(strings.TrimSpace(name))
		if err != nil {
			return nil, fmt.Errorf("mix entry %q: %w", part, err)
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(ws), 64)
		if err != nil || w < 0 {
			return nil, fmt.Errorf("mix entry %q: weight must be a non-negative number", part)
		}
		total += w
		out = append(out, Weighted{Scenario: sc, Weight: w})
	}
	if total <= 0 {
		return nil, fmt.Errorf("mix %q has no positive weight", s)
	}
	return out, nil
}

// ParseSuffixRules reads rules written as "suffix=scenario,..." (for example
// "01=press1,02=busy"): a destination number ending in the suffix gets the
// scenario; the longest matching suffix wins.
func ParseSuffixRules(s string) (map[string]Scenario, error) {
	out := map[string]Scenario{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		suffix, name, ok := strings.Cut(part, "=")
		suffix = strings.TrimSpace(suffix)
		if !ok || suffix == "" {
			return nil, fmt.Errorf("suffix rule %q: want suffix=scenario", part)
		}
		sc, err := Named(strings.TrimSpace(name))
		if err != nil {
			return nil, fmt.Errorf("suffix rule %q: %w", part, err)
		}
		out[suffix] = sc
	}
	return out, nil
}

// pickWeighted chooses from mix deterministically from (seed, to, n): the
// n-th call to a number gets the same scenario in every run with the same
// seed, whatever order the calls arrive in.
func pickWeighted(mix []Weighted, seed int64, to string, n int) Scenario {
	total := 0.0
	for _, w := range mix {
		total += w.Weight
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%s|%d", seed, to, n)
	x := float64(h.Sum64()>>11) / float64(1<<53) * total
	for _, w := range mix {
		if x < w.Weight {
			return w.Scenario
		}
		x -= w.Weight
	}
	return mix[len(mix)-1].Scenario
}

// resolveAnsweredBy turns the scenario's AnsweredBy into what Twilio reports
// for the call's MachineDetection mode.
func resolveAnsweredBy(sc Scenario, mode string) string {
	switch sc.AnsweredBy {
	case "", AnsweredHuman:
		return AnsweredHuman
	case AnsweredMachine:
		if strings.EqualFold(mode, "DetectMessageEnd") {
			return AnsweredMachineEndBeep
		}
		return AnsweredMachineStart
	default:
		return sc.AnsweredBy
	}
}

func (sc Scenario) isMachine() bool {
	return strings.HasPrefix(sc.AnsweredBy, "machine")
}

func (sc Scenario) ringTime() time.Duration {
	if sc.RingTime > 0 {
		return sc.RingTime
	}
	return 3 * time.Second
}

func (sc Scenario) greetingLength() time.Duration {
	if sc.GreetingLength > 0 {
		return sc.GreetingLength
	}
	return 10 * time.Second
}

func (sc Scenario) amdTime(mode string) time.Duration {
	if sc.AMDTime > 0 {
		return sc.AMDTime
	}
	if sc.isMachine() {
		if strings.EqualFold(mode, "DetectMessageEnd") {
			return sc.greetingLength()
		}
		return 4 * time.Second
	}
	return 2500 * time.Millisecond
}

func (sc Scenario) messageLength() time.Duration {
	if sc.MessageLength > 0 {
		return sc.MessageLength
	}
	return speechDuration(sc.Message)
}

// speechDuration estimates how long it takes to say text (150 words a
// minute, at least half a second).
func speechDuration(text string) time.Duration {
	words := len(strings.Fields(text))
	d := time.Duration(words) * 400 * time.Millisecond
	if d < 500*time.Millisecond {
		d = 500 * time.Millisecond
	}
	return d
}
