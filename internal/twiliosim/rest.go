package twiliosim

import (
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nyaruka/phonenumbers"

	"github.com/delauto/delauto/internal/phone"
)

const (
	apiVersion = "2010-04-01"
	apiPrefix  = "/2010-04-01/Accounts/"
	// twilioTime is the RFC 2822 layout Twilio uses in JSON and callbacks.
	twilioTime = "Mon, 02 Jan 2006 15:04:05 -0700"
)

// Twilio error codes the simulator answers with.
const (
	CodeInvalidParameter  = 20001 // generic invalid parameter (approximation)
	CodeAuthenticate      = 20003
	CodeNotFound          = 20404
	CodeTooManyRequests   = 20429
	CodeInternalError     = 20500
	CodeUnavailable       = 20503
	CodeToRequired        = 21201
	CodeURLRequired       = 21205
	CodeFromNotVerified   = 21210
	CodeInvalidTo         = 21211
	CodeInvalidFrom       = 21212
	CodeFromRequired      = 21213
	CodeToUnreachable     = 21214
	CodeInvalidAppSid     = 21218
	CodeCallNotInProgress = 21220
	CodeSMSBodyRequired   = 21602
	CodeSMSFromRequired   = 21603
	CodeSMSToRequired     = 21604
	CodeSMSFromNotOwned   = 21606
	CodeSMSBodyTooLong    = 21617
)

func (s *Sim) routes() http.Handler {
	mux := http.NewServeMux()
	calls := apiPrefix + "{account}/Calls"
	mux.HandleFunc("POST "+calls+".json", s.api(EndpointCreateCall, s.createCall))
	mux.HandleFunc("GET "+calls+".json", s.api(EndpointListCalls, s.listCalls))
	mux.HandleFunc("GET "+calls+"/{call}", s.api(EndpointFetchCall, s.fetchCall))
	mux.HandleFunc("POST "+calls+"/{call}", s.api(EndpointUpdateCall, s.updateCall))
	mux.HandleFunc("DELETE "+calls+"/{call}", s.api(EndpointDeleteCall, s.deleteCall))
	mux.HandleFunc("POST "+apiPrefix+"{account}/Messages.json", s.api(EndpointCreateMessage, s.createMessage))
	mux.HandleFunc("GET "+apiPrefix+"{account}/Messages.json", s.api(EndpointListMessages, s.listMessages))
	mux.HandleFunc("GET "+apiPrefix+"{account}/Recordings/{rec}", s.getRecording)
	mux.HandleFunc("DELETE "+apiPrefix+"{account}/Recordings/{rec}", s.api(EndpointDeleteRecording, s.deleteRecording))
	mux.HandleFunc("GET "+apiPrefix+"{account}/Recordings/{rec}/Transcriptions.json", s.api(EndpointDeleteRecording, s.listRecordingTranscriptions))
	mux.HandleFunc("DELETE "+apiPrefix+"{account}/Transcriptions/{tr}", s.api(EndpointDeleteTranscription, s.deleteTranscription))
	mux.HandleFunc("DELETE "+apiPrefix+"{account}/Recordings/{rec}/Transcriptions/{tr}", s.api(EndpointDeleteTranscription, s.deleteTranscription))
	mux.HandleFunc("GET /sim/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found")
	})
	return mux
}

// apiHandler serves one REST operation; fault is FaultNone or an
// AfterCreate kind the handler must apply. It returns the HTTP status sent
// (0 for none).
type apiHandler func(w http.ResponseWriter, r *http.Request, fault FaultKind) int

// api wraps a REST operation with Twilio's front door: concurrency limit,
// latency, Basic auth, account check and fault injection, and records it.
func (s *Sim) api(ep Endpoint, h apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n := s.inflight.Add(1)
		defer s.inflight.Add(-1)
		rec := RequestRecord{Time: time.Now(), Method: r.Method, Path: r.URL.Path, Endpoint: ep}
		rec.HTTPStatus, rec.Fault = s.serveAPI(w, r, ep, h, n)
		s.mu.Lock()
		if rec.Fault != FaultNone {
			s.faultCounts[rec.Fault]++
		}
		if !s.opts.Lean {
			s.requests = append(s.requests, rec)
		}
		s.mu.Unlock()
	}
}

