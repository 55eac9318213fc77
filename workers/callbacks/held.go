package callbacks

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// MaxHeldWrites bounds the writes a server keeps in memory until they are in
// MongoDB (see heldWrites). Beyond it the oldest journaled one is left to
// the journal alone; a write the journal did not take is refused instead
// (the webhook answers 503) when every held write is such a one.
const MaxHeldWrites = 10000

// heldRetry is how often a held write is tried again while MongoDB fails.
const heldRetry = time.Second

// heldWrites keeps the answers, opt-outs, recordings and transcriptions a
// webhook could not write to MongoDB, until this server has written them
// itself. Most are in the journal too, which is as durable as Redis: a
// Redis that restarts empty while MongoDB is down loses them there, and a
// lost opt-out means the number is called again. Some are only here (Redis
// was down too). Held here, they reach MongoDB when it is back as long as
// this process lives; the journal writer applying the same entry too
// changes nothing (every write is idempotent), and counts it a duplicate.
type heldWrites struct {
	mu      sync.Mutex
	entries []heldEntry
	seq     uint64
	stopped bool // the writer stopped: nothing more is held
	wake    chan struct{}
}

// heldEntry is one held write; journaled says the journal has it too.
type heldEntry struct {
	entry
	seq       uint64
	journaled bool
}

// hold keeps e until it is written; journaled says the journal took it. It
// reports false when e is not held: the writer has stopped, or every held
// write is one the journal does not have and there is no room.
func (s *Server) hold(e entry, journaled bool) bool {
	h := &s.held
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return false
	}
	if len(h.entries) >= MaxHeldWrites {
		i := slices.IndexFunc(h.entries, func(he heldEntry) bool { return he.journaled })
		if i < 0 {
			h.mu.Unlock()
			s.log.Error("too many writes held for MongoDB that the journal does not have; refusing another", "attempt", e.Attempt, "kind", kindName(e.Kind), "held", MaxHeldWrites)
			return false
		}
		dropped := h.entries[i]
		h.entries = slices.Delete(h.entries, i, i+1)
		s.log.Warn("too many writes held for MongoDB; the oldest journaled one is left to the journal alone", "attempt", dropped.Attempt, "kind", kindName(dropped.Kind), "held", MaxHeldWrites)
	}
	h.seq++
	h.entries = append(h.entries, heldEntry{entry: e, seq: h.seq, journaled: journaled})
	s.m.heldWrites.Set(float64(len(h.entries)))
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return true
}

// next returns the oldest held write.
func (h *heldWrites) next() (heldEntry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) == 0 {
		return heldEntry{}, false
	}
	return h.entries[0], true
}

// done drops the held write seq (unless hold dropped it meanwhile); it
// returns how many are left.
func (h *heldWrites) done(seq uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries = slices.DeleteFunc(h.entries, func(he heldEntry) bool { return he.seq == seq })
	return len(h.entries)
}

// stop ends holding and returns the writes the journal does not have.
func (h *heldWrites) stop() (unjournaled []entry, held int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	for _, he := range h.entries {
		if !he.journaled {
			unjournaled = append(unjournaled, he.entry)
		}
	}
	return unjournaled, len(h.entries)
}

// writeHeld writes the held writes to MongoDB, oldest first, until ctx
// ends: all in a row while MongoDB takes them, one try every heldRetry
// while it fails. A write whose follow-up (the outcome event, the relay's
// wake-up) failed is done: it is in MongoDB, and the operator reads it on
// its own schedule. At the end, what only this process holds goes to the
// journal if Redis takes it; what is left is logged as lost.
func (s *Server) writeHeld(ctx context.Context) {
	for {
		for {
			he, ok := s.held.next()
			if !ok {
				break
			}
			if _, err := s.applyKind(ctx, &he.entry); err != nil && !permanent(err) && !isFollowUp(err) {
				break
			}
			s.m.heldWrites.Set(float64(s.held.done(he.seq)))
		}
		wait := heldRetry
		if _, ok := s.held.next(); !ok {
			wait = time.Hour
		}
		select {
		case <-ctx.Done():
			s.stopHolding()
			return
		case <-s.held.wake:
		case <-time.After(wait):
		}
	}
}

// stopHolding ends holding: the writes only this process holds are put in
// the journal if Redis takes them now.
func (s *Server) stopHolding() {
	unjournaled, n := s.held.stop()
	if n == 0 {
		return
	}
	lost := 0
	for _, e := range unjournaled {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout)
		if err := s.append(ctx, e); err != nil {
			lost++
		}
		cancel()
	}
	if lost > 0 {
		s.log.Error("stopping with writes neither MongoDB nor the journal has: they are lost", "lost", lost, "held", n)
		return
	}
	s.log.Warn("stopping with writes held for MongoDB; the journal has them", "held", n)
}

// isFollowUp reports whether err is a failure after the write succeeded.
func isFollowUp(err error) bool {
	var fe *followUpError
	return errors.As(err, &fe)
}
