package callbacks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/workers/store"
)

// JournalKey is the Redis stream of callback writes not yet applied to
// MongoDB (the write-behind journal). Its hash tag keeps it in one Redis
// Cluster slot.
const JournalKey = "{delauto:callbacks}:journal"

// JournalGroup is the consumer group of the journal's writers (every
// worker process runs one consumer). Its name stays "drain", what existing
// Redis data knows it by.
const JournalGroup = "drain"

// Journal entry kinds.
const (
	kindStatus        = "s"
	kindAMD           = "m"
	kindResponse      = "r"
	kindOptOut        = "o"
	kindRecording     = "c"
	kindTranscription = "t"
)

// entry is one journaled write.
type entry struct {
	// ID is the stream entry id (set when read).
	ID      string
	Kind    string
	Attempt string
	// Status is the status callback (kindStatus).
	Status store.StatusUpdate
	// Body holds the other kinds' data.
	Body entryBody
}

// entryBody is the JSON of the rarer kinds: the fallback when MongoDB did
// not take a write in time, and AMD verdicts.
type entryBody struct {
	AnsweredBy    string           `json:"ab,omitempty"`
	Answer        *store.Answer    `json:"ans,omitempty"`
	Namespace     string           `json:"ns,omitempty"`
	Number        string           `json:"num,omitempty"`
	Recording     *store.Recording `json:"rec,omitempty"`
	RecordingSID  string           `json:"rsid,omitempty"`
	TrStatus      string           `json:"trs,omitempty"`
	Transcription string           `json:"tr,omitempty"`
}

// values encodes e as stream fields. Status callbacks, the bulk, get flat
// fields; the rest a JSON body.
func (e entry) values() ([]string, error) {
	if e.Kind == kindStatus {
		u := e.Status
		v := make([]string, 0, 18)
		v = append(v, "k", kindStatus, "a", e.Attempt, "st", u.Status, "q", strconv.FormatInt(u.Seq, 10), "c", u.CallSID)
		if !u.At.IsZero() {
			v = append(v, "t", strconv.FormatInt(u.At.UnixMilli(), 10))
		}
		if u.AnsweredBy != "" {
			v = append(v, "b", u.AnsweredBy)
		}
		if u.DurationSec != 0 {
			v = append(v, "d", strconv.Itoa(int(u.DurationSec)))
		}
		if u.ErrorCode != 0 {
			v = append(v, "e", strconv.Itoa(int(u.ErrorCode)))
		}
		if u.ErrorMessage != "" {
			v = append(v, "m", u.ErrorMessage)
		}
		return v, nil
	}
	b, err := json.Marshal(e.Body)
	if err != nil {
		return nil, err
	}
	return []string{"k", e.Kind, "a", e.Attempt, "j", string(b)}, nil
}

// decodeEntry reads a stream message back.
func decodeEntry(m redis.XMessage) (entry, error) {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	e := entry{ID: m.ID, Kind: str("k"), Attempt: str("a")}
	if e.Attempt == "" {
		return e, fmt.Errorf("journal entry %s names no attempt", m.ID)
	}
	switch e.Kind {
	case kindStatus:
		u := &e.Status
		u.Status, u.CallSID, u.AnsweredBy, u.ErrorMessage = str("st"), str("c"), str("b"), str("m")
		var err error
		if u.Seq, err = strconv.ParseInt(str("q"), 10, 64); err != nil {
			return e, fmt.Errorf("journal entry %s: sequence: %w", m.ID, err)
		}
		if t := str("t"); t != "" {
			ms, err := strconv.ParseInt(t, 10, 64)
			if err != nil {
				return e, fmt.Errorf("journal entry %s: time: %w", m.ID, err)
			}
			u.At = time.UnixMilli(ms).UTC()
		}
		if d := str("d"); d != "" {
			n, _ := strconv.Atoi(d)
			u.DurationSec = int32(n)
		}
		if c := str("e"); c != "" {
			n, _ := strconv.Atoi(c)
			u.ErrorCode = int32(n)
		}
	case kindAMD, kindResponse, kindOptOut, kindRecording, kindTranscription:
		if err := json.Unmarshal([]byte(str("j")), &e.Body); err != nil {
			return e, fmt.Errorf("journal entry %s: %w", m.ID, err)
		}
	default:
		return e, fmt.Errorf("journal entry %s has unknown kind %q", m.ID, e.Kind)
	}
	return e, nil
}

