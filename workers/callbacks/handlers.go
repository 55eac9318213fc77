package callbacks

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/language"
	"github.com/delauto/delauto/internal/outcome"
	"github.com/delauto/delauto/internal/phone"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/relay"
	"github.com/delauto/delauto/workers/store"
)

// fail refuses a request in a handler, before any state is touched.
func (s *Server) fail(w http.ResponseWriter, reason string, code int) int {
	s.m.rejected.WithLabelValues(reason).Inc()
	http.Error(w, http.StatusText(code), code)
	return code
}

// unknown answers a callback about an attempt the call log does not have:
// a TwiML request gets a hang-up (the callee never hears Twilio's
// "application error"), a data callback 404. Nothing is written.
func (s *Server) unknown(w http.ResponseWriter, r *request, twimlEndpoint bool) int {
	s.log.Warn("webhook for an attempt not in the call log", "attempt", r.ref.AttemptID, "path", r.http.URL.Path)
	if twimlEndpoint {
		s.m.rejected.WithLabelValues("unknown_attempt").Inc()
		return writeTwiML(w, hangupTwiML())
	}
	return s.fail(w, "unknown_attempt", http.StatusNotFound)
}

// callInfo looks the attempt up for a handler; ok is false when the request
// was answered already (unknown attempt, or no context for a TwiML request).
func (s *Server) callInfo(w http.ResponseWriter, r *request, twimlEndpoint bool) (*CallInfo, int, bool) {
	info, err := s.lookup(r.ctx, r.ref, r.camp)
	return s.checkInfo(w, r, twimlEndpoint, info, err)
}

// checkInfo answers for callInfo what lookup gave.
func (s *Server) checkInfo(w http.ResponseWriter, r *request, twimlEndpoint bool, info *CallInfo, err error) (*CallInfo, int, bool) {
	switch {
	case err == nil && info.Campaign != r.camp.Namespace+"/"+r.camp.Name:
		// Signed with a token this server accepts, but not its call: this
		// server answers for its own campaign only.
		s.log.Warn("webhook for an attempt of another campaign refused", "attempt", r.ref.AttemptID, "path", r.http.URL.Path, "campaign", info.Campaign)
		s.m.rejected.WithLabelValues("other_campaign").Inc()
		http.Error(w, "the attempt belongs to another campaign than this callback server's", http.StatusForbidden)
		return nil, http.StatusForbidden, false
	case errors.Is(err, errUnknownAttempt):
		return nil, s.unknown(w, r, twimlEndpoint), false
	case err != nil && twimlEndpoint:
		s.log.Error("call context unavailable (Redis and MongoDB)", "attempt", r.ref.AttemptID, "error", err)
		return nil, s.fail(w, "store_unavailable", http.StatusServiceUnavailable), false
	case err != nil:
		// A data callback is journaled anyway; the journal writer checks the
		// attempt when it writes.
		s.log.Warn("call context unavailable; journaling unverified", "attempt", r.ref.AttemptID, "error", err)
	}
	return info, 0, true
}

func (s *Server) badForm(w http.ResponseWriter, r *request, err error) int {
	s.log.Warn("webhook form refused", "attempt", r.ref.AttemptID, "path", r.http.URL.Path, "error", err)
	return s.fail(w, "bad_form", http.StatusBadRequest)
}

// followUpError is a failure after the write itself succeeded: publishing
// the outcome event or waking the relay. The write is durable; only the
// follow-up needs another go (the journal writer retries it).
type followUpError struct{ err error }

func (e *followUpError) Error() string { return "after the write: " + e.err.Error() }
func (e *followUpError) Unwrap() error { return e.err }

func followUp(err error) error {
	if err == nil {
		return nil
	}
	return &followUpError{err: err}
}

// permanent reports a store error that retrying cannot fix.
func permanent(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidInput) || errors.Is(err, store.ErrDuplicate)
}