func (s *Sim) serveAPI(w http.ResponseWriter, r *http.Request, ep Endpoint, h apiHandler, inflight int64) (int, FaultKind) {
	refuse := func(status, code int, fault FaultKind, write func()) (int, FaultKind) {
		write()
		if ep == EndpointCreateCall {
			_ = r.ParseForm()
			s.recordCreate(CreateRecord{Form: r.PostForm, HTTPStatus: status, Code: code, Fault: fault})
		}
		return status, fault
	}
	s.mu.Lock()
	f := s.faults
	s.mu.Unlock()
	if f.MaxConcurrent > 0 && inflight > int64(f.MaxConcurrent) {
		return refuse(http.StatusTooManyRequests, CodeTooManyRequests, FaultRateLimit, func() {
			writeError(w, http.StatusTooManyRequests, CodeTooManyRequests, "Too Many Requests")
		})
	}
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return 0, FaultNone
		case <-s.ctx.Done():
			t.Stop()
			return 0, FaultNone
		}
	}
	user, pass, ok := r.BasicAuth()
	if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(s.opts.AccountSID)) != 1 ||
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.AuthToken())) != 1 {
		return refuse(http.StatusUnauthorized, CodeAuthenticate, FaultNone, func() {
			w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
			writeError(w, http.StatusUnauthorized, CodeAuthenticate, "Authenticate")
		})
	}
	if r.PathValue("account") != s.opts.AccountSID {
		return refuse(http.StatusNotFound, CodeNotFound, FaultNone, func() {
			writeError(w, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found")
		})
	}
	s.mu.Lock()
	fault := s.nextFault(ep)
	s.mu.Unlock()
	switch fault {
	case FaultRateLimit:
		return refuse(http.StatusTooManyRequests, CodeTooManyRequests, fault, func() {
			writeError(w, http.StatusTooManyRequests, CodeTooManyRequests, "Too Many Requests")
		})
	case FaultServerError:
		return refuse(http.StatusInternalServerError, CodeInternalError, fault, func() {
			writeError(w, http.StatusInternalServerError, CodeInternalError, "An internal server error has occurred")
		})
	case FaultUnavailable:
		return refuse(http.StatusServiceUnavailable, CodeUnavailable, fault, func() {
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "Service Unavailable")
		})
	case FaultBadGateway:
		return refuse(http.StatusBadGateway, 0, fault, func() {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, badGatewayPage)
		})
	case FaultHangBeforeCreate:
		// Recorded before hanging, so tests see it while the client waits.
		refuse(0, 0, fault, func() {})
		s.hang(r)
		return 0, fault
	}
	return h(w, r, fault), fault
}

const badGatewayPage = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"

// hang blocks until the client gives up or the simulator closes.
func (s *Sim) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.ctx.Done():
	}
}

// apiError is Twilio's JSON error body.
type apiError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, apiError{Code: code, Message: msg, MoreInfo: fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), Status: status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Sim) recordCreate(rec CreateRecord) {
	rec.Time = time.Now()
	if rec.Form != nil {
		rec.To = rec.Form.Get("To")
		rec.From = rec.Form.Get("From")
		rec.AttemptID = attemptOf(rec.Form)
		if s.opts.Lean {
			rec.Form = nil
		}
	}
	s.mu.Lock()
	s.creates = append(s.creates, rec)
	s.mu.Unlock()
}

// attemptOf finds DelAuto's attempt id in the URLs of a create request.
func attemptOf(form url.Values) string {
	for _, k := range []string{"Url", "StatusCallback", "AsyncAmdStatusCallback"} {
		if u, err := url.Parse(form.Get(k)); err == nil {
			if a := u.Query().Get("attempt"); a != "" {
				return a
			}
		}
	}
	return ""
}

func validWebhookURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func validMethod(m string) bool {
	return m == "" || strings.EqualFold(m, "GET") || strings.EqualFold(m, "POST")
}

func methodOr(m, def string) string {
	if m == "" {
		return def
	}
	return strings.ToUpper(m)
}

