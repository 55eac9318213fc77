package twiliosim

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Sign computes the X-Twilio-Signature of a webhook request as Twilio does:
// HMAC-SHA1 keyed with the auth token over the full URL followed by each
// POST parameter's name and value, sorted by name; base64 encoded. For GET
// requests pass nil params (the parameters are in the URL).
func Sign(authToken, fullURL string, params url.Values) string {
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range sortedKeys(params) {
		for _, v := range params[k] {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	m := hmac.New(sha1.New, []byte(authToken))
	m.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// outbound is one webhook request to make.
type outbound struct {
	kind    string // status, voice, action, redirect, amd, recording, transcription
	event   string // status callback event
	callSid string
	method  string
	url     string
	params  url.Values
	seq     int // SequenceNumber, -1 when none
	token   string
}

// withQuery appends params to the URL's query (how GET webhooks carry them).
func withQuery(raw string, params url.Values) string {
	if len(params) == 0 {
		return raw
	}
	sep := "?"
	if strings.Contains(raw, "?") {
		sep = "&"
	}
	return raw + sep + params.Encode()
}

// send makes one signed webhook request and records it. It returns the HTTP
// status (0 on a connection error), the body and its content type.
func (s *Sim) send(ctx context.Context, ob *outbound, attempt int, dup, late bool) (int, []byte, string, error) {
	u := ob.url
	var body io.Reader
	var sig string
	if ob.method == http.MethodGet {
		u = withQuery(ob.url, ob.params)
		sig = Sign(s.AuthToken(), u, nil)
	} else {
		body = strings.NewReader(ob.params.Encode())
		sig = Sign(s.AuthToken(), u, ob.params)
	}
	rec := CallbackRecord{
		Time: time.Now(), Kind: ob.kind, CallSid: ob.callSid, Method: ob.method, URL: ob.url,
		Params: ob.params, Event: ob.event, Sequence: ob.seq, Attempt: attempt, Duplicate: dup, Late: late,
	}
	if s.opts.Lean {
		rec.Params = nil
	}
	defer func() {
		s.mu.Lock()
		s.callbacks = append(s.callbacks, rec)
		s.mu.Unlock()
	}()
	req, err := http.NewRequestWithContext(ctx, ob.method, s.route(u), body)
	if err != nil {
		rec.Err = err.Error()
		return 0, nil, "", err
	}
	if orig, err := url.Parse(u); err == nil && orig.Host != req.URL.Host {
		req.Host = orig.Host // as an ingress would pass it on
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("X-Twilio-Signature", sig)
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	req.Header.Set("Accept", "*/*")
	req.Header.Set("Cache-Control", "max-age=259200")
	req.Header.Set("X-Home-Region", "us1")
	if ob.token != "" {
		req.Header.Set("I-Twilio-Idempotency-Token", ob.token)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		rec.Err = err.Error()
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	rec.StatusCode = resp.StatusCode
	if !s.opts.Lean && (ob.kind == "voice" || ob.kind == "action" || ob.kind == "redirect") {
		rec.TwiML = string(data)
	}
	if err != nil {
		rec.Err = err.Error()
	}
	return resp.StatusCode, data, resp.Header.Get("Content-Type"), err
}

// deliver sends an asynchronous callback with the callback faults applied:
// late (delayed, delivered apart from the call's other callbacks),
// duplicated, and retried on connection errors and 5xx.
func (s *Sim) deliver(ob *outbound) {
	if ob.token == "" {
		ob.token = s.newSID("ID")
	}
	s.mu.Lock()
	f := s.faults
	s.mu.Unlock()
	late := s.roll(f.LateCallback)
	if late {
		if !s.sleep(s.scaled(f.LateCallbackDelay)) {
			return
		}
	}
	s.deliverRetrying(ob, late, false)
	if s.roll(f.DuplicateCallback) {
		s.deliverRetrying(ob, late, true)
	}
}

func (s *Sim) deliverRetrying(ob *outbound, late, dup bool) {
	retries := max(s.opts.CallbackRetries, 0)
	for attempt := 1; ; attempt++ {
		if s.ctx.Err() != nil {
			return
		}
		status, _, _, err := s.send(s.ctx, ob, attempt, dup, late)
		if err == nil && status < 500 {
			return
		}
		if attempt > retries {
			s.log.Warn("callback given up", "kind", ob.kind, "call_sid", ob.callSid, "status", status, "err", err)
			return
		}
		if !s.sleep(s.scaled(s.opts.CallbackBackoff << (attempt - 1))) {
			return
		}
	}
}

// sleep waits d of real time; false when the simulator closed meanwhile.
func (s *Sim) sleep(d time.Duration) bool {
	if d <= 0 {
		return s.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// runStatusQueue delivers a call's status callbacks one after the other, in
// order, except that the OutOfOrderCallback fault holds one back until the
// next has been delivered, and late ones go on their own. It closes
// c.finished when the call has ended and everything is delivered.
func (s *Sim) runStatusQueue(c *call) {
	defer close(c.finished)
	var held *outbound
	for ob := range c.cbq {
		s.mu.Lock()
		f := s.faults
		s.mu.Unlock()
		if s.roll(f.LateCallback) {
			ob := ob
			c.lateWG.Add(1)
			s.goTracked(func() {
				defer c.lateWG.Done()
				if s.sleep(s.scaled(f.LateCallbackDelay)) {
					s.deliverRetrying(ob, true, false)
					if s.roll(f.DuplicateCallback) {
						s.deliverRetrying(ob, true, true)
					}
				}
			})
			continue
		}
		if held == nil && s.roll(f.OutOfOrderCallback) {
			held = ob
			continue
		}
		s.deliverRetrying(ob, false, false)
		if s.roll(f.DuplicateCallback) {
			s.deliverRetrying(ob, false, true)
		}
		if held != nil {
			s.deliverRetrying(held, false, false)
			held = nil
		}
	}
	if held != nil {
		s.deliverRetrying(held, false, false)
	}
	c.lateWG.Wait()
}