// writeOrJournal makes a write durable before the webhook is answered:
// directly in MongoDB within WriteTimeout, else in the journal (the journal writer
// writes it later). It fails only when neither took it.
func (s *Server) writeOrJournal(ctx context.Context, e entry, direct func(context.Context) (bool, error)) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
	_, err := direct(wctx)
	cancel()
	if err == nil {
		return nil
	}
	if permanent(err) {
		s.log.Warn("callback write refused by the call log", "attempt", e.Attempt, "kind", kindName(e.Kind), "error", err)
		return nil
	}
	s.log.Warn("call log write failed; journaling it", "attempt", e.Attempt, "kind", kindName(e.Kind), "error", err)
	s.m.writeThrough.WithLabelValues("journal").Inc()
	jctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
	defer cancel()
	if jerr := s.append(jctx, e); jerr != nil {
		if isFollowUp(err) {
			// The write is in MongoDB; the operator re-reads it on its own
			// schedule even without the event.
			s.log.Error("outcome event or relay wake-up lost (the write itself is stored)", "attempt", e.Attempt, "kind", kindName(e.Kind), "error", errors.Join(err, jerr))
			return nil
		}
		// Neither store took it: this worker holds it until MongoDB
		// answers (lost only if the worker dies first).
		if !s.hold(e, false) {
			s.log.Error("callback write lost: neither MongoDB nor the journal took it, and it cannot be held", "attempt", e.Attempt, "kind", kindName(e.Kind), "error", errors.Join(err, jerr))
			return jerr
		}
		s.log.Error("neither MongoDB nor the journal took a callback write; held in memory until MongoDB answers", "attempt", e.Attempt, "kind", kindName(e.Kind), "error", errors.Join(err, jerr))
		return nil
	}
	if !isFollowUp(err) {
		s.hold(e, true)
	}
	return nil
}

// journalOrWrite is the status path: the journal first (fast), MongoDB
// directly when Redis fails.
func (s *Server) journalOrWrite(ctx context.Context, e entry, direct func(context.Context) (bool, error)) error {
	err := s.append(ctx, e)
	if err == nil {
		return nil
	}
	s.log.Warn("journal unavailable; writing the call log directly", "attempt", e.Attempt, "kind", kindName(e.Kind), "error", err)
	s.m.writeThrough.WithLabelValues("mongo").Inc()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
	defer cancel()
	_, derr := direct(wctx)
	var fe *followUpError
	switch {
	case derr == nil, permanent(derr):
		return nil
	case errors.As(derr, &fe):
		s.log.Error("outcome event lost with Redis (the write itself is stored)", "attempt", e.Attempt, "kind", kindName(e.Kind), "error", derr)
		return nil
	}
	return errors.Join(err, derr)
}

// handleStatus takes a call status callback: into the journal, answered
// 204. The journal writer writes it to MongoDB and, for a final status, publishes
// the outcome event.
func (s *Server) handleStatus(w http.ResponseWriter, r *request) int {
	u, err := parseStatus(r.form)
	if err != nil {
		return s.badForm(w, r, err)
	}
	if _, code, ok := s.callInfo(w, r, false); !ok {
		return code
	}
	id := r.ref.AttemptID
	err = s.journalOrWrite(r.ctx, entry{Kind: kindStatus, Attempt: id, Status: u},
		func(ctx context.Context) (bool, error) { return s.applyStatus(ctx, id, u) })
	if err != nil {
		return s.fail(w, "store_unavailable", http.StatusServiceUnavailable)
	}
	return writeStatus(w, http.StatusNoContent)
}

// handleVoice answers the call: greeting and menu, or, when synchronous
// answering-machine detection says a machine answered, the voicemail or a
// hang-up.
func (s *Server) handleVoice(w http.ResponseWriter, r *request) int {
	v, err := parseVoice(r.form)
	if err != nil {
		return s.badForm(w, r, err)
	}
	info, code, ok := s.callInfo(w, r, true)
	if !ok {
		return code
	}
	if v.AnsweredBy != "" {
		s.recordAnsweredBy(r, v.AnsweredBy)
	}
	if isMachine(v.AnsweredBy) {
		if machineAction(r.camp) == v1.MachineVoicemail {
			s.m.amd.WithLabelValues("voicemail").Inc()
			return writeTwiML(w, s.voicemailTwiML(info, r.camp))
		}
		s.m.amd.WithLabelValues("hangup").Inc()
		return writeTwiML(w, hangupTwiML())
	}
	return writeTwiML(w, s.voiceTwiML(info, s.wording(info, r.camp), r.urlFor(callurls.GatherPath), r.urlFor(callurls.GatherPath, "try", "2")))
}

