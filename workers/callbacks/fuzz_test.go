package callbacks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/language"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

// The fuzz targets' seed corpora run in every `go test`; `make
// fuzz-callbacks` fuzzes them for longer.

const seedSID = "CA0123456789abcdef0123456789abcdef"

// FuzzWebhookForms feeds arbitrary form bodies to every webhook's parser.
// A form is either refused with a form error or yields values within the
// documented bounds; a parsed status callback survives the journal's
// encoding unchanged.
func FuzzWebhookForms(f *testing.F) {
	for _, s := range []string{
		"CallSid=" + seedSID + "&CallStatus=completed&SequenceNumber=3&CallDuration=12&Timestamp=Mon%2C+02+Mar+2026+09%3A00%3A00+%2B0000&AnsweredBy=human",
		"CallSid=" + seedSID + "&CallStatus=ringing&SequenceNumber=1",
		"CallSid=" + seedSID + "&CallStatus=failed&SequenceNumber=2&ErrorCode=31005&ErrorMessage=Connection+error",
		"CallSid=" + seedSID + "&Digits=1",
		"CallSid=" + seedSID + "&SpeechResult=Yes%2C+please&Confidence=0.9",
		"CallSid=" + seedSID + "&SpeechResult=no+stop+calling+me",
		"CallSid=" + seedSID + "&RecordingSid=RE0123456789abcdef0123456789abcdef&RecordingUrl=https%3A%2F%2Fapi.twilio.com%2Fr&RecordingDuration=7&RecordingStatus=completed&Digits=%23",
		"CallSid=" + seedSID + "&RecordingSid=RE0123456789abcdef0123456789abcdef&TranscriptionStatus=completed&TranscriptionText=ring+twice",
		"CallSid=" + seedSID + "&AnsweredBy=machine_end_beep",
		"CallSid=CA1&CallStatus=%ff&SequenceNumber=-1",
		"CallSid=" + seedSID + "&CallStatus=completed&SequenceNumber=99999999999999999999",
		"Digits=1%00&SpeechResult=%C3%28",
	} {
		for kind := range 7 {
			f.Add(uint8(kind), s)
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		checkErr := func(err error) bool {
			if err == nil {
				return true
			}
			if _, ok := err.(*formError); !ok {
				t.Fatalf("parse error of type %T: %v", err, err)
			}
			return false
		}
		switch kind % 7 {
		case 0:
			u, err := parseStatus(form)
			if !checkErr(err) {
				return
			}
			if !callStatuses[u.Status] || u.Seq < 0 || u.Seq > maxSeq || !callSIDRE.MatchString(u.CallSID) ||
				u.DurationSec < 0 || len(u.ErrorMessage) > maxErrorMessage || (u.AnsweredBy != "" && !answeredByValues[u.AnsweredBy]) {
				t.Fatalf("out-of-bounds status update %+v", u)
			}
			e := entry{Kind: kindStatus, Attempt: "a", Status: u}
			vals, err := e.values()
			if err != nil {
				t.Fatal(err)
			}
			m := redis.XMessage{ID: "1-0", Values: map[string]any{}}
			for i := 0; i+1 < len(vals); i += 2 {
				m.Values[vals[i]] = vals[i+1]
			}
			back, err := decodeEntry(m)
			if err != nil {
				t.Fatalf("journal round trip: %v", err)
			}
			want := u
			if !want.At.IsZero() {
				want.At = want.At.Truncate(time.Millisecond)
			}
			if back.Status != want {
				t.Fatalf("journal round trip changed %+v into %+v", want, back.Status)
			}
		case 1:
			v, err := parseVoice(form)
			if checkErr(err) && (!callSIDRE.MatchString(v.CallSID) || (v.AnsweredBy != "" && !answeredByValues[v.AnsweredBy])) {
				t.Fatalf("voice form %+v", v)
			}
		case 2:
			g, err := parseGather(form)
			if !checkErr(err) {
				return
			}
			if len(g.Digits) > maxDigits || strings.Trim(g.Digits, "0123456789*#") != "" || !utf8.ValidString(g.Speech) {
				t.Fatalf("gather form %+v", g)
			}
			codes := language.Codes()
			if o, ok := choose(g, language.Builtin(codes[len(g.Speech)%len(codes)])); ok && !slices.Contains(language.Options, o) {
				t.Fatalf("option %q", o)
			}
		case 3, 4:
			r, err := parseRecording(form, kind%7 == 4)
			if !checkErr(err) {
				return
			}
			if !recordingSIDRE.MatchString(r.SID) || r.DurationSec < 0 || (r.Status == "completed" || r.Status == "") && checkURL("u", r.URL) != nil {
				t.Fatalf("recording form %+v", r)
			}
		case 5:
			tr, err := parseTranscription(form)
			if checkErr(err) && (len(tr.Text) > maxTranscript || !utf8.ValidString(tr.Text) || !recordingSIDRE.MatchString(tr.RecordingSID)) {
				t.Fatalf("transcription form %+v", tr)
			}
		case 6:
			a, err := parseAMD(form)
			if checkErr(err) && !answeredByValues[a.AnsweredBy] {
				t.Fatalf("AMD form %+v", a)
			}
		}
	})
}

