package twiliosim

import (
	"errors"
	"math"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nyaruka/phonenumbers"

	"github.com/delauto/delauto/internal/phone"
)

// target is where a call's TwiML comes from: a URL or inline TwiML.
type target struct {
	url, method, twiml string
}

// call is the simulator's state of one call. Fields after the mutex note are
// guarded by Sim.mu; the rest are set at creation or only touched by the
// call's own goroutine.
type call struct {
	sid, to, from, attempt string
	// toCountry and fromCountry are the numbers' regions, parsed once
	// (every webhook of the call carries them).
	toCountry, fromCountry string
	form                   url.Values
	scenario               Scenario
	created                time.Time
	slot                   time.Time // when the CPS queue lets it start

	fallbackURL, fallbackMethod string
	events                      map[string]bool
	timeout                     int // ring timeout, seconds
	amd                         string
	asyncAMD                    bool
	amdURL, amdMethod           string

	notify   chan struct{} // poked when the API asks for something
	ended    chan struct{} // closed when the final status is set
	finished chan struct{} // closed when the status callbacks are delivered
	cbq      chan *outbound
	lateWG   sync.WaitGroup

	// Call goroutine only.
	gathers  int
	hangupAt time.Time
	limitAt  time.Time

	// Guarded by Sim.mu.
	url, method, twiml       string
	statusCB, statusCBMethod string
	timeLimit                int
	status                   string
	updated                  time.Time
	started                  time.Time
	answered                 time.Time
	endedAt                  time.Time
	answeredBy               string
	duration                 int
	seq                      int
	endReq                   string
	redirect                 *target
	deleted                  bool
	inputs                   []string
}

func (c *call) poke() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// stopErr interrupts a call's flow.
type stopErr struct {
	why string
	to  *target // for redirects
}

func (e *stopErr) Error() string { return e.why }

var (
	errCalleeHangup = &stopErr{why: "callee hung up"}
	errTimeLimit    = &stopErr{why: "time limit reached"}
	errHangupVerb   = &stopErr{why: "hangup verb"}
	errShutdown     = &stopErr{why: "simulator closed"}
	errAPIEnd       = &stopErr{why: "ended through the API"}
	errAppError     = &stopErr{why: "application error"}
)

func (s *Sim) snapshot(c *call) Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Call{
		Sid: c.sid, To: c.to, From: c.from, Status: c.status, AnsweredBy: c.answeredBy,
		AttemptID: c.attempt, Scenario: c.scenario.Name, Created: c.created, Started: c.started,
		Answered: c.answered, Ended: c.endedAt, Duration: c.duration,
		Inputs: append([]string(nil), c.inputs...), Form: c.form,
	}
}

