package worker

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/httpserve"
)

// TestWorkerServersHaveTimeouts checks that the callbacks and ops servers
// bound every phase of a connection.
func TestWorkerServersHaveTimeouts(t *testing.T) {
	s := httpserve.NewServer(":0", http.NotFoundHandler(), serverTimeouts)
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": s.ReadHeaderTimeout, "ReadTimeout": s.ReadTimeout,
		"WriteTimeout": s.WriteTimeout, "IdleTimeout": s.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
	if s.ReadHeaderTimeout > s.ReadTimeout || s.ReadTimeout > s.WriteTimeout {
		t.Errorf("timeouts out of order: %+v", serverTimeouts)
	}
}

// TestStalledClientIsDisconnected checks that a client that never finishes
// its request headers loses its connection after the read-header timeout.
func TestStalledClientIsDisconnected(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := httpserve.NewServer(l.Addr().String(), http.NotFoundHandler(), httpserve.Timeouts{ReadHeader: 100 * time.Millisecond, Read: time.Second, Write: time.Second, Idle: time.Second})
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("POST /twilio/voice HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	// The server must close the connection long before this deadline.
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept a stalled connection open")
	}
}
