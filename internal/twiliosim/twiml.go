package twiliosim

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// node is one TwiML element.
type node struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []node     `xml:",any"`
}

func (n node) attr(name string) (string, bool) {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

func (n node) attrOr(name, def string) string {
	if v, ok := n.attr(name); ok {
		return v
	}
	return def
}

func (n node) seconds(name string, def int) time.Duration {
	v, ok := n.attr(name)
	if !ok {
		return time.Duration(def) * time.Second
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(f * float64(time.Second))
}

// parseTwiML parses a TwiML document: a <Response> root.
func parseTwiML(data []byte) (node, error) {
	var root node
	if len(bytes.TrimSpace(data)) == 0 {
		return node{XMLName: xml.Name{Local: "Response"}}, nil
	}
	if err := xml.Unmarshal(data, &root); err != nil {
		return node{}, err
	}
	if root.XMLName.Local != "Response" {
		return node{}, fmt.Errorf("root element is <%s>, not <Response>", root.XMLName.Local)
	}
	return root, nil
}

// docSource is the next TwiML document to fetch.
type docSource struct {
	kind     string // voice, action, redirect
	target   target
	params   url.Values
	fallback bool
}

func (s *Sim) notice(c *call, code int, msg, u string) {
	s.log.Warn("twiml error", "call_sid", c.sid, "code", code, "msg", msg)
	s.mu.Lock()
	s.notifications = append(s.notifications, Notification{Time: time.Now(), CallSid: c.sid, Code: code, Message: msg, URL: u})
	s.mu.Unlock()
}

// fetchDoc requests (or parses inline) a TwiML document. The returned URL
// is the document's, for resolving relative action URLs.
func (s *Sim) fetchDoc(c *call, src docSource) (node, string, error) {
	if src.target.url == "" {
		doc, err := parseTwiML([]byte(src.target.twiml))
		if err != nil {
			s.notice(c, 12100, "Document parse failure: "+err.Error(), "")
			return node{}, "", errAppError
		}
		return doc, "", nil
	}
	s.mu.Lock()
	answeredBy := c.answeredBy
	s.mu.Unlock()
	p := s.baseParams(c, "in-progress")
	if answeredBy != "" && !c.asyncAMD {
		p.Set("AnsweredBy", answeredBy)
	}
	for k, vs := range src.params {
		p[k] = vs
	}
	ob := &outbound{kind: src.kind, callSid: c.sid, method: src.target.method, url: src.target.url, params: p, seq: -1}
	status, body, ctype, err := s.send(s.ctx, ob, 1, false, false)
	if s.ctx.Err() != nil {
		return node{}, "", errShutdown
	}
	if err != nil {
		s.notice(c, 11205, "HTTP connection failure: "+err.Error(), src.target.url)
		return node{}, "", errAppError
	}
	if status < 200 || status >= 300 {
		s.notice(c, 11200, fmt.Sprintf("HTTP retrieval failure: status %d", status), src.target.url)
		return node{}, "", errAppError
	}
	if mt, _, _ := mime.ParseMediaType(ctype); ctype != "" && !strings.Contains(mt, "xml") && mt != "text/html" && mt != "text/plain" {
		s.notice(c, 12300, "Invalid Content-Type: "+ctype, src.target.url)
		return node{}, "", errAppError
	}
	doc, err := parseTwiML(body)
	if err != nil {
		s.notice(c, 12100, "Document parse failure: "+err.Error(), src.target.url)
		return node{}, "", errAppError
	}
	return doc, src.target.url, nil
}

// runTwiML runs the call's TwiML, following actions and redirects, until
// the document ends, something hangs up or the call is ended.
func (s *Sim) runTwiML(c *call) {
	s.mu.Lock()
	src := docSource{kind: "voice", target: target{url: c.url, method: c.method, twiml: c.twiml}}
	s.mu.Unlock()
	for docs := 0; ; docs++ {
		if docs >= 200 {
			s.notice(c, 12400, "Too many TwiML documents in one call (redirect loop?)", src.target.url)
			return
		}
		if err := s.wait(c, 0); err != nil {
			if se, ok := isStop(err); ok && se.to != nil {
				src = docSource{kind: "redirect", target: *se.to}
				continue
			}
			return
		}
		doc, docURL, err := s.fetchDoc(c, src)
		if errors.Is(err, errAppError) && src.kind == "voice" && !src.fallback && c.fallbackURL != "" {
			src = docSource{kind: "voice", target: target{url: c.fallbackURL, method: c.fallbackMethod}, fallback: true}
			continue
		}
		if err != nil {
			return
		}
		next, err := s.exec(c, doc.Children, docURL)
		if err != nil {
			if se, ok := isStop(err); ok && se.to != nil {
				src = docSource{kind: "redirect", target: *se.to}
				continue
			}
			return
		}
		if next == nil {
			return // end of document: Twilio hangs up
		}
		src = *next
	}
}

func resolveURL(base, ref string) (string, error) {
	if ref == "" {
		if base == "" {
			return "", errors.New("no action URL and no document URL to default to")
		}
		return base, nil
	}
	r, err := url.Parse(strings.TrimSpace(ref))
	if err != nil {
		return "", err
	}
	if r.IsAbs() {
		return r.String(), nil
	}
	if base == "" {
		return "", fmt.Errorf("relative URL %q in inline TwiML", ref)
	}
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	return b.ResolveReference(r).String(), nil
}

// exec runs verbs. It returns the next document to fetch (an action or a
// redirect), nil at the end of the document, or an interruption.
func (s *Sim) exec(c *call, verbs []node, docURL string) (*docSource, error) {
	for _, v := range verbs {
		if err := s.wait(c, 0); err != nil {
			return nil, err
		}
		switch v.XMLName.Local {
		case "Say":
			if err := s.wait(c, speechDuration(v.Text)*time.Duration(loops(v))); err != nil {
				return nil, err
			}
		case "Play":
			if err := s.wait(c, 3*time.Second*time.Duration(loops(v))); err != nil {
				return nil, err
			}
		case "Pause":
			if err := s.wait(c, v.seconds("length", 1)); err != nil {
				return nil, err
			}
		case "Gather":
			next, err := s.gather(c, v, docURL)
			if err != nil || next != nil {
				return next, err
			}
		case "Record":
			next, err := s.record(c, v, docURL)
			if err != nil || next != nil {
				return next, err
			}
		case "Redirect":
			u, err := resolveURL(docURL, strings.TrimSpace(v.Text))
			if err != nil || strings.TrimSpace(v.Text) == "" {
				s.notice(c, 11100, "Invalid <Redirect> URL", v.Text)
				return nil, errAppError
			}
			return &docSource{kind: "redirect", target: target{url: u, method: methodOr(v.attrOr("method", ""), "POST")}}, nil
		case "Hangup", "Reject":
			return nil, errHangupVerb
		default:
			s.notice(c, 12200, "Schema validation warning: the simulator does not run <"+v.XMLName.Local+">; skipped", docURL)
		}
	}
	return nil, nil
}

func loops(v node) int {
	n, err := strconv.Atoi(v.attrOr("loop", "1"))
	if err != nil || n < 1 {
		return 1 // loop="0" (forever) is cut to once
	}
	return min(n, 10)
}

func containsWord(list, word string) bool {
	for _, f := range strings.Fields(list) {
		if strings.EqualFold(f, word) {
			return true
		}
	}
	return false
}

// gather runs a <Gather>: its prompts, then the callee's next Input.
func (s *Sim) gather(c *call, v node, docURL string) (*docSource, error) {
	action, err := resolveURL(docURL, v.attrOr("action", ""))
	if err != nil {
		s.notice(c, 11100, "Invalid <Gather> action: "+err.Error(), docURL)
		return nil, errAppError
	}
	method := methodOr(v.attrOr("method", ""), "POST")
	inputs := v.attrOr("input", "dtmf")
	timeout := v.seconds("timeout", 5)
	numDigits, _ := strconv.Atoi(v.attrOr("numDigits", "0"))
	finishOnKey := v.attrOr("finishOnKey", "#")
	onEmpty := strings.EqualFold(v.attrOr("actionOnEmptyResult", ""), "true")

	var in Input
	if c.gathers < len(c.scenario.Inputs) {
		in = c.scenario.Inputs[c.gathers]
	}
	c.gathers++
	delay := in.Delay
	if delay == 0 {
		delay = time.Second
	}
	if in.Hangup {
		// The callee hangs up Delay into the menu, usually during the prompt.
		s.addInput(c, "hangup")
		if at := time.Now().Add(s.scaled(delay)); c.hangupAt.IsZero() || at.Before(c.hangupAt) {
			c.hangupAt = at
		}
	}
	for _, p := range v.Children {
		switch p.XMLName.Local {
		case "Say", "Play", "Pause":
			if _, err := s.exec(c, []node{p}, docURL); err != nil {
				return nil, err
			}
		}
	}
	if in.Hangup {
		return nil, errCalleeHangup
	}
	params := url.Values{}
	params.Set("msg", "Gather End")
	switch {
	case in.Digits != "" && containsWord(inputs, "dtmf"):
		if err := s.wait(c, delay+time.Duration(len(in.Digits))*300*time.Millisecond); err != nil {
			return nil, err
		}
		digits, finished := in.Digits, ""
		if i := strings.IndexAny(digits, finishOnKey); finishOnKey != "" && i >= 0 {
			finished, digits = digits[i:i+1], digits[:i]
		}
		if numDigits > 0 && len(digits) > numDigits {
			digits = digits[:numDigits]
		}
		if finished == "" && (numDigits == 0 || len(digits) < numDigits) {
			// No finishing key and not enough digits: Twilio waits out the
			// timeout after the last digit.
			if err := s.wait(c, timeout); err != nil {
				return nil, err
			}
		}
		if digits == "" && !onEmpty {
			s.addInput(c, "silence")
			return nil, nil
		}
		s.addInput(c, "digits:"+digits)
		params.Set("Digits", digits)
		params.Set("FinishedOnKey", finished)
	case in.Speech != "" && containsWord(inputs, "speech"):
		if err := s.wait(c, delay+speechDuration(in.Speech)+time.Second); err != nil {
			return nil, err
		}
		conf := in.Confidence
		if conf == 0 {
			conf = 0.9
		}
		s.addInput(c, "speech:"+in.Speech)
		params.Set("SpeechResult", in.Speech)
		params.Set("Confidence", strconv.FormatFloat(conf, 'f', 8, 64))
		params.Set("Language", v.attrOr("language", "en-US"))
	default:
		if err := s.wait(c, timeout); err != nil {
			return nil, err
		}
		s.addInput(c, "silence")
		if !onEmpty {
			return nil, nil // Twilio goes on with the next verb
		}
	}
	return &docSource{kind: "action", target: target{url: action, method: method}, params: params}, nil
}

// record runs a <Record>: the callee's message, the recording, its status
// and transcription callbacks, and the action request.
func (s *Sim) record(c *call, v node, docURL string) (*docSource, error) {
	action, err := resolveURL(docURL, v.attrOr("action", ""))
	if err != nil {
		s.notice(c, 11100, "Invalid <Record> action: "+err.Error(), docURL)
		return nil, errAppError
	}
	method := methodOr(v.attrOr("method", ""), "POST")
	timeout := v.seconds("timeout", 5)
	maxLength := v.seconds("maxLength", 3600)
	finishOnKey := v.attrOr("finishOnKey", "1234567890*#")
	transcribeCB := v.attrOr("transcribeCallback", "")
	transcribe := strings.EqualFold(v.attrOr("transcribe", ""), "true") || transcribeCB != ""
	sc := c.scenario

	if !strings.EqualFold(v.attrOr("playBeep", "true"), "false") {
		if err := s.wait(c, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if sc.Message == "" {
		// Silence: the recording is empty, so Twilio skips the action and
		// goes on with the next verb.
		if err := s.wait(c, timeout); err != nil {
			return nil, err
		}
		s.addInput(c, "record:empty")
		return nil, nil
	}
	length := min(sc.messageLength(), maxLength)
	if err := s.wait(c, length); err != nil {
		return nil, err
	}
	digits := ""
	switch {
	case sc.HangupAfterRecord:
		digits = "hangup"
	case sc.RecordFinishKey != "" && finishOnKey != "" && strings.Contains(finishOnKey, sc.RecordFinishKey):
		digits = sc.RecordFinishKey
	default:
		if err := s.wait(c, timeout); err != nil { // silence ends the recording
			return nil, err
		}
	}
	secs := max(int(length.Round(time.Second)/time.Second), 1)
	rec := &Recording{Sid: s.newSID("RE"), CallSid: c.sid, Duration: secs, Created: time.Now()}
	rec.URL = s.url + apiPrefix + s.opts.AccountSID + "/Recordings/" + rec.Sid
	transcriptOK := transcribe && !sc.TranscriptionFails && secs <= 120
	if transcriptOK {
		rec.Transcription = sc.Message
	}
	if transcribe {
		rec.TranscriptionSid = s.newSID("TR")
	}
	s.mu.Lock()
	s.recordings[rec.Sid] = rec
	s.mu.Unlock()
	s.addInput(c, "record:"+rec.Sid)

	if cb := v.attrOr("recordingStatusCallback", ""); cb != "" {
		events := v.attrOr("recordingStatusCallbackEvent", "completed")
		if cbURL, err := resolveURL(docURL, cb); err == nil && containsWord(strings.ReplaceAll(events, ",", " "), "completed") {
			p := url.Values{}
			p.Set("AccountSid", s.opts.AccountSID)
			p.Set("CallSid", c.sid)
			p.Set("RecordingSid", rec.Sid)
			p.Set("RecordingUrl", rec.URL)
			p.Set("RecordingStatus", "completed")
			p.Set("RecordingDuration", strconv.Itoa(secs))
			p.Set("RecordingChannels", "1")
			p.Set("RecordingStartTime", time.Now().Add(-s.scaled(length)).UTC().Format(twilioTime))
			p.Set("RecordingSource", "RecordVerb")
			p.Set("ErrorCode", "0")
			ob := &outbound{kind: "recording", callSid: c.sid, method: methodOr(v.attrOr("recordingStatusCallbackMethod", ""), "POST"), url: cbURL, params: p, seq: -1}
			s.goTracked(func() {
				if s.sleep(s.scaled(time.Second)) {
					s.deliver(ob)
				}
			})
		}
	}
	if transcribeCB != "" {
		if cbURL, err := resolveURL(docURL, transcribeCB); err == nil {
			p := s.baseParams(c, "completed")
			trSid := rec.TranscriptionSid
			p.Set("TranscriptionSid", trSid)
			p.Set("TranscriptionType", "fast")
			p.Set("TranscriptionUrl", s.url+apiPrefix+s.opts.AccountSID+"/Transcriptions/"+trSid)
			p.Set("RecordingSid", rec.Sid)
			p.Set("RecordingUrl", rec.URL)
			p.Set("url", cbURL)
			p.Set("ForwardedFrom", "")
			if transcriptOK {
				p.Set("TranscriptionStatus", "completed")
				p.Set("TranscriptionText", sc.Message)
			} else {
				p.Set("TranscriptionStatus", "failed")
			}
			ob := &outbound{kind: "transcription", callSid: c.sid, method: "POST", url: cbURL, params: p, seq: -1}
			s.goTracked(func() {
				if s.sleep(s.scaled(15 * time.Second)) {
					s.deliver(ob)
				}
			})
		}
	}

	params := url.Values{}
	params.Set("RecordingUrl", rec.URL)
	params.Set("RecordingDuration", strconv.Itoa(secs))
	params.Set("RecordingSid", rec.Sid)
	if digits != "" {
		params.Set("Digits", digits)
	}
	next := &docSource{kind: "action", target: target{url: action, method: method}, params: params}
	if digits == "hangup" {
		// The callee is gone: Twilio still requests the action (with
		// CallStatus completed) but runs nothing it returns.
		p := s.baseParams(c, "completed")
		for k, vs := range params {
			p[k] = vs
		}
		_, _, _, _ = s.send(s.ctx, &outbound{kind: "action", callSid: c.sid, method: method, url: action, params: p, seq: -1}, 1, false, false)
		return nil, errCalleeHangup
	}
	return next, nil
}
