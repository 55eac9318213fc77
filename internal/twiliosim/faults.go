package twiliosim

import (
	"fmt"
	"strings"
	"time"
)

// FaultKind is one way a REST request can go wrong.
type FaultKind string

// The REST faults. The "AfterCreate" kinds only apply to create-call
// requests: the call IS created and goes ahead, but the client cannot know
// (the ambiguous case DelAuto must reconcile). The others refuse the request
// before anything happens.
const (
	FaultNone                   FaultKind = ""
	FaultRateLimit              FaultKind = "429"                       // 429, code 20429, JSON
	FaultServerError            FaultKind = "500"                       // 500, code 20500, JSON
	FaultUnavailable            FaultKind = "503"                       // 503, code 20503, JSON
	FaultBadGateway             FaultKind = "502"                       // 502 with an HTML page (a proxy's, not Twilio's JSON)
	FaultHangBeforeCreate       FaultKind = "hang-before-create"        // no call; the response never comes
	FaultHangAfterCreate        FaultKind = "hang-after-create"         // call created; the response never comes
	FaultResetAfterCreate       FaultKind = "reset-after-create"        // call created; the connection is closed without a response
	FaultServerErrorAfterCreate FaultKind = "server-error-after-create" // call created; 500 JSON returned anyway
)

// FaultKinds lists every fault kind.
func FaultKinds() []FaultKind {
	return []FaultKind{FaultRateLimit, FaultServerError, FaultUnavailable, FaultBadGateway,
		FaultHangBeforeCreate, FaultHangAfterCreate, FaultResetAfterCreate, FaultServerErrorAfterCreate}
}

// ParseFaultKind reads a fault kind by its name (see FaultKinds).
func ParseFaultKind(s string) (FaultKind, error) {
	for _, k := range FaultKinds() {
		if string(k) == s {
			return k, nil
		}
	}
	names := make([]string, 0, 8)
	for _, k := range FaultKinds() {
		names = append(names, string(k))
	}
	return "", fmt.Errorf("unknown fault %q (known: %s)", s, strings.Join(names, ", "))
}

func (k FaultKind) afterCreate() bool {
	return k == FaultHangAfterCreate || k == FaultResetAfterCreate || k == FaultServerErrorAfterCreate
}

// Endpoint names a REST operation, for aiming faults.
type Endpoint string

// The REST operations the simulator serves.
const (
	EndpointAny           Endpoint = "*"
	EndpointCreateCall    Endpoint = "create-call"
	EndpointListCalls     Endpoint = "list-calls"
	EndpointFetchCall     Endpoint = "fetch-call"
	EndpointUpdateCall    Endpoint = "update-call"
	EndpointDeleteCall    Endpoint = "delete-call"
	EndpointCreateMessage Endpoint = "create-message"
	EndpointListMessages  Endpoint = "list-messages"
	// EndpointDeleteRecording also covers listing a recording's transcriptions.
	EndpointDeleteRecording     Endpoint = "delete-recording"
	EndpointDeleteTranscription Endpoint = "delete-transcription"
)

// Faults are injected at random, with the simulator's seeded generator.
// Fractions are probabilities in [0,1] per request (or per callback).
type Faults struct {
	// AllEndpoints applies the REST fractions below to every REST request;
	// by default only create-call requests get them.
	AllEndpoints bool
	// RateLimit answers 429 (code 20429) to this fraction of requests.
	RateLimit float64
	// MaxConcurrent answers 429 (code 20429) to any request that arrives while
	// this many REST requests are already being served, as Twilio's
	// concurrency limit does (0: no limit). Combine with Latency to reach it.
	MaxConcurrent int
	// ServerError answers 500 JSON to this fraction of requests.
	ServerError float64
	// Unavailable answers 503 JSON to this fraction of requests.
	Unavailable float64
	// BadGateway answers a 502 HTML page to this fraction of requests.
	BadGateway float64
	// HangAfterCreate creates the call and then never answers, for this
	// fraction of create requests.
	HangAfterCreate float64
	// ResetAfterCreate creates the call and then drops the connection.
	ResetAfterCreate float64
	// ServerErrorAfterCreate creates the call and then answers 500.
	ServerErrorAfterCreate float64
	// Latency delays every REST response by this much (real time).
	Latency time.Duration

	// DuplicateCallback delivers this fraction of callbacks (status, AMD,
	// recording, transcription) twice.
	DuplicateCallback float64
	// OutOfOrderCallback holds back this fraction of a call's status callbacks
	// and delivers each after the next one.
	OutOfOrderCallback float64
	// LateCallback delays this fraction of callbacks by LateCallbackDelay.
	LateCallback float64
	// LateCallbackDelay is the extra delay of a late callback (simulated time;
	// default 30 s).
	LateCallbackDelay time.Duration
}

// Validate reports a fraction outside [0,1] or a negative setting.
func (f Faults) Validate() error {
	fr := map[string]float64{
		"RateLimit": f.RateLimit, "ServerError": f.ServerError, "Unavailable": f.Unavailable,
		"BadGateway": f.BadGateway, "HangAfterCreate": f.HangAfterCreate, "ResetAfterCreate": f.ResetAfterCreate,
		"ServerErrorAfterCreate": f.ServerErrorAfterCreate, "DuplicateCallback": f.DuplicateCallback,
		"OutOfOrderCallback": f.OutOfOrderCallback, "LateCallback": f.LateCallback,
	}
	for name, v := range fr {
		if v < 0 || v > 1 {
			return fmt.Errorf("fault %s = %v: must be a fraction between 0 and 1", name, v)
		}
	}
	if f.MaxConcurrent < 0 || f.Latency < 0 || f.LateCallbackDelay < 0 {
		return fmt.Errorf("fault MaxConcurrent, Latency and LateCallbackDelay must not be negative")
	}
	return nil
}

// rollRESTFault picks a random REST fault for a request to ep. Called with
// s.mu held.
func (s *Sim) rollRESTFault(ep Endpoint) FaultKind {
	f := s.faults
	if ep != EndpointCreateCall && !f.AllEndpoints {
		return FaultNone
	}
	order := []struct {
		p float64
		k FaultKind
	}{
		{f.RateLimit, FaultRateLimit}, {f.ServerError, FaultServerError},
		{f.Unavailable, FaultUnavailable}, {f.BadGateway, FaultBadGateway},
	}
	if ep == EndpointCreateCall {
		order = append(order, []struct {
			p float64
			k FaultKind
		}{
			{f.HangAfterCreate, FaultHangAfterCreate}, {f.ResetAfterCreate, FaultResetAfterCreate},
			{f.ServerErrorAfterCreate, FaultServerErrorAfterCreate},
		}...)
	}
	for _, o := range order {
		if o.p > 0 && s.rng.Float64() < o.p {
			return o.k
		}
	}
	return FaultNone
}

// nextFault returns the fault for a request to ep: a queued one first (see
// QueueFaults), else a random one. Called with s.mu held.
func (s *Sim) nextFault(ep Endpoint) FaultKind {
	for _, key := range []Endpoint{ep, EndpointAny} {
		q := s.queued[key]
		for i, k := range q {
			if k.afterCreate() && ep != EndpointCreateCall {
				continue
			}
			s.queued[key] = append(q[:i:i], q[i+1:]...)
			return k
		}
	}
	return s.rollRESTFault(ep)
}

// roll reports true with probability p (seeded).
func (s *Sim) roll(p float64) bool {
	if p <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < p
}