// recordAnsweredBy journals an AMD verdict (directly to MongoDB if Redis fails).
func (s *Server) recordAnsweredBy(r *request, answeredBy string) {
	id := r.ref.AttemptID
	err := s.journalOrWrite(r.ctx, entry{Kind: kindAMD, Attempt: id, Body: entryBody{AnsweredBy: answeredBy}},
		func(ctx context.Context) (bool, error) { return s.applyAnsweredBy(ctx, id, answeredBy) })
	if err != nil {
		s.log.Error("answering machine verdict not recorded", "attempt", id, "error", err)
	}
}

// countAnswer counts a menu answer by language, option and input.
func (s *Server) countAnswer(w *language.Wording, g gatherForm, opt language.Option, ok bool) {
	input := "silence"
	switch {
	case g.Digits != "":
		input = "dtmf"
	case g.Speech != "":
		input = "speech"
	}
	if !ok {
		opt = "none"
	}
	s.m.answers.WithLabelValues(language.Base(w.Code), string(opt), input).Inc()
}

// gatherInfo is callInfo for a menu answer. When neither Redis nor MongoDB
// can give the call's context, the answer is still taken, with what the
// signed request itself says (the number called, Twilio's To) and the
// campaign's own wording: an opt-out given during an outage of both stores
// must not be lost (its write is held until MongoDB answers, writeOrJournal).
func (s *Server) gatherInfo(w http.ResponseWriter, r *request) (*CallInfo, int, bool) {
	info, err := s.lookup(r.ctx, r.ref, r.camp)
	if err == nil || errors.Is(err, errUnknownAttempt) || errors.Is(err, context.Canceled) {
		return s.checkInfo(w, r, true, info, err)
	}
	to := r.form.Get("To")
	if phone.Validate(to) != nil {
		return s.checkInfo(w, r, true, info, err)
	}
	s.log.Warn("call context unavailable (Redis and MongoDB); taking the answer with the number the signed request names",
		"attempt", r.ref.AttemptID, "error", err)
	return &CallInfo{AttemptID: r.ref.AttemptID, Fence: r.ref.Fence, Namespace: r.camp.Namespace,
		Campaign: r.camp.Namespace + "/" + r.camp.Name, To: to}, 0, true
}

// maxRepeats bounds how often one call plays the menu again on request.
const maxRepeats = 2