func (s *Sim) createCall(w http.ResponseWriter, r *http.Request, fault FaultKind) int {
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "Unable to parse the request body: "+err.Error())
		return http.StatusBadRequest
	}
	form := r.PostForm
	fail := func(status, code int, msg string) int {
		writeError(w, status, code, msg)
		s.recordCreate(CreateRecord{Form: form, HTTPStatus: status, Code: code})
		return status
	}
	to, from := form.Get("To"), form.Get("From")
	switch {
	case to == "":
		return fail(400, CodeToRequired, "No 'To' number is specified")
	case from == "":
		return fail(400, CodeFromRequired, "No 'From' number is specified")
	case form.Get("ApplicationSid") != "" && form.Get("Url") == "" && form.Get("Twiml") == "":
		return fail(400, CodeInvalidAppSid, "ApplicationSid is not supported by the simulator: use Url or Twiml")
	case form.Get("Url") == "" && form.Get("Twiml") == "":
		return fail(400, CodeURLRequired, "Either a 'Url' or 'Twiml' parameter is required")
	case form.Get("Url") != "" && !validWebhookURL(form.Get("Url")):
		return fail(400, CodeURLRequired, "Url is not a valid URL")
	}
	for _, k := range []string{"StatusCallback", "FallbackUrl", "AsyncAmdStatusCallback"} {
		if v := form.Get(k); v != "" && !validWebhookURL(v) {
			return fail(400, CodeURLRequired, k+" is not a valid URL")
		}
	}
	for _, k := range []string{"Method", "FallbackMethod", "StatusCallbackMethod", "AsyncAmdStatusCallbackMethod"} {
		if !validMethod(form.Get(k)) {
			return fail(400, CodeInvalidParameter, k+" must be GET or POST")
		}
	}
	if err := phone.Validate(to); err != nil {
		return fail(400, CodeInvalidTo, "Invalid 'To' Phone Number: "+phone.Mask(to))
	}
	if err := phone.Validate(from); err != nil {
		return fail(400, CodeInvalidFrom, "Invalid 'From' Phone Number: "+phone.Mask(from))
	}
	if len(s.numbers) > 0 && !s.numbers[from] {
		return fail(400, CodeFromNotVerified, "The source phone number provided, "+phone.Mask(from)+", is not yet verified for your account. You may only make calls from phone numbers that you've verified or purchased from Twilio.")
	}
	timeout, err := intParam(form, "Timeout", 60)
	if err != nil {
		return fail(400, CodeInvalidParameter, err.Error())
	}
	timeout = min(max(timeout, 1), 600)
	timeLimit, err := intParam(form, "TimeLimit", 14400)
	if err != nil || timeLimit < 1 {
		return fail(400, CodeInvalidParameter, "TimeLimit must be a positive integer")
	}
	amd := form.Get("MachineDetection")
	if amd != "" && amd != "Enable" && amd != "DetectMessageEnd" {
		return fail(400, CodeInvalidParameter, "MachineDetection must be Enable or DetectMessageEnd")
	}
	asyncAMD := strings.EqualFold(form.Get("AsyncAmd"), "true")
	events := map[string]bool{"completed": true}
	for _, v := range form["StatusCallbackEvent"] {
		for _, e := range strings.Fields(v) {
			switch e {
			case "initiated", "ringing", "answered", "completed":
				events[e] = true
			default:
				return fail(400, CodeInvalidParameter, "StatusCallbackEvent "+e+" is not one of initiated, ringing, answered, completed")
			}
		}
	}

	now := time.Now()
	s.mu.Lock()
	sc := s.chooseScenario(to)
	s.mu.Unlock()
	if sc.CreateError != 0 {
		return fail(400, sc.CreateError, "The 'To' phone number: "+phone.Mask(to)+", is not currently reachable using the 'From' phone number: "+phone.Mask(from)+" via Twilio.")
	}
	c := &call{
		sid:            s.newSID("CA"),
		to:             to,
		from:           from,
		toCountry:      country(to),
		fromCountry:    country(from),
		attempt:        attemptOf(form),
		form:           form,
		scenario:       sc,
		created:        now,
		url:            form.Get("Url"),
		method:         methodOr(form.Get("Method"), "POST"),
		fallbackURL:    form.Get("FallbackUrl"),
		fallbackMethod: methodOr(form.Get("FallbackMethod"), "POST"),
		twiml:          form.Get("Twiml"),
		statusCB:       form.Get("StatusCallback"),
		statusCBMethod: methodOr(form.Get("StatusCallbackMethod"), "POST"),
		events:         events,
		timeout:        timeout,
		timeLimit:      timeLimit,
		amd:            amd,
		asyncAMD:       amd != "" && asyncAMD,
		amdURL:         form.Get("AsyncAmdStatusCallback"),
		amdMethod:      methodOr(form.Get("AsyncAmdStatusCallbackMethod"), "POST"),
		status:         "queued",
		updated:        now,
		notify:         make(chan struct{}, 1),
		ended:          make(chan struct{}),
		finished:       make(chan struct{}),
	}
	if c.url != "" {
		c.twiml = ""
	}
	if s.opts.Lean {
		c.form = nil
	}
	s.mu.Lock()
	slot := now
	if s.opts.CPS > 0 {
		if s.nextSlot.After(slot) {
			slot = s.nextSlot
		}
		s.nextSlot = slot.Add(time.Duration(float64(time.Second) / s.opts.CPS))
	}
	c.slot = slot
	s.calls[c.sid] = c
	s.callOrder = append(s.callOrder, c)
	body := s.callJSON(c)
	s.mu.Unlock()
	s.log.Info("call created", "call_sid", c.sid, "to", phone.Mask(to), "scenario", sc.Name, "attempt", c.attempt, "fault", string(fault))
	s.goTracked(func() { s.runCall(c) })

	rec := CreateRecord{Form: form, CallSid: c.sid, Fault: fault}
	switch fault {
	case FaultHangAfterCreate:
		s.recordCreate(rec) // before hanging, so tests see it while the client waits
		s.hang(r)
		return 0
	case FaultResetAfterCreate:
		s.recordCreate(rec)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return 0
			}
		}
		panic(http.ErrAbortHandler) // closes the connection without a response
	case FaultServerErrorAfterCreate:
		rec.HTTPStatus, rec.Code = 500, CodeInternalError
		s.recordCreate(rec)
		writeError(w, http.StatusInternalServerError, CodeInternalError, "An internal server error has occurred")
		return 500
	}
	rec.HTTPStatus = http.StatusCreated
	s.recordCreate(rec)
	writeJSON(w, http.StatusCreated, body)
	return http.StatusCreated
}

