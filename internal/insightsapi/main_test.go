package insightsapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/internal/testservices"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Kube: true, Redis: true, Mongo: true}, &env)
}

// The namespaces of the tests: the reader ServiceAccount of teamA may list
// deliveries in teamA only.
const (
	teamA = "team-a"
	teamB = "team-b"
)

var (
	kubeOnce    sync.Once
	kubeClient  kubernetes.Interface
	readerToken string
)

// reader sets up, once per package, the namespaces, a ServiceAccount with a
// Role that may list deliveries.delauto.io in teamA, and a token of it
// from the TokenRequest API.
func reader(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	kubeOnce.Do(func() {
		ctx := context.Background()
		cs, err := kubernetes.NewForConfig(env.Kube.Config)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: teamB}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		token, err := env.Kube.ReaderToken(ctx, teamA, "dashboard", DeliveryReaderRules)
		if err != nil {
			t.Fatal(err)
		}
		kubeClient, readerToken = cs, token
	})
	if kubeClient == nil {
		t.Fatal("the Kubernetes set-up failed in an earlier test")
	}
	return kubeClient, readerToken
}

// harness is an API server under test on the real apiserver (KubeAuth) and
// Redis, with its own registry and a log to read.
type harness struct {
	t     *testing.T
	srv   *Server
	url   string
	token string
	reg   *prometheus.Registry
	logMu sync.Mutex
	log   bytes.Buffer
}

func newHarness(t *testing.T, src insights.Source, o ...func(*Config)) *harness {
	t.Helper()
	cs, token := reader(t)
	h := &harness{t: t, token: token, reg: prometheus.NewRegistry()}
	auth, err := NewKubeAuth(cs, AuthOptions{Registerer: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	rdb := env.Redis.Client()
	t.Cleanup(func() { rdb.Close() })
	cfg := Config{Source: src, Auth: auth, Redis: rdb, CacheTTL: time.Minute,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&h.logMu, &h.log}, nil))}
	for _, f := range o {
		f(&cfg)
	}
	if h.srv, err = New(cfg, h.reg); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h.srv.Handler())
	t.Cleanup(hs.Close)
	h.url = hs.URL
	return h
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (h *harness) logs() string {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	return h.log.String()
}

// response is what a test reads of an answer.
type response struct {
	code   int
	header http.Header
	body   []byte // decompressed
	wire   int    // bytes on the wire
}

// get sends GET path with the reader's token and the given headers
// ("Authorization": "" sends none); the transport does not decompress.
func (h *harness) get(path string, headers ...string) response {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.url+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+h.token)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	out := response{code: resp.StatusCode, header: resp.Header, body: raw, wire: len(raw)}
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			h.t.Fatal(err)
		}
		if out.body, err = io.ReadAll(zr); err != nil {
			h.t.Fatal(err)
		}
	}
	return out
}

// errorOf decodes an error body.
func (r response) errorOf(t *testing.T) Error {
	t.Helper()
	var e Error
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if e.Code != r.code {
		t.Errorf("error body code %d, HTTP status %d", e.Code, r.code)
	}
	return e
}

// redisAt is a client of a Redis that is not there.
func redisAt(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
}
