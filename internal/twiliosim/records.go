package twiliosim

import (
	"net/url"
	"sort"
	"time"
)

// CreateRecord is one create-call request as the simulator received it,
// whether or not it created a call.
type CreateRecord struct {
	Time time.Time
	// Form is the request body as sent.
	Form url.Values
	To   string
	From string
	// AttemptID is the attempt query parameter of Url (or StatusCallback, or
	// AsyncAmdStatusCallback), where DelAuto puts its attempt id.
	AttemptID string
	// CallSid is set when a call was created (including the AfterCreate
	// faults, where the client never learns it).
	CallSid string
	// HTTPStatus and Code are what the client was answered (Code is the
	// Twilio error code, 0 on success); HTTPStatus is 0 when no response was
	// sent (hang or reset).
	HTTPStatus int
	Code       int
	// Fault is the injected fault, if any.
	Fault FaultKind
}

// Created reports whether the request created a call.
func (r CreateRecord) Created() bool { return r.CallSid != "" }

// CallbackRecord is one delivery attempt of a webhook request the simulator
// made: status callbacks, voice (TwiML) requests, Gather and Record actions,
// AMD, recording and transcription callbacks.
type CallbackRecord struct {
	Time    time.Time
	Kind    string // status, voice, action, redirect, amd, recording, transcription
	CallSid string
	Method  string
	URL     string
	Params  url.Values
	// Event is the status callback event (initiated, ringing, answered,
	// completed) for Kind status.
	Event string
	// Sequence is the SequenceNumber parameter of status callbacks, -1
	// otherwise.
	Sequence int
	// Attempt counts delivery attempts of this callback, from 1; retries
	// after failures have higher numbers.
	Attempt int
	// Duplicate marks the extra delivery of an injected duplicate.
	Duplicate bool
	// Late marks a callback delayed by the LateCallback fault.
	Late bool
	// StatusCode is the HTTP status received, 0 on a connection error.
	StatusCode int
	// Err is the connection error, if any.
	Err string
	// TwiML is the document a voice, action or redirect request got back
	// (none with Options.Lean).
	TwiML string
}

// Message is an SMS sent through the Messages API.
type Message struct {
	Sid                 string
	To                  string
	From                string
	MessagingServiceSid string
	Body                string
	Created             time.Time
}

// Recording is a recording made by a <Record> verb.
type Recording struct {
	Sid      string
	CallSid  string
	URL      string
	Duration int // seconds
	// Transcription is the transcription's text, and TranscriptionSid its
	// SID; both empty when the recording was not transcribed.
	Transcription    string
	TranscriptionSid string
	Created          time.Time
	// Deleted is set once the recording was deleted through the REST API;
	// TranscriptionDeleted once its transcription was (or with it).
	Deleted              bool
	TranscriptionDeleted bool
}

// Notification is an error the simulator hit while running a call's TwiML,
// like an entry of Twilio's debugger (for example 11200 for a webhook that
// failed, 12100 for TwiML that does not parse).
type Notification struct {
	Time    time.Time
	CallSid string
	Code    int
	Message string
	URL     string
}

// RequestRecord is one REST request the simulator received.
type RequestRecord struct {
	Time       time.Time
	Method     string
	Path       string
	Endpoint   Endpoint
	HTTPStatus int
	Fault      FaultKind
}

// Call is a snapshot of a call.
type Call struct {
	Sid        string
	To         string
	From       string
	Status     string // queued, ringing, in-progress, completed, busy, no-answer, failed, canceled
	AnsweredBy string
	AttemptID  string
	Scenario   string
	Created    time.Time
	Started    time.Time // dequeued (initiated); zero while queued
	Answered   time.Time
	Ended      time.Time
	// Duration is the simulated talk time in seconds (what Twilio bills).
	Duration int
	// Inputs lists what the callee gave to each Gather ("digits:1",
	// "speech:yes", "silence", "hangup").
	Inputs []string
	// Form is the create request body.
	Form url.Values
}

// Creates returns every create-call request received, in arrival order.
func (s *Sim) Creates() []CreateRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CreateRecord(nil), s.creates...)
}

// Requests returns every REST request received, in arrival order (none
// with Options.Lean).
func (s *Sim) Requests() []RequestRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RequestRecord(nil), s.requests...)
}

// CallsForAttempt counts the calls created for a DelAuto attempt id: more
// than one is a second call for the same attempt.
func (s *Sim) CallsForAttempt(attemptID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.callOrder {
		if c.attempt == attemptID {
			n++
		}
	}
	return n
}

// CallsTo counts the calls created to a destination number.
func (s *Sim) CallsTo(number string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.callOrder {
		if c.to == number {
			n++
		}
	}
	return n
}

