package worker

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

type statusRecorder struct {
	httptest.ResponseRecorder
	code int
}

func (s *statusRecorder) WriteHeader(code int) { s.code = code }
func (s *statusRecorder) Header() http.Header {
	if s.ResponseRecorder.HeaderMap == nil {
		s.ResponseRecorder.HeaderMap = http.Header{}
	}
	return s.ResponseRecorder.HeaderMap
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return len(b), nil
}

func httptestRequest(path string) *http.Request {
	return httptest.NewRequest(http.MethodPost, path, nil)
}

// xaddDuplicate is a second ready-stream entry for an attempt.
func xaddDuplicate(w *world, id string) *redis.XAddArgs {
	return &redis.XAddArgs{Stream: w.shard.ReadyKey(), Values: []any{"id", id, "due", fmt.Sprint(time.Now().UnixMilli())}}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