// append adds e to the journal.
func (s *Server) append(ctx context.Context, e entry) error {
	v, err := e.values()
	if err != nil {
		return err
	}
	args := make([]any, 0, len(v)+3)
	args = append(args, "xadd", s.journalKey, "*")
	for _, x := range v {
		args = append(args, x)
	}
	if err := s.batch.do(ctx, redis.NewStringCmd(ctx, args...)); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	s.m.journalAppended.Inc()
	return nil
}

// ensureGroup creates the journal stream and its group when missing.
func (s *Server) ensureGroup(ctx context.Context) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.journalKey, JournalGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create journal group: %w", err)
	}
	return nil
}

// writeJournal applies journal entries to MongoDB until ctx ends: new entries as
// they come, this consumer's unacknowledged ones every RetryInterval, and
// entries left by a dead consumer after ClaimIdle. Errors are retried with
// backoff.
func (s *Server) writeJournal(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	var lastRetry, lastClaim time.Time
	for ctx.Err() == nil {
		err := s.ensureGroup(ctx)
		if err == nil {
			now := time.Now()
			switch {
			case now.Sub(lastRetry) >= s.cfg.JournalRetryInterval:
				lastRetry = now
				err = s.writeJournalBatch(ctx, "0")
			case now.Sub(lastClaim) >= s.cfg.JournalClaimIdle/2:
				lastClaim = now
				err = s.claimAbandoned(ctx)
			default:
				err = s.writeJournalBatch(ctx, ">")
			}
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("writing the journal to the call log failed; retrying", "error", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return ctx.Err()
}

// writeJournalBatch reads one batch (new entries with ">", own pending with "0") and applies it.
func (s *Server) writeJournalBatch(ctx context.Context, start string) error {
	block := time.Duration(-1)
	if start == ">" {
		block = min(time.Second, s.cfg.JournalRetryInterval)
	}
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: JournalGroup, Consumer: s.cfg.Consumer, Streams: []string{s.journalKey, start},
		Count: int64(s.cfg.JournalBatch), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, st := range res {
		if len(st.Messages) > 0 {
			s.applyBatch(ctx, st.Messages)
		}
	}
	return nil
}

// claimAbandoned takes over entries another consumer read but did not
// acknowledge within ClaimIdle (it died), and applies them.
func (s *Server) claimAbandoned(ctx context.Context) error {
	msgs, _, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: s.journalKey, Group: JournalGroup, Consumer: s.cfg.Consumer,
		MinIdle: s.cfg.JournalClaimIdle, Start: "0-0", Count: int64(s.cfg.JournalBatch),
	}).Result()
	if err != nil {
		return err
	}
	if len(msgs) > 0 {
		s.log.Info("journal: took over entries of a stopped consumer", "entries", len(msgs))
		s.applyBatch(ctx, msgs)
	}
	return nil
}

// applyBatch applies a batch, attempts in parallel (each attempt's entries
// in order), and acknowledges and deletes what was applied or can never be.
// What failed for a passing reason stays pending and is retried.
func (s *Server) applyBatch(ctx context.Context, msgs []redis.XMessage) {
	var order []string
	byAttempt := map[string][]entry{}
	var done []string
	for _, m := range msgs {
		e, err := decodeEntry(m)
		if err != nil {
			s.log.Error("journal: dropping an undecodable entry", "id", m.ID, "error", err)
			s.m.journalApplied.WithLabelValues("unknown", "dropped").Inc()
			done = append(done, m.ID)
			continue
		}
		if _, ok := byAttempt[e.Attempt]; !ok {
			order = append(order, e.Attempt)
		}
		byAttempt[e.Attempt] = append(byAttempt[e.Attempt], e)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, s.cfg.JournalConcurrency)
	for _, id := range order {
		sem <- struct{}{}
		wg.Add(1)
		go func(es []entry) {
			defer wg.Done()
			defer func() { <-sem }()
			ok := s.applyAttempt(ctx, es)
			mu.Lock()
			done = append(done, ok...)
			mu.Unlock()
		}(byAttempt[id])
	}
	wg.Wait()
	if len(done) == 0 {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := s.rdb.TxPipelined(actx, func(p redis.Pipeliner) error {
		p.XAck(actx, s.journalKey, JournalGroup, done...)
		p.XDel(actx, s.journalKey, done...)
		return nil
	})
	if err != nil {
		s.log.Warn("journal: acknowledge failed; the entries are applied again (harmless)", "entries", len(done), "error", err)
	}
}

// supersedes reports whether status callback u replaces v when a batch's
// callbacks of one call are coalesced: a final status beats any other,
// then the higher sequence number wins. Twilio numbers a call's callbacks
// in order and sends the final one last, so this is the last one; and the
// store would refuse every other after it.
func supersedes(u, v store.StatusUpdate) bool {
	if tu, tv := terminalStatus(u.Status), terminalStatus(v.Status); tu != tv {
		return tu
	}
	return u.Seq > v.Seq
}

// applyAttempt applies one attempt's entries and returns the ids that are
// finished with. Status callbacks are coalesced (supersedes): only one is
// written.
func (s *Server) applyAttempt(ctx context.Context, es []entry) []string {
	var done []string
	var best *entry
	var statusIDs []string
	for i := range es {
		e := &es[i]
		if e.Kind == kindStatus {
			statusIDs = append(statusIDs, e.ID)
			if best == nil || supersedes(e.Status, best.Status) {
				best = e
			}
			continue
		}
		if s.applyEntry(ctx, e) {
			done = append(done, e.ID)
		}
	}
	if best != nil {
		if s.applyEntry(ctx, best) {
			done = append(done, statusIDs...)
			s.m.journalCoalesced.Add(float64(len(statusIDs) - 1))
		}
	}
	return done
}

// applyEntry writes one entry to MongoDB and does what follows it (outcome
// event, relay). It reports whether the entry is finished with: applied,
// a duplicate, or impossible to apply (unknown attempt, invalid data).
func (s *Server) applyEntry(ctx context.Context, e *entry) bool {
	applied, err := s.applyKind(ctx, e)
	kind := kindName(e.Kind)
	switch {
	case err == nil && applied:
		s.m.journalApplied.WithLabelValues(kind, "applied").Inc()
		return true
	case err == nil:
		s.m.journalApplied.WithLabelValues(kind, "duplicate").Inc()
		return true
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalidInput), errors.Is(err, store.ErrDuplicate):
		s.log.Warn("journal: dropping an entry that cannot be applied", "attempt", e.Attempt, "kind", kind, "error", err)
		s.m.journalApplied.WithLabelValues(kind, "dropped").Inc()
		return true
	default:
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			s.log.Warn("journal: apply failed; retrying later", "attempt", e.Attempt, "kind", kind, "error", err)
		}
		s.m.journalApplied.WithLabelValues(kind, "error").Inc()
		return false
	}
}