// DuplicateAttempts returns the attempt ids that got more than one call,
// with their call counts. Calls without an attempt id are not counted.
func (s *Sim) DuplicateAttempts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := map[string]int{}
	for _, c := range s.callOrder {
		if c.attempt != "" {
			counts[c.attempt]++
		}
	}
	for k, v := range counts {
		if v < 2 {
			delete(counts, k)
		}
	}
	return counts
}

// Calls returns a snapshot of every call, in creation order.
func (s *Sim) Calls() []Call {
	s.mu.Lock()
	cs := append([]*call(nil), s.callOrder...)
	s.mu.Unlock()
	out := make([]Call, len(cs))
	for i, c := range cs {
		out[i] = s.snapshot(c)
	}
	return out
}

// Call returns a snapshot of one call.
func (s *Sim) Call(sid string) (Call, bool) {
	s.mu.Lock()
	c := s.calls[sid]
	s.mu.Unlock()
	if c == nil {
		return Call{}, false
	}
	return s.snapshot(c), true
}

// Callbacks returns every webhook delivery attempt, in the order they were
// made.
func (s *Sim) Callbacks() []CallbackRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CallbackRecord(nil), s.callbacks...)
}

// CallbacksFor returns the webhook deliveries of one call, optionally only
// of one kind ("" for all).
func (s *Sim) CallbacksFor(callSid, kind string) []CallbackRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CallbackRecord
	for _, cb := range s.callbacks {
		if cb.CallSid == callSid && (kind == "" || cb.Kind == kind) {
			out = append(out, cb)
		}
	}
	return out
}

// Messages returns every SMS accepted, in order.
func (s *Sim) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Recordings returns every recording made, deleted ones included (see
// Recording.Deleted), oldest first.
func (s *Sim) Recordings() []Recording {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Recording, 0, len(s.recordings))
	for _, r := range s.recordings {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// AddRecording stores a recording of call callSid as if a <Record> verb had
// made it, transcribed when transcription is not empty, and returns it: for
// tests and demos of what happens to recordings afterwards.
func (s *Sim) AddRecording(callSid string, seconds int, transcription string) Recording {
	rec := &Recording{Sid: s.newSID("RE"), CallSid: callSid, Duration: max(seconds, 1), Created: time.Now()}
	rec.URL = s.url + apiPrefix + s.opts.AccountSID + "/Recordings/" + rec.Sid
	if transcription != "" {
		rec.Transcription, rec.TranscriptionSid = transcription, s.newSID("TR")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordings[rec.Sid] = rec
	return *rec
}

// Notifications returns the TwiML errors met so far.
func (s *Sim) Notifications() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Notification(nil), s.notifications...)
}

// StartsPerSecond counts call starts (dequeues) per Unix second.
func (s *Sim) StartsPerSecond() map[int64]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int64]int, len(s.starts))
	for k, v := range s.starts {
		out[k] = v
	}
	return out
}

// MaxStartsPerSecond is the largest number of call starts in one second.
func (s *Sim) MaxStartsPerSecond() int {
	m := 0
	for _, v := range s.StartsPerSecond() {
		if v > m {
			m = v
		}
	}
	return m
}

// Stats summarises what the simulator has seen.
type Stats struct {
	CreateRequests     int            `json:"create_requests"`
	CallsCreated       int            `json:"calls_created"`
	CallsByStatus      map[string]int `json:"calls_by_status"`
	DuplicateAttempts  int            `json:"duplicate_attempts"`
	Callbacks          int            `json:"callbacks"`
	CallbacksFailed    int            `json:"callbacks_failed"`
	Messages           int            `json:"messages"`
	MaxStartsPerSecond int            `json:"max_starts_per_second"`
	FaultsInjected     map[string]int `json:"faults_injected"`
	Notifications      int            `json:"notifications"`
}

// Stats returns a summary of what the simulator has seen.
func (s *Sim) Stats() Stats {
	dups := len(s.DuplicateAttempts())
	maxStarts := s.MaxStartsPerSecond()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		CreateRequests:     len(s.creates),
		CallsCreated:       len(s.callOrder),
		CallsByStatus:      map[string]int{},
		DuplicateAttempts:  dups,
		Callbacks:          len(s.callbacks),
		Messages:           len(s.messages),
		MaxStartsPerSecond: maxStarts,
		FaultsInjected:     map[string]int{},
		Notifications:      len(s.notifications),
	}
	for _, c := range s.callOrder {
		st.CallsByStatus[c.status]++
	}
	for _, cb := range s.callbacks {
		if cb.StatusCode < 200 || cb.StatusCode >= 300 {
			st.CallbacksFailed++
		}
	}
	for k, n := range s.faultCounts {
		st.FaultsInjected[string(k)] = n
	}
	return st
}