func intParam(form url.Values, name string, def int) (int, error) {
	v := form.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s must be an integer, got %q", name, v)
	}
	return n, nil
}

func twilioTimeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(twilioTime)
}

func formatNumber(n string) string {
	p, err := phonenumbers.Parse(n, "")
	if err != nil {
		return n
	}
	if p.GetCountryCode() == 1 {
		return phonenumbers.Format(p, phonenumbers.NATIONAL)
	}
	return n
}

// callJSON renders a call as Twilio does (numbers are strings). Called with
// s.mu held.
func (s *Sim) callJSON(c *call) map[string]any {
	uri := apiPrefix + s.opts.AccountSID + "/Calls/" + c.sid
	var duration, price, answeredBy any
	if !c.endedAt.IsZero() {
		duration = strconv.Itoa(c.duration)
		if c.status == "completed" {
			price = fmt.Sprintf("-%.5f", 0.014*math.Ceil(float64(c.duration)/60))
		}
	}
	if c.answeredBy != "" {
		answeredBy = c.answeredBy
	}
	queueTime := "0"
	if !c.started.IsZero() {
		queueTime = strconv.FormatInt(c.started.Sub(c.created).Milliseconds(), 10)
	}
	return map[string]any{
		"sid":              c.sid,
		"date_created":     c.created.UTC().Format(twilioTime),
		"date_updated":     c.updated.UTC().Format(twilioTime),
		"parent_call_sid":  nil,
		"account_sid":      s.opts.AccountSID,
		"to":               c.to,
		"to_formatted":     formatNumber(c.to),
		"from":             c.from,
		"from_formatted":   formatNumber(c.from),
		"phone_number_sid": "PN" + c.sid[2:],
		"status":           c.status,
		"start_time":       twilioTimeOrNil(c.started),
		"end_time":         twilioTimeOrNil(c.endedAt),
		"duration":         duration,
		"price":            price,
		"price_unit":       "USD",
		"direction":        "outbound-api",
		"answered_by":      answeredBy,
		"annotation":       nil,
		"api_version":      apiVersion,
		"forwarded_from":   nil,
		"group_sid":        nil,
		"caller_name":      nil,
		"queue_time":       queueTime,
		"trunk_sid":        nil,
		"uri":              uri + ".json",
		"subresource_uris": map[string]any{
			"notifications":                      uri + "/Notifications.json",
			"recordings":                         uri + "/Recordings.json",
			"payments":                           uri + "/Payments.json",
			"events":                             uri + "/Events.json",
			"siprec":                             uri + "/Siprec.json",
			"streams":                            uri + "/Streams.json",
			"transcriptions":                     uri + "/Transcriptions.json",
			"user_defined_message_subscriptions": uri + "/UserDefinedMessageSubscriptions.json",
			"user_defined_messages":              uri + "/UserDefinedMessages.json",
		},
	}
}