// checkInterrupt reports a pending API request or shutdown.
func (s *Sim) checkInterrupt(c *call) error {
	if s.ctx.Err() != nil {
		return errShutdown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.endReq != "" {
		return errAPIEnd
	}
	if t := c.redirect; t != nil {
		c.redirect = nil
		return &stopErr{why: "redirected through the API", to: t}
	}
	return nil
}

// waitUntil waits until the real time deadline, returning early with the
// reason when the call is interrupted: an API request, the callee hanging
// up, the time limit, or shutdown.
func (s *Sim) waitUntil(c *call, deadline time.Time) error {
	for {
		if err := s.checkInterrupt(c); err != nil {
			return err
		}
		now := time.Now()
		if !c.hangupAt.IsZero() && !now.Before(c.hangupAt) {
			return errCalleeHangup
		}
		if !c.limitAt.IsZero() && !now.Before(c.limitAt) {
			return errTimeLimit
		}
		if !now.Before(deadline) {
			return nil
		}
		next := deadline
		for _, t := range []time.Time{c.hangupAt, c.limitAt} {
			if !t.IsZero() && t.Before(next) {
				next = t
			}
		}
		timer := time.NewTimer(next.Sub(now))
		select {
		case <-timer.C:
		case <-c.notify:
		case <-s.ctx.Done():
		}
		timer.Stop()
	}
}

// wait waits d of simulated time.
func (s *Sim) wait(c *call, d time.Duration) error {
	return s.waitUntil(c, time.Now().Add(s.scaled(d)))
}

func (s *Sim) setStatus(c *call, status string) {
	s.mu.Lock()
	c.status = status
	c.updated = time.Now()
	s.mu.Unlock()
}

func (s *Sim) addInput(c *call, what string) {
	s.mu.Lock()
	c.inputs = append(c.inputs, what)
	s.mu.Unlock()
}

func country(n string) string {
	p, err := phonenumbers.Parse(n, "")
	if err != nil {
		return ""
	}
	return phonenumbers.GetRegionCodeForNumber(p)
}

// baseParams are the parameters Twilio sends with every voice webhook.
func (s *Sim) baseParams(c *call, status string) url.Values {
	toC, fromC := c.toCountry, c.fromCountry
	v := url.Values{}
	v.Set("AccountSid", s.opts.AccountSID)
	v.Set("ApiVersion", apiVersion)
	v.Set("CallSid", c.sid)
	v.Set("CallStatus", status)
	v.Set("Direction", "outbound-api")
	v.Set("From", c.from)
	v.Set("To", c.to)
	v.Set("Caller", c.from)
	v.Set("Called", c.to)
	for _, p := range []string{"From", "Caller"} {
		v.Set(p+"Country", fromC)
		v.Set(p+"City", "")
		v.Set(p+"State", "")
		v.Set(p+"Zip", "")
	}
	for _, p := range []string{"To", "Called"} {
		v.Set(p+"Country", toC)
		v.Set(p+"City", "")
		v.Set(p+"State", "")
		v.Set(p+"Zip", "")
	}
	return v
}

// statusEvent queues a status callback if the call asked for the event
// (completed is always sent when there is a StatusCallback).
func (s *Sim) statusEvent(c *call, event, callStatus string, extra url.Values) {
	s.mu.Lock()
	cb, method := c.statusCB, c.statusCBMethod
	if cb == "" || !c.events[event] {
		s.mu.Unlock()
		return
	}
	seq := c.seq
	c.seq++
	answeredBy := c.answeredBy
	s.mu.Unlock()
	p := s.baseParams(c, callStatus)
	p.Set("CallbackSource", "call-progress-events")
	p.Set("SequenceNumber", strconv.Itoa(seq))
	p.Set("Timestamp", time.Now().UTC().Format(twilioTime))
	if answeredBy != "" {
		p.Set("AnsweredBy", answeredBy)
	}
	for k, vs := range extra {
		p[k] = vs
	}
	c.cbq <- &outbound{kind: "status", event: event, callSid: c.sid, method: method, url: cb, params: p, seq: seq, token: s.newSID("ID")}
}

// runCall plays one call from the CPS queue to its end.
func (s *Sim) runCall(c *call) {
	c.cbq = make(chan *outbound, 16)
	s.goTracked(func() { s.runStatusQueue(c) })
	defer close(c.cbq)
	sc := c.scenario

	if err := s.waitUntil(c, c.slot); err != nil {
		s.endCall(c, "canceled")
		return
	}
	s.mu.Lock()
	c.started = c.slot
	c.updated = time.Now()
	s.starts[c.slot.Unix()]++
	s.mu.Unlock()
	s.statusEvent(c, "initiated", "initiated", nil)

	switch sc.Result {
	case ResultBusy, ResultFailed:
		if err := s.wait(c, sc.ringTime()); err != nil {
			s.endCall(c, "canceled")
			return
		}
		s.endCall(c, string(sc.Result))
		return
	}
	s.setStatus(c, "ringing")
	s.statusEvent(c, "ringing", "ringing", nil)
	ringTimeout := time.Duration(c.timeout) * time.Second
	if ring := sc.ringTime(); sc.Result == ResultNoAnswer || ring >= ringTimeout {
		if err := s.wait(c, ringTimeout); err != nil {
			s.endCall(c, "canceled")
			return
		}
		s.endCall(c, "no-answer")
		return
	} else if err := s.wait(c, ring); err != nil {
		s.endCall(c, "canceled")
		return
	}

	now := time.Now()
	s.mu.Lock()
	c.status = "in-progress"
	c.answered = now
	c.updated = now
	limit := c.timeLimit
	s.mu.Unlock()
	c.limitAt = now.Add(s.scaled(time.Duration(limit) * time.Second))
	if sc.HangupAfter > 0 {
		c.hangupAt = now.Add(s.scaled(sc.HangupAfter))
	}
	s.statusEvent(c, "answered", "in-progress", nil)

	if c.amd != "" {
		answeredBy := resolveAnsweredBy(sc, c.amd)
		amdTime := sc.amdTime(c.amd)
		if c.asyncAMD {
			s.goTracked(func() { s.asyncAMD(c, answeredBy, amdTime) })
		} else {
			if err := s.wait(c, amdTime); err != nil {
				s.endCall(c, "completed")
				return
			}
			s.mu.Lock()
			c.answeredBy = answeredBy
			s.mu.Unlock()
		}
	}
	s.runTwiML(c)
	s.endCall(c, "completed")
}

// asyncAMD reports the detection result to AsyncAmdStatusCallback while the
// call's TwiML runs.
func (s *Sim) asyncAMD(c *call, answeredBy string, d time.Duration) {
	t := time.NewTimer(s.scaled(d))
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ended:
		return
	case <-s.ctx.Done():
		return
	}
	s.mu.Lock()
	if !c.endedAt.IsZero() {
		s.mu.Unlock()
		return
	}
	c.answeredBy = answeredBy
	s.mu.Unlock()
	if c.amdURL == "" {
		return
	}
	p := url.Values{}
	p.Set("AccountSid", s.opts.AccountSID)
	p.Set("CallSid", c.sid)
	p.Set("AnsweredBy", answeredBy)
	p.Set("MachineDetectionDuration", strconv.FormatInt(d.Milliseconds(), 10))
	s.deliver(&outbound{kind: "amd", callSid: c.sid, method: c.amdMethod, url: c.amdURL, params: p, seq: -1})
}