// callModel is the store's status rules (workers/store ApplyCallStatus) in
// memory: final states are never left, the state only moves forward, and a
// sequence number at or below the last one applied changes nothing.
type callModel struct {
	status  string
	lastSeq int64
}

func statusRank(s string) int {
	switch s {
	case "queued", "initiated":
		return 3
	case "ringing":
		return 4
	case "in-progress", "answered":
		return 5
	}
	return 9
}

func (m *callModel) apply(u store.StatusUpdate) {
	if (m.status != "" && terminalStatus(m.status)) || (m.status != "" && statusRank(u.Status) < statusRank(m.status)) || u.Seq <= m.lastSeq {
		return
	}
	m.status, m.lastSeq = u.Status, u.Seq
}

var fuzzStatuses = []string{"queued", "initiated", "ringing", "in-progress", "answered", "completed", "busy", "no-answer", "failed", "canceled"}

// FuzzStatusTransitions checks the drainer's coalescing against the store's
// rules. A call's callbacks as Twilio numbers them (sequence following the
// call's progress, the final one last), delivered in any order, duplicated
// or not, and split into any batches, end in the same state as when applied
// one by one in sequence order. For arbitrary callbacks, a batch holding a
// final status always writes a final status, and nothing moves a call out
// of a final state.
func FuzzStatusTransitions(f *testing.F) {
	f.Add([]byte{5, 0, 1, 2, 3}, []byte{3, 2, 1, 0, 2}, uint8(2))
	f.Add([]byte{6}, []byte{0, 0, 1, 1}, uint8(1))
	f.Add([]byte{7, 1, 2}, []byte{2, 0, 1}, uint8(0))
	f.Add([]byte{8, 0, 2, 3, 4}, []byte{9, 9, 9, 1, 4, 0}, uint8(3))
	f.Add([]byte{9, 5, 5, 5}, []byte{}, uint8(7))
	f.Fuzz(func(t *testing.T, path, order []byte, batch uint8) {
		if len(path) == 0 || len(path) > 16 || len(order) > 64 {
			return
		}
		// The call's callbacks, numbered in order, the final one last.
		var calls []store.StatusUpdate
		final := fuzzStatuses[5+int(path[0])%5]
		rank := 0
		for _, p := range path[1:] {
			s := fuzzStatuses[int(p)%5]
			if statusRank(s) < rank {
				continue
			}
			rank = statusRank(s)
			calls = append(calls, store.StatusUpdate{Status: s, Seq: int64(len(calls)), CallSID: seedSID})
		}
		calls = append(calls, store.StatusUpdate{Status: final, Seq: int64(len(calls)), CallSID: seedSID})
		var inOrder callModel
		inOrder.lastSeq = -1
		for _, u := range calls {
			inOrder.apply(u)
		}
		if inOrder.status != final {
			t.Fatalf("in-order application ended %q, want %q", inOrder.status, final)
		}
		// Delivered in the order the fuzzer picks, each callback at least once.
		delivered := append([]store.StatusUpdate(nil), calls...)
		for _, o := range order {
			delivered = append(delivered, calls[int(o)%len(calls)])
		}
		for i, o := range order {
			j := int(o) % len(delivered)
			k := i % len(delivered)
			delivered[j], delivered[k] = delivered[k], delivered[j]
		}
		size := int(batch)%len(delivered) + 1
		var coalesced callModel
		coalesced.lastSeq = -1
		for start := 0; start < len(delivered); start += size {
			b := delivered[start:min(start+size, len(delivered))]
			best := b[0]
			hasFinal := false
			for _, u := range b {
				hasFinal = hasFinal || terminalStatus(u.Status)
				if supersedes(u, best) {
					best = u
				}
			}
			if hasFinal && !terminalStatus(best.Status) {
				t.Fatalf("batch %+v coalesced to non-final %+v", b, best)
			}
			wasFinal := coalesced.status != "" && terminalStatus(coalesced.status)
			before := coalesced
			coalesced.apply(best)
			if wasFinal && coalesced != before {
				t.Fatalf("a final state moved: %+v -> %+v", before, coalesced)
			}
		}
		if coalesced != inOrder {
			t.Fatalf("coalesced %+v, in order %+v (delivered %v, batches of %d)", coalesced, inOrder, delivered, size)
		}
	})
}