// handleGather takes the recipient's menu answer: the choice is written to
// MongoDB (or the journal) before the TwiML that acknowledges it; an
// opt-out is written to the opt-out list first. An answer that is not an
// option gets the menu once more, then a goodbye.
func (s *Server) handleGather(w http.ResponseWriter, r *request) int {
	g, err := parseGather(r.form)
	if err != nil {
		return s.badForm(w, r, err)
	}
	info, code, ok := s.gatherInfo(w, r)
	if !ok {
		return code
	}
	p := s.wording(info, r.camp)
	q := r.http.URL.Query()
	opt, ok := choose(g, p)
	s.countAnswer(p, g, opt, ok)
	if ok && opt == language.Repeat {
		// The greeting and menu again, at most maxRepeats times; the
		// repeat keeps the answer's try.
		if n, _ := strconv.Atoi(q.Get("rep")); n < maxRepeats {
			next := []string{"rep", strconv.Itoa(n + 1)}
			if q.Get("try") != "" {
				next = append(next, "try", q.Get("try"))
			}
			return writeTwiML(w, s.repeatTwiML(info, p, r.urlFor(callurls.GatherPath, next...)))
		}
		ok = false
	}
	if !ok {
		if q.Get("try") == "" {
			return writeTwiML(w, s.retryTwiML(p, r.urlFor(callurls.GatherPath, "try", "2")))
		}
		return writeTwiML(w, s.sayHangupTwiML(p, p.Goodbye))
	}
	choice := choices[opt]
	id := r.ref.AttemptID
	if choice == v1.ChoiceOptOut {
		ns, number := info.Namespace, info.To
		// Marked in Redis first: while the opt-out waits in the journal for
		// MongoDB, no worker dials the number (the dialer asks the mark).
		if err := queue.MarkOptOutPending(r.ctx, s.cfg.Redis, ns, number); err != nil {
			s.log.Warn("opt-out not marked pending in Redis; it stops calls once MongoDB has it", "attempt", id, "error", err)
		}
		err := s.writeOrJournal(r.ctx, entry{Kind: kindOptOut, Attempt: id, Body: entryBody{Namespace: ns, Number: number}},
			func(ctx context.Context) (bool, error) { return s.applyOptOut(ctx, id, ns, number) })
		if err != nil {
			return s.fail(w, "store_unavailable", http.StatusServiceUnavailable)
		}
	}
	ans := store.Answer{Choice: choice, Digits: g.Digits, Speech: clip(g.Speech, maxSpeech), At: s.cfg.Now()}
	err = s.writeOrJournal(r.ctx, entry{Kind: kindResponse, Attempt: id, Body: entryBody{Answer: &ans}},
		func(ctx context.Context) (bool, error) { return s.applyAnswer(ctx, id, ans) })
	if err != nil {
		return s.fail(w, "store_unavailable", http.StatusServiceUnavailable)
	}
	switch choice {
	case v1.ChoiceConfirm:
		return writeTwiML(w, s.sayHangupTwiML(p, p.Confirmed))
	case v1.ChoiceReschedule:
		return writeTwiML(w, s.sayHangupTwiML(p, p.Reschedule))
	case v1.ChoiceOptOut:
		return writeTwiML(w, s.sayHangupTwiML(p, p.OptedOut))
	default:
		return writeTwiML(w, s.recordTwiML(p, recordMaxLength(r.camp),
			r.urlFor(callurls.RecordPath), r.urlFor(callurls.RecordingPath), r.urlFor(callurls.TranscriptionPath)))
	}
}

// handleRecord is the <Record> action: the recording is stored, then the
// call thanks and ends.
func (s *Server) handleRecord(w http.ResponseWriter, r *request) int {
	rec, err := parseRecording(r.form, false)
	if err != nil {
		return s.badForm(w, r, err)
	}
	info, code, ok := s.callInfo(w, r, true)
	if !ok {
		return code
	}
	if err := s.storeRecording(r, rec); err != nil {
		return s.fail(w, "store_unavailable", http.StatusServiceUnavailable)
	}
	if rec.Digits == "hangup" {
		return writeTwiML(w, hangupTwiML()) // the callee is gone; Twilio runs nothing
	}
	p := s.wording(info, r.camp)
	return writeTwiML(w, s.sayHangupTwiML(p, p.InstructionsSaved))
}

func (s *Server) storeRecording(r *request, rec recordingForm) error {
	id := r.ref.AttemptID
	rr := rec.Recording
	return s.writeOrJournal(r.ctx, entry{Kind: kindRecording, Attempt: id, Body: entryBody{Recording: &rr}},
		func(ctx context.Context) (bool, error) { return s.applyRecording(ctx, id, rr) })
}

// handleRecording is the recording status callback: a completed recording
// is stored (deduplicated by its SID; the <Record> action may have stored
// it already).
func (s *Server) handleRecording(w http.ResponseWriter, r *request) int {
	rec, err := parseRecording(r.form, true)
	if err != nil {
		return s.badForm(w, r, err)
	}
	if _, code, ok := s.callInfo(w, r, false); !ok {
		return code
	}
	if rec.Status != "completed" {
		s.log.Info("recording not completed", "attempt", r.ref.AttemptID, "status", rec.Status)
		return writeStatus(w, http.StatusNoContent)
	}
	if err := s.storeRecording(r, rec); err != nil {
		return s.fail(w, "store_unavailable", http.StatusServiceUnavailable)
	}
	return writeStatus(w, http.StatusNoContent)
}