// timeFilter is one StartTime/EndTime condition of a list request.
type timeFilter struct {
	op       byte // '=', '>', '<'
	t        time.Time
	dateOnly bool
}

func parseTimeFilter(op byte, v string) (timeFilter, error) {
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return timeFilter{op: op, t: t, dateOnly: true}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return timeFilter{}, fmt.Errorf("%q is neither YYYY-MM-DD nor an RFC 3339 time", v)
	}
	return timeFilter{op: op, t: t}, nil
}

func (f timeFilter) match(at time.Time) bool {
	if at.IsZero() {
		return false // not started (or not ended) yet
	}
	at = at.UTC()
	switch f.op {
	case '>':
		return !at.Before(f.t)
	case '<':
		if f.dateOnly {
			return at.Before(f.t.AddDate(0, 0, 1))
		}
		return !at.After(f.t)
	default:
		y1, m1, d1 := at.Date()
		y2, m2, d2 := f.t.UTC().Date()
		return y1 == y2 && m1 == m2 && d1 == d2
	}
}

func (s *Sim) listCalls(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	q := r.URL.Query()
	var startF, endF []timeFilter
	for key, dst := range map[string]*[]timeFilter{"StartTime": &startF, "EndTime": &endF} {
		for _, op := range []byte{'=', '>', '<'} {
			k := key
			if op != '=' {
				k += string(op)
			}
			if v := q.Get(k); v != "" {
				f, err := parseTimeFilter(op, v)
				if err != nil {
					writeError(w, 400, CodeInvalidParameter, k+": "+err.Error())
					return 400
				}
				*dst = append(*dst, f)
			}
		}
	}
	to, from, status, parent := q.Get("To"), q.Get("From"), q.Get("Status"), q.Get("ParentCallSid")
	s.mu.Lock()
	var items []map[string]any
	var sids []string
	for i := len(s.callOrder) - 1; i >= 0; i-- { // newest first
		c := s.callOrder[i]
		if c.deleted || (to != "" && c.to != to) || (from != "" && c.from != from) || (status != "" && c.status != status) || parent != "" {
			continue
		}
		ok := true
		for _, f := range startF {
			ok = ok && f.match(c.started)
		}
		for _, f := range endF {
			ok = ok && f.match(c.endedAt)
		}
		if ok {
			items = append(items, s.callJSON(c))
			sids = append(sids, c.sid)
		}
	}
	s.mu.Unlock()
	return writePage(w, r, "calls", items, sids)
}

// writePage answers a list request with one page, as Twilio's 2010 API
// does: Page/PageSize/PageToken, next_page_uri carrying the filters.
func writePage(w http.ResponseWriter, r *http.Request, key string, items []map[string]any, sids []string) int {
	q := r.URL.Query()
	size, err := intParam(q, "PageSize", 50)
	if err != nil || size < 1 {
		writeError(w, 400, CodeInvalidParameter, "PageSize must be a positive integer")
		return 400
	}
	size = min(size, 1000)
	page, err := intParam(q, "Page", 0)
	if err != nil || page < 0 {
		writeError(w, 400, CodeInvalidParameter, "Page must be a non-negative integer")
		return 400
	}
	start := page * size
	if tok := q.Get("PageToken"); tok != "" {
		after := strings.TrimPrefix(tok, "PA")
		for i, sid := range sids {
			if sid == after {
				start = i + 1
				break
			}
		}
	}
	start = min(start, len(items))
	end := min(start+size, len(items))
	filters := url.Values{}
	for k, v := range q {
		if k != "Page" && k != "PageSize" && k != "PageToken" {
			filters[k] = v
		}
	}
	pageURI := func(p int, token string) string {
		v := url.Values{}
		for k, vs := range filters {
			v[k] = vs
		}
		v.Set("PageSize", strconv.Itoa(size))
		v.Set("Page", strconv.Itoa(p))
		if token != "" {
			v.Set("PageToken", token)
		}
		return r.URL.Path + "?" + v.Encode()
	}
	var next, prev any
	if end < len(items) {
		next = pageURI(page+1, "PA"+sids[end-1])
	}
	if page > 0 {
		prev = pageURI(page-1, "")
	}
	pageItems := items[start:end]
	if pageItems == nil {
		pageItems = []map[string]any{}
	}
	cur := r.URL.Path
	if r.URL.RawQuery != "" {
		cur += "?" + r.URL.RawQuery
	}
	writeJSON(w, http.StatusOK, map[string]any{
		key:                 pageItems,
		"end":               max(end-1, 0),
		"first_page_uri":    pageURI(0, ""),
		"next_page_uri":     next,
		"page":              page,
		"page_size":         size,
		"previous_page_uri": prev,
		"start":             start,
		"uri":               cur,
	})
	return http.StatusOK
}