// applyKind writes entry e to MongoDB by its kind.
func (s *Server) applyKind(ctx context.Context, e *entry) (applied bool, err error) {
	// Nobody waits for the journal writer: give a slow call log time to finish
	// rather than abandon writes half-way and redo them.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch e.Kind {
	case kindStatus:
		applied, err = s.applyStatus(ctx, e.Attempt, e.Status)
	case kindAMD:
		applied, err = s.applyAnsweredBy(ctx, e.Attempt, e.Body.AnsweredBy)
	case kindResponse:
		if e.Body.Answer == nil {
			err = fmt.Errorf("%w: response entry without an answer", store.ErrInvalidInput)
			break
		}
		applied, err = s.applyAnswer(ctx, e.Attempt, *e.Body.Answer)
	case kindOptOut:
		applied, err = s.applyOptOut(ctx, e.Attempt, e.Body.Namespace, e.Body.Number)
	case kindRecording:
		if e.Body.Recording == nil {
			err = fmt.Errorf("%w: recording entry without a recording", store.ErrInvalidInput)
			break
		}
		applied, err = s.applyRecording(ctx, e.Attempt, *e.Body.Recording)
	case kindTranscription:
		applied, err = s.applyTranscription(ctx, e.Attempt, e.Body.RecordingSID, e.Body.TrStatus, e.Body.Transcription)
	}
	return applied, err
}

func kindName(k string) string {
	switch k {
	case kindStatus:
		return "status"
	case kindAMD:
		return "amd"
	case kindResponse:
		return "response"
	case kindOptOut:
		return "optout"
	case kindRecording:
		return "recording"
	case kindTranscription:
		return "transcription"
	}
	return "unknown"
}

// JournalBacklog is the number of journal entries not yet applied
// (pending in the group or not yet read).
func (s *Server) JournalBacklog(ctx context.Context) (int64, error) {
	return s.rdb.XLen(ctx, s.journalKey).Result()
}
