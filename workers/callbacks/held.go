package callbacks

import (
	"context"
	"sync"
	"time"
)

// MaxHeldWrites bounds the journaled writes a server keeps in memory until
// they are in MongoDB (see heldWrites); beyond it the oldest is left to the
// journal alone.
const MaxHeldWrites = 10000

// heldRetry is how often a held write is tried again while MongoDB fails.
const heldRetry = time.Second

// heldWrites keeps the answers, opt-outs, recordings and transcriptions a
// webhook could not write to MongoDB and put in the journal instead, until
// this server has written them itself. The journal is as durable as Redis:
// a Redis that restarts empty while MongoDB is down loses them there, and a
// lost opt-out means the number is called again. Held here, they reach
// MongoDB when it is back as long as this process lives; the journal writer
// applying the same entry too changes nothing (every write is idempotent),
// and counts it a duplicate.
type heldWrites struct {
	mu      sync.Mutex
	entries []entry
	wake    chan struct{}
}

// hold keeps e until it is written.
func (s *Server) hold(e entry) {
	h := &s.held
	h.mu.Lock()
	if len(h.entries) >= MaxHeldWrites {
		dropped := h.entries[0]
		h.entries = h.entries[1:]
		s.log.Warn("too many writes held for MongoDB; the oldest is left to the journal alone", "attempt", dropped.Attempt, "kind", kindName(dropped.Kind), "held", MaxHeldWrites)
	}
	h.entries = append(h.entries, e)
	s.m.heldWrites.Set(float64(len(h.entries)))
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// next returns the oldest held write.
func (h *heldWrites) next() (entry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) == 0 {
		return entry{}, false
	}
	return h.entries[0], true
}

// len is how many writes are held.
func (h *heldWrites) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

// done drops the oldest held write, if it is still e's attempt and kind
// (hold may have dropped it meanwhile); it returns how many are left.
func (h *heldWrites) done(e entry) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) > 0 && h.entries[0].Attempt == e.Attempt && h.entries[0].Kind == e.Kind {
		h.entries = h.entries[1:]
	}
	return len(h.entries)
}

// writeHeld writes the held writes to MongoDB, oldest first, until ctx
// ends: all in a row while MongoDB takes them, one try every heldRetry
// while it fails. What is still held at the end stays in the journal.
func (s *Server) writeHeld(ctx context.Context) {
	for {
		for {
			e, ok := s.held.next()
			if !ok {
				break
			}
			if !s.applyEntry(ctx, &e) {
				break
			}
			s.m.heldWrites.Set(float64(s.held.done(e)))
		}
		wait := heldRetry
		if _, ok := s.held.next(); !ok {
			wait = time.Hour
		}
		select {
		case <-ctx.Done():
			if n := s.held.len(); n > 0 {
				s.log.Warn("stopping with writes held for MongoDB; the journal has them", "held", n)
			}
			return
		case <-s.held.wake:
		case <-time.After(wait):
		}
	}
}