func (s *Sim) lookupCall(w http.ResponseWriter, r *http.Request) *call {
	id, ok := strings.CutSuffix(r.PathValue("call"), ".json")
	s.mu.Lock()
	c := s.calls[id]
	deleted := c != nil && c.deleted
	s.mu.Unlock()
	if !ok || c == nil || deleted {
		writeError(w, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found")
		return nil
	}
	return c
}

// writeCall answers 200 with the call as it is now.
func (s *Sim) writeCall(w http.ResponseWriter, c *call) int {
	s.mu.Lock()
	body := s.callJSON(c)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
	return 200
}

func (s *Sim) fetchCall(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	c := s.lookupCall(w, r)
	if c == nil {
		return 404
	}
	return s.writeCall(w, c)
}

func (s *Sim) updateCall(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	c := s.lookupCall(w, r)
	if c == nil {
		return 404
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, 400, CodeInvalidParameter, "Unable to parse the request body: "+err.Error())
		return 400
	}
	f := r.PostForm
	status, newURL, twiml := f.Get("Status"), f.Get("Url"), f.Get("Twiml")
	if status != "" && status != "canceled" && status != "completed" {
		writeError(w, 400, CodeInvalidParameter, "Status must be canceled or completed")
		return 400
	}
	if newURL != "" && !validWebhookURL(newURL) {
		writeError(w, 400, CodeURLRequired, "Url is not a valid URL")
		return 400
	}
	if !validMethod(f.Get("Method")) {
		writeError(w, 400, CodeInvalidParameter, "Method must be GET or POST")
		return 400
	}
	if v := f.Get("StatusCallback"); v != "" && !validWebhookURL(v) {
		writeError(w, 400, CodeURLRequired, "StatusCallback is not a valid URL")
		return 400
	}
	s.mu.Lock()
	if !c.endedAt.IsZero() || c.endReq != "" {
		s.mu.Unlock()
		writeError(w, 400, CodeCallNotInProgress, "Call is not in-progress. Cannot redirect.")
		return 400
	}
	live := c.status == "in-progress"
	wantEnd := false
	if v := f.Get("StatusCallback"); v != "" {
		c.statusCB = v
	}
	if v := f.Get("StatusCallbackMethod"); v != "" {
		c.statusCBMethod = strings.ToUpper(v)
	}
	switch {
	case status == "completed" && live:
		c.endReq = "completed"
		wantEnd = true
	case status != "" && !live: // canceled or completed on a queued or ringing call
		c.endReq = "canceled"
		wantEnd = true
	case status == "canceled" && live:
		// Twilio: canceling an in-progress call has no effect.
	case newURL != "" || twiml != "":
		t := &target{url: newURL, method: methodOr(f.Get("Method"), "POST"), twiml: twiml}
		if newURL != "" {
			t.twiml = ""
		}
		if live {
			c.redirect = t
		} else {
			c.url, c.method, c.twiml = t.url, t.method, t.twiml
		}
	}
	if v := f.Get("TimeLimit"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			c.timeLimit = n
		}
	}
	c.updated = time.Now()
	s.mu.Unlock()
	c.poke()
	if wantEnd {
		select { // answer with the final status, as Twilio does
		case <-c.ended:
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		case <-s.ctx.Done():
		}
	}
	return s.writeCall(w, c)
}