// handleTranscription stores the transcription of the recorded
// instructions and wakes the relay, which was waiting for it.
func (s *Server) handleTranscription(w http.ResponseWriter, r *request) int {
	t, err := parseTranscription(r.form)
	if err != nil {
		return s.badForm(w, r, err)
	}
	if _, code, ok := s.callInfo(w, r, false); !ok {
		return code
	}
	id := r.ref.AttemptID
	err = s.writeOrJournal(r.ctx, entry{Kind: kindTranscription, Attempt: id,
		Body: entryBody{RecordingSID: t.RecordingSID, TrStatus: t.Status, Transcription: t.Text}},
		func(ctx context.Context) (bool, error) {
			return s.applyTranscription(ctx, id, t.RecordingSID, t.Status, t.Text)
		})
	if err != nil {
		return s.fail(w, "store_unavailable", http.StatusServiceUnavailable)
	}
	return writeStatus(w, http.StatusNoContent)
}

// handleAMD is the asynchronous answering-machine detection callback: when
// a machine answered, the live call is redirected to the voicemail or hung
// up (UpdateCall), and the verdict is recorded.
func (s *Server) handleAMD(w http.ResponseWriter, r *request) int {
	a, err := parseAMD(r.form)
	if err != nil {
		return s.badForm(w, r, err)
	}
	info, code, ok := s.callInfo(w, r, false)
	if !ok {
		return code
	}
	if isMachine(a.AnsweredBy) {
		s.redirectMachine(r, a.CallSID, info)
	}
	s.recordAnsweredBy(r, a.AnsweredBy)
	return writeStatus(w, http.StatusNoContent)
}

// redirectMachine moves a live call answered by a machine to the voicemail
// TwiML, or ends it, through Twilio's REST API. It waits at most
// UpdateTimeout; the request finishes in the background after that.
func (s *Server) redirectMachine(r *request, callSID string, info *CallInfo) {
	if s.cfg.Twilio == nil {
		s.log.Error("answered by a machine but no Twilio client to redirect the call", "attempt", r.ref.AttemptID)
		s.m.amd.WithLabelValues("error").Inc()
		return
	}
	p := &openapi.UpdateCallParams{}
	action := "hangup"
	if machineAction(r.camp) == v1.MachineVoicemail {
		if info == nil {
			info = &CallInfo{AttemptID: r.ref.AttemptID}
		}
		action = "voicemail"
		p.SetTwiml(s.voicemailTwiML(info, r.camp))
	} else {
		p.SetStatus("completed")
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.cfg.Twilio.Api.UpdateCall(callSID, p)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			// The call may have ended already (Twilio 21220): nothing to do.
			s.log.Warn("could not redirect a call answered by a machine", "attempt", r.ref.AttemptID, "action", action, "error", err)
			s.m.amd.WithLabelValues("error").Inc()
			return
		}
		s.m.amd.WithLabelValues(action).Inc()
	case <-time.After(s.cfg.UpdateTimeout):
		s.log.Warn("redirecting a call answered by a machine is slow; continuing in the background", "attempt", r.ref.AttemptID, "action", action)
		s.m.amd.WithLabelValues(action).Inc()
	}
}

// The writes, shared by the handlers (direct) and the journal writer.
// Each is idempotent and, after it, does what follows at least once.

func (s *Server) applyStatus(ctx context.Context, id string, u store.StatusUpdate) (bool, error) {
	a, applied, err := s.cfg.Store.ApplyCallStatus(ctx, store.CallRef{AttemptID: id}, u)
	if err != nil {
		return false, err
	}
	if applied && u.Status == "completed" && u.DurationSec > 0 {
		s.recordDuration(ctx, a, u.DurationSec)
	}
	if terminalStatus(u.Status) && a.State.Terminal() {
		return applied, followUp(s.publish(ctx, a))
	}
	return applied, nil
}

