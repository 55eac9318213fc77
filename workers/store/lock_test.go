package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// lockHelperEnv makes the test binary a helper process that takes an
// attempt's lock (lockHelperMain); the other lockHelper* variables
// say where and with which clock.
const (
	lockHelperEnv  = "DELAUTO_LOCK_HELPER"
	lockHelperURI  = "DELAUTO_LOCK_HELPER_URI"
	lockHelperDB   = "DELAUTO_LOCK_HELPER_DB"
	lockHelperID   = "DELAUTO_LOCK_HELPER_ATTEMPT"
	lockHelperSkew = "DELAUTO_LOCK_HELPER_SKEW"
)

// lockHelperMain is the other process of TestLockAcrossProcessesWithSkewedClocks
// (TestMain runs it when lockHelperEnv is set): with its clock skewed, it
// tries to take the attempt's lock, prints "lock: taken" or "lock: busy",
// and returns the process's exit code.
func lockHelperMain() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "lock helper:", err)
		return 1
	}
	skew, err := time.ParseDuration(os.Getenv(lockHelperSkew))
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	s, err := Open(ctx, Config{
		URI: os.Getenv(lockHelperURI), Database: os.Getenv(lockHelperDB),
		Serialize: SerializeAlways, LockWait: time.Second,
		Now:    func() time.Time { return time.Now().Add(skew) },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return fail(err)
	}
	defer s.Close(ctx)
	unlock, err := s.lock(ctx, os.Getenv(lockHelperID))
	switch {
	case err == nil:
		unlock()
		fmt.Println("lock: taken")
	case errors.Is(err, ErrBusy):
		fmt.Println("lock: busy")
	default:
		return fail(err)
	}
	return 0
}

// lockInOtherProcess runs lockHelperMain in a new process of this
// test binary, its clock skewed by skew, and returns what it printed.
func lockInOtherProcess(t *testing.T, s *Store, id string, skew time.Duration) string {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), lockHelperEnv+"=1", lockHelperURI+"="+env.Mongo.URI,
		lockHelperDB+"="+s.cfg.Database, lockHelperID+"="+id, lockHelperSkew+"="+skew.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "lock: ") {
			return strings.TrimPrefix(line, "lock: ")
		}
	}
	t.Fatalf("helper process said nothing about the lock:\n%s", out)
	return ""
}

// TestLockAcrossProcessesWithSkewedClocks holds an attempt's lock in this
// process and has another process, whose clock is off by more than the
// lock's TTL, try to take it: a lock is judged expired on the server's
// clock, so the other process must find it busy, whichever clock is wrong.
func TestLockAcrossProcessesWithSkewedClocks(t *testing.T) {
	for _, tc := range []struct {
		name               string
		holderSkew, waiter time.Duration
	}{
		{name: "waiter clock ahead", waiter: 10 * time.Minute},
		{name: "holder clock behind", holderSkew: -10 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, func(c *Config) {
				c.Serialize = SerializeAlways
				c.Now = func() time.Time { return time.Now().Add(tc.holderSkew) }
			})
			a := mustCreate(t, s, newAttempt("skew", 1, time.Now()))
			unlock, err := s.lock(ctx, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			got := lockInOtherProcess(t, s, a.ID, tc.waiter)
			unlock()
			if got != "busy" {
				t.Fatalf("the other process found the lock %s while this one held it: two writers at once", got)
			}
			// Released, the other process takes it.
			if got := lockInOtherProcess(t, s, a.ID, tc.waiter); got != "taken" {
				t.Fatalf("the other process found the released lock %s", got)
			}
		})
	}
}