// endCall sets the final status and sends the completed callback.
func (s *Sim) endCall(c *call, status string) {
	now := time.Now()
	s.mu.Lock()
	if !c.endedAt.IsZero() {
		s.mu.Unlock()
		return
	}
	if c.endReq != "" && c.answered.IsZero() {
		status = "canceled"
	}
	c.status = status
	c.endedAt = now
	c.updated = now
	if !c.answered.IsZero() {
		if s.scale > 0 {
			c.duration = int(math.Ceil(now.Sub(c.answered).Seconds() / s.scale))
		}
		c.duration = max(c.duration, 1)
	}
	dur := c.duration
	close(c.ended)
	s.mu.Unlock()
	s.log.Info("call ended", "call_sid", c.sid, "to", phone.Mask(c.to), "status", status, "duration", dur)
	if s.ctx.Err() != nil {
		return
	}
	extra := url.Values{}
	extra.Set("CallDuration", strconv.Itoa(dur))
	extra.Set("Duration", strconv.Itoa((dur+59)/60))
	extra.Set("SipResponseCode", sipCode(status))
	s.statusEvent(c, "completed", status, extra)
}

func sipCode(status string) string {
	switch status {
	case "busy":
		return "486"
	case "no-answer", "canceled":
		return "487"
	case "failed":
		return "500"
	}
	return "200"
}

// stopStatus says whether an interruption ends the call.
func isStop(err error) (*stopErr, bool) {
	var se *stopErr
	ok := errors.As(err, &se)
	return se, ok
}