// recordDuration adds an answered call's length to its campaign's recent
// call durations, which the operator's autoscaler sizes the fleet by. It
// runs once per call: only when the completed status was applied (a
// repeated callback is not). A failure costs one sample and is logged;
// it never fails the callback.
func (s *Server) recordDuration(ctx context.Context, a *store.Attempt, sec int32) {
	ns, name, ok := strings.Cut(a.Campaign, "/")
	if !ok {
		return
	}
	if err := callrate.RecordDuration(ctx, s.rdb, ns, name, s.cfg.Now(), time.Duration(sec)*time.Second); err != nil {
		s.log.Warn("call duration not recorded for the autoscaler", "attempt", a.ID, "campaign", a.Campaign, "durationSec", sec, "error", err)
	}
}

func (s *Server) applyAnsweredBy(ctx context.Context, id, answeredBy string) (bool, error) {
	a, applied, err := s.cfg.Store.RecordAnsweredBy(ctx, id, answeredBy)
	if err != nil {
		return false, err
	}
	if a.State.Terminal() && isMachine(answeredBy) {
		return applied, followUp(s.publish(ctx, a)) // the result became machine
	}
	return applied, nil
}

func (s *Server) applyAnswer(ctx context.Context, id string, ans store.Answer) (bool, error) {
	a, applied, err := s.cfg.Store.RecordResponse(ctx, id, ans)
	if err != nil {
		return false, err
	}
	return applied, followUp(s.afterAnswer(ctx, a))
}

// applyOptOut writes the opt-out to MongoDB and then lifts its pending mark
// in Redis (MarkOptOutPending); a mark left behind only keeps stopping
// calls to a number that opted out, until it expires.
func (s *Server) applyOptOut(ctx context.Context, id, namespace, number string) (bool, error) {
	applied, err := s.cfg.Store.AddOptOut(ctx, namespace, number, id, "menu")
	if err != nil {
		return applied, err
	}
	if err := queue.ClearOptOutPending(ctx, s.cfg.Redis, namespace, number); err != nil {
		s.log.Warn("opt-out written, but its pending mark in Redis stays until it expires", "attempt", id, "error", err)
	}
	return applied, nil
}

func (s *Server) applyRecording(ctx context.Context, id string, rec store.Recording) (bool, error) {
	a, applied, err := s.cfg.Store.RecordRecording(ctx, id, rec)
	if err != nil {
		return false, err
	}
	return applied, followUp(s.afterAnswer(ctx, a))
}

func (s *Server) applyTranscription(ctx context.Context, id, recordingSID, status, text string) (bool, error) {
	a, applied, err := s.cfg.Store.RecordTranscription(ctx, id, recordingSID, status, text)
	if err != nil {
		return false, err
	}
	return applied, followUp(s.afterAnswer(ctx, a))
}

// afterAnswer tells the operator (outcome event) and, for answers the agent
// needs, wakes the relay.
func (s *Server) afterAnswer(ctx context.Context, a *store.Attempt) error {
	if err := s.publish(ctx, a); err != nil {
		return err
	}
	if a.Response != nil && relay.Needed(a.Response.Choice) {
		if err := s.queue.Enqueue(ctx, a.ID, s.cfg.Now()); err != nil {
			return err
		}
	}
	return nil
}

// publish sends the outcome event of attempt a (after its change is in MongoDB).
func (s *Server) publish(ctx context.Context, a *store.Attempt) error {
	err := outcome.Publish(ctx, s.rdb, outcome.Event{AttemptID: a.ID, Namespace: a.Delivery.Namespace, Name: a.Delivery.Name, State: string(a.State)})
	if err != nil {
		s.m.outcomes.WithLabelValues("error").Inc()
		return err
	}
	s.m.outcomes.WithLabelValues("ok").Inc()
	return nil
}