func (s *Sim) deleteCall(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	c := s.lookupCall(w, r)
	if c == nil {
		return 404
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.endedAt.IsZero() {
		writeError(w, 400, CodeCallNotInProgress, "Cannot delete a call that has not ended")
		return 400
	}
	// The call stays in the records (attempt counts): deleting a call's log
	// at Twilio does not undo the call.
	c.deleted = true
	w.WriteHeader(http.StatusNoContent)
	return 204
}

func (s *Sim) createMessage(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	if err := r.ParseForm(); err != nil {
		writeError(w, 400, CodeInvalidParameter, "Unable to parse the request body: "+err.Error())
		return 400
	}
	f := r.PostForm
	to, from, svc, body := f.Get("To"), f.Get("From"), f.Get("MessagingServiceSid"), f.Get("Body")
	fail := func(code int, msg string) int {
		writeError(w, 400, code, msg)
		return 400
	}
	switch {
	case to == "":
		return fail(CodeSMSToRequired, "A 'To' phone number is required.")
	case from == "" && svc == "":
		return fail(CodeSMSFromRequired, "A 'From' phone number is required.")
	case body == "" && len(f["MediaUrl"]) == 0 && f.Get("ContentSid") == "":
		return fail(CodeSMSBodyRequired, "Message body is required.")
	case len([]rune(body)) > 1600:
		return fail(CodeSMSBodyTooLong, "The concatenated message body exceeds the 1600 character limit.")
	}
	if err := phone.Validate(to); err != nil {
		return fail(CodeInvalidTo, "The 'To' number "+phone.Mask(to)+" is not a valid phone number.")
	}
	if from != "" && len(s.numbers) > 0 && !s.numbers[from] {
		return fail(CodeSMSFromNotOwned, "The From phone number "+phone.Mask(from)+" is not a valid, SMS-capable inbound phone number or short code for your account.")
	}
	m := Message{Sid: s.newSID("SM"), To: to, From: from, MessagingServiceSid: svc, Body: body, Created: time.Now()}
	s.mu.Lock()
	s.messages = append(s.messages, m)
	s.mu.Unlock()
	s.log.Info("sms accepted", "message_sid", m.Sid, "to", phone.Mask(to))
	writeJSON(w, http.StatusCreated, s.messageJSON(m))
	return http.StatusCreated
}

func (s *Sim) messageJSON(m Message) map[string]any {
	segments := 1
	if n := len([]rune(m.Body)); n > 160 {
		segments = (n + 152) / 153
	}
	var svc any
	if m.MessagingServiceSid != "" {
		svc = m.MessagingServiceSid
	}
	uri := apiPrefix + s.opts.AccountSID + "/Messages/" + m.Sid
	return map[string]any{
		"sid":                   m.Sid,
		"account_sid":           s.opts.AccountSID,
		"api_version":           apiVersion,
		"body":                  m.Body,
		"date_created":          m.Created.UTC().Format(twilioTime),
		"date_updated":          m.Created.UTC().Format(twilioTime),
		"date_sent":             nil,
		"direction":             "outbound-api",
		"error_code":            nil,
		"error_message":         nil,
		"from":                  m.From,
		"messaging_service_sid": svc,
		"num_media":             "0",
		"num_segments":          strconv.Itoa(segments),
		"price":                 nil,
		"price_unit":            "USD",
		"status":                "queued",
		"to":                    m.To,
		"uri":                   uri + ".json",
		"subresource_uris":      map[string]any{"media": uri + "/Media.json"},
	}
}

func (s *Sim) listMessages(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	q := r.URL.Query()
	to, from := q.Get("To"), q.Get("From")
	s.mu.Lock()
	msgs := append([]Message(nil), s.messages...)
	s.mu.Unlock()
	var items []map[string]any
	var sids []string
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if (to != "" && m.To != to) || (from != "" && m.From != from) {
			continue
		}
		items = append(items, s.messageJSON(m))
		sids = append(sids, m.Sid)
	}
	return writePage(w, r, "messages", items, sids)
}

