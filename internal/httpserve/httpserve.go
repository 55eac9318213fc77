// Package httpserve builds the HTTP servers DelAuto's processes run: every
// timeout set, and a handler that can be swapped while serving (a process
// answers "starting" until its stores are up).
package httpserve

import (
	"net/http"
	"sync"
	"time"
)

// Timeouts bound how long a client may hold a connection: a slow or
// stalled client cannot pile up connections.
type Timeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

// NewServer is an HTTP server on addr serving h with every timeout of t set.
func NewServer(addr string, h http.Handler, t Timeouts) *http.Server {
	return &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, WriteTimeout: t.Write, IdleTimeout: t.Idle,
	}
}

// Slot is an http.Handler that can be swapped while serving. Set it before
// the server starts.
type Slot struct {
	mu sync.RWMutex
	h  http.Handler
}

// Set makes h the handler of later requests.
func (s *Slot) Set(h http.Handler) { s.mu.Lock(); s.h = h; s.mu.Unlock() }

// ServeHTTP serves r with the current handler.
func (s *Slot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	h := s.h
	s.mu.RUnlock()
	h.ServeHTTP(w, r)
}