// FuzzWebhookHandler sends arbitrary requests, signed or not, to the real
// server (Redis and FerretDB behind it, the background loops stopped). It
// answers only with the documented status codes; an unsigned or refused
// request writes nothing; an accepted status callback is journaled once.
func FuzzWebhookHandler(f *testing.F) {
	h := newHarness(f, harnessOpts{noRun: true})
	ctx := context.Background()
	a := h.createAttempt("+14155550177")
	a, err := h.st.Claim(ctx, a.ID, "w", time.Minute)
	if err != nil {
		f.Fatal(err)
	}
	if err := h.srv.Prime(ctx, a); err != nil {
		f.Fatal(err)
	}
	good := refQuery(a.ID, a.Fence)
	paths := []string{callurls.StatusPath, callurls.VoicePath, callurls.GatherPath, callurls.RecordPath,
		callurls.RecordingPath, callurls.TranscriptionPath, callurls.AMDPath, "/twilio/other"}
	for i := range paths {
		f.Add(uint8(i), good, "CallSid="+seedSID+"&CallStatus=ringing&SequenceNumber=1", true, "POST")
		f.Add(uint8(i), good, "CallSid="+seedSID+"&CallStatus=ringing&SequenceNumber=1", false, "POST")
	}
	f.Add(uint8(0), refQuery(testservices.UUID()+"-1", 1), "CallSid="+seedSID+"&CallStatus=completed&SequenceNumber=3", true, "POST")
	f.Add(uint8(0), "attempt=../../etc&fence=1", "CallSid="+seedSID+"&CallStatus=completed&SequenceNumber=3", true, "POST")
	f.Add(uint8(2), good, "CallSid="+seedSID+"&Digits=7", true, "POST")
	f.Add(uint8(2), good, "CallSid="+seedSID+"&SpeechResult=%E2%80%AE", true, "POST")
	f.Add(uint8(0), good, "CallSid="+seedSID+"&CallStatus=completed&SequenceNumber=3", true, "PUT")
	f.Add(uint8(0), good, "%zz", true, "POST")
	f.Add(uint8(1), good, strings.Repeat("A", 70<<10), true, "POST")

	allowed := map[int]bool{200: true, 204: true, 400: true, 403: true, 404: true, 405: true, 413: true, 415: true}
	f.Fuzz(func(t *testing.T, p uint8, query, body string, sign bool, method string) {
		path := paths[int(p)%len(paths)]
		req, err := http.NewRequest(method, h.ts.URL+path+"?"+query, strings.NewReader(body))
		if err != nil || req.URL.Path != path || req.URL.RawQuery != query {
			return // not a request a client could send
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if sign {
			form, err := url.ParseQuery(body)
			if err == nil {
				req.Header.Set("X-Twilio-Signature", twiliosim.Sign(h.sim.AuthToken(), publicBase+path+"?"+query, form))
			}
		}
		before, _ := h.rdb.XLen(ctx, JournalKey).Result()
		was, _ := h.st.Get(ctx, a.ID)
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, req)
		code := rec.Code
		if !allowed[code] {
			t.Fatalf("%s %s?%s %q: status %d", method, path, query, body, code)
		}
		after, _ := h.rdb.XLen(ctx, JournalKey).Result()
		now, _ := h.st.Get(ctx, a.ID)
		if code >= 400 || !sign {
			if after != before || !now.UpdatedAt.Equal(was.UpdatedAt) {
				t.Fatalf("%s %s?%s %q answered %d but wrote (journal %d->%d)", method, path, query, body, code, before, after)
			}
		}
		if !sign && code < 400 {
			t.Fatalf("unsigned request answered %d", code)
		}
		if path == callurls.StatusPath && code == http.StatusNoContent && after != before+1 {
			t.Fatalf("accepted status callback journaled %d times", after-before)
		}
		if after > 1000 {
			h.rdb.Del(ctx, JournalKey)
		}
	})
}