// getRecording serves a recording's metadata (.json) or a short silent WAV
// (any other form). Like Twilio's default, media needs no credentials.
func (s *Sim) getRecording(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("rec")
	sid := id
	if i := strings.IndexByte(id, '.'); i >= 0 {
		sid = id[:i]
	}
	s.mu.Lock()
	rec := s.recordings[sid]
	gone := rec == nil || rec.Deleted
	s.mu.Unlock()
	if gone {
		writeError(w, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	if strings.HasSuffix(id, ".json") {
		writeJSON(w, http.StatusOK, map[string]any{
			"sid": rec.Sid, "account_sid": s.opts.AccountSID, "call_sid": rec.CallSid,
			"duration": strconv.Itoa(rec.Duration), "status": "completed", "channels": 1,
			"source": "RecordVerb", "date_created": rec.Created.UTC().Format(twilioTime),
			"uri": apiPrefix + s.opts.AccountSID + "/Recordings/" + rec.Sid + ".json",
		})
		return
	}
	w.Header().Set("Content-Type", "audio/x-wav")
	_, _ = w.Write(silentWAV(8000)) // one second of 8 kHz 8-bit silence
}

// liveRecording returns the recording named by the path's {rec} (with or
// without .json) unless it is unknown or deleted. Called with s.mu held.
func (s *Sim) liveRecording(r *http.Request) *Recording {
	sid, _ := strings.CutSuffix(r.PathValue("rec"), ".json")
	rec := s.recordings[sid]
	if rec == nil || rec.Deleted {
		return nil
	}
	return rec
}

// deleteRecording deletes a recording and its transcription, as Twilio's
// DELETE Recordings/{sid} does; an unknown or deleted one is a 404.
func (s *Sim) deleteRecording(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	s.mu.Lock()
	rec := s.liveRecording(r)
	if rec != nil {
		rec.Deleted, rec.TranscriptionDeleted = true, true
	}
	s.mu.Unlock()
	return deleted(w, r, rec != nil)
}

// deleted answers a DELETE: 204 when found, else Twilio's 404.
func deleted(w http.ResponseWriter, r *http.Request, found bool) int {
	if !found {
		writeError(w, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found")
		return 404
	}
	w.WriteHeader(http.StatusNoContent)
	return 204
}

// listRecordingTranscriptions lists a recording's transcription (none or one).
func (s *Sim) listRecordingTranscriptions(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	s.mu.Lock()
	rec := s.liveRecording(r)
	var items []map[string]any
	var sids []string
	if rec != nil && rec.TranscriptionSid != "" && !rec.TranscriptionDeleted {
		items = append(items, s.transcriptionJSON(rec))
		sids = append(sids, rec.TranscriptionSid)
	}
	s.mu.Unlock()
	if rec == nil {
		writeError(w, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found")
		return 404
	}
	return writePage(w, r, "transcriptions", items, sids)
}

// transcriptionJSON is a transcription resource. Called with s.mu held.
func (s *Sim) transcriptionJSON(rec *Recording) map[string]any {
	status := "completed"
	if rec.Transcription == "" {
		status = "failed"
	}
	return map[string]any{
		"sid": rec.TranscriptionSid, "account_sid": s.opts.AccountSID, "recording_sid": rec.Sid,
		"status": status, "transcription_text": rec.Transcription, "type": "fast",
		"date_created": rec.Created.UTC().Format(twilioTime),
		"uri":          apiPrefix + s.opts.AccountSID + "/Transcriptions/" + rec.TranscriptionSid + ".json",
	}
}

// deleteTranscription deletes a transcription (under Transcriptions/ or
// under its recording); an unknown or deleted one is a 404.
func (s *Sim) deleteTranscription(w http.ResponseWriter, r *http.Request, _ FaultKind) int {
	sid, _ := strings.CutSuffix(r.PathValue("tr"), ".json")
	recSid, _ := strings.CutSuffix(r.PathValue("rec"), ".json")
	s.mu.Lock()
	var found *Recording
	for _, rec := range s.recordings {
		if rec.TranscriptionSid == sid && !rec.TranscriptionDeleted && (recSid == "" || rec.Sid == recSid) {
			found = rec
			break
		}
	}
	if found != nil {
		found.TranscriptionDeleted = true
	}
	s.mu.Unlock()
	return deleted(w, r, found != nil)
}

func silentWAV(samples int) []byte {
	b := make([]byte, 44+samples)
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+samples))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1)    // PCM
	binary.LittleEndian.PutUint16(b[22:], 1)    // mono
	binary.LittleEndian.PutUint32(b[24:], 8000) // sample rate
	binary.LittleEndian.PutUint32(b[28:], 8000) // byte rate
	binary.LittleEndian.PutUint16(b[32:], 1)    // block align
	binary.LittleEndian.PutUint16(b[34:], 8)    // bits per sample
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(samples))
	for i := 44; i < len(b); i++ {
		b[i] = 0x80
	}
	return b
}

// sortedKeys returns the keys of v in order (for signing).
func sortedKeys(v url.Values) []string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
