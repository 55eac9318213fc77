package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/periodic"
	"github.com/delauto/delauto/internal/twiliosim"
)

// campaigns are the run's campaigns: namespace and name; each is sharded
// over regions.
var campaigns = []struct{ ns, name string }{{"team-a", "evening"}, {"team-b", "express"}}

var regions = []string{"north", "south"}

const (
	recipPrefix = "+1415555"
	agentPrefix = "+1628555"
	// routes is how many delivery agents (routes) the Deliveries are
	// spread over, as a depot's parcels are: the insights count by agent.
	routes = 20
)

// routeAgent is the agent of the k-th Delivery: one of routes.
func routeAgent(k int) v1.Agent {
	return v1.Agent{Name: fmt.Sprintf("Route %02d", k%routes), Phone: v1.PhoneNumber(fmt.Sprintf("%s%04d", agentPrefix, k%routes))}
}

// scenarios maps a recipient number's last digit to the callee's behaviour
// (the e2e's mix).
var scenarios = []string{"press1", "say-yes", "press2", "press3", "press9", "no-answer", "busy", "voicemail", "say-reschedule", "press1"}

// tracked is one Delivery the run created.
type tracked struct {
	ns, campaign, name, number, region string
	zone                               string
	uid                                string
	windowEnd                          time.Time
	hours                              localcluster.Hours
	created                            time.Time
	// change is what was done to it while due (edit, delete, cancel) and
	// changed when the apiserver accepted it.
	change  string
	changed time.Time
	// forged is set once forged webhooks named one of its calls.
	forged bool
}

// shard is the key of a worker queue: namespace/region.
func (t *tracked) shard() string { return t.ns + "/" + t.region }

// state is what the run knows, shared by its goroutines.
type state struct {
	cfg   config
	sys   *localcluster.System
	t0    time.Time
	zones zones
	log   io.Writer
	rng   *rand.Rand // only under mu

	mu       sync.Mutex
	byName   map[string]*tracked   // ns/name
	byNumber map[string][]*tracked // number -> its Deliveries
	events   []event
	kills    []kill
	forged   forgeStats
	reused   map[string]time.Time // opted-out number -> when its call ended
	panics   int                  // of the run's own goroutines (goSafe)
}

// event is one fault injected.
type event struct {
	At     time.Time
	Kind   string
	Detail string
}

// kill is a SIGKILL whose recovery is measured: a worker's (first call of
// its queue after it) or the leading operator's (a new leader).
type kill struct {
	At       time.Time
	Operator bool
	Shard    string        // worker: namespace/region
	Failover time.Duration // operator: until another replica led
}

func (s *state) logf(format string, args ...any) {
	line := fmt.Sprintf("%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = io.WriteString(s.log, line)
}

func (s *state) record(kind, detail string) {
	s.mu.Lock()
	s.events = append(s.events, event{At: time.Now(), Kind: kind, Detail: detail})
	s.mu.Unlock()
	s.logf("fault %s: %s", kind, detail)
}

func (s *state) intn(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.IntN(n)
}

// run starts the system, runs the stream and the faults, checks the
// invariants and prints the table; ok is false on any violation.
func run(ctx context.Context, cfg config) (ok bool, err error) {
	fmt.Printf(">> chaos: %d Deliveries over %s, seed %d, run folder %s\n", cfg.deliveries, cfg.length, cfg.seed, cfg.dir)
	faults := plan(cfg.seed, cfg.length)
	printPlan(os.Stdout, cfg.seed, faults)
	logf, err := createRunLog(cfg.dir)
	if err != nil {
		return false, err
	}
	defer logf.Close()
	printPlan(logf, cfg.seed, faults)

	s := &state{cfg: cfg, log: logf, byName: map[string]*tracked{}, byNumber: map[string][]*tracked{},
		reused: map[string]time.Time{}, rng: rand.New(rand.NewPCG(cfg.seed, 7))}
	suffixes := map[string]twiliosim.Scenario{}
	for i, sc := range scenarios {
		suffixes[fmt.Sprint(i)] = twiliosim.MustNamed(sc)
	}
	s.sys, err = localcluster.StartSystem(ctx, localcluster.SystemOptions{
		Repo: cfg.repo, Bin: filepath.Join(cfg.repo, "bin"), Dir: cfg.dir, OperatorReplicas: 2,
		// Real time, as the e2e (see its timeScale).
		Sim: twiliosim.Options{TimeScale: 1, Suffixes: suffixes, CPS: 50, Seed: int64(cfg.seed),
			Faults: baseFaults},
		Progress: os.Stdout,
	})
	if err != nil {
		return false, err
	}
	defer s.sys.Stop()

	s.t0 = time.Now()
	if s.zones, err = pickZones(s.t0, cfg.length); err != nil {
		return false, err
	}
	fmt.Printf(">> calling hours %s-%s; recipients in %s (open from +%s), %s (closes at +%s), %s (open all along), %s (closed all along)\n",
		s.zones.start, s.zones.end, s.zones.opens, s.zones.opensAt.Sub(s.t0).Round(time.Second),
		s.zones.closes, s.zones.closesAt.Sub(s.t0).Round(time.Second), s.zones.open, s.zones.closed)
	for _, c := range campaigns {
		yaml := s.sys.Campaign(localcluster.CampaignOptions{Namespace: c.ns, Name: c.name,
			HoursStart: s.zones.start, HoursEnd: s.zones.end, MaxAttempts: 2, Regions: regions})
		if err := s.sys.Apply(ctx, yaml); err != nil {
			return false, err
		}
		if err := s.sys.RouteCallbacks(c.ns, c.name); err != nil {
			return false, err
		}
	}
	// The stream's clock starts once the campaigns exist.
	s.t0 = time.Now()
	fmt.Printf(">> %s: streaming %d Deliveries over %s with the faults above\n", s.t0.Format("15:04:05"), cfg.deliveries, cfg.length)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	s.goSafe(&wg, "the stream", func() { s.stream(runCtx) })
	for _, f := range faults {
		s.goSafe(&wg, f.Kind, func() { s.inject(runCtx, f) })
	}
	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(runCtx)
	s.goSafe(&bg, "the forger", func() { s.forge(bgCtx) })
	s.goSafe(&bg, "the opt-out reuse", func() { s.reuseOptedOut(bgCtx) })
	s.goSafe(&bg, "the progress line", func() { s.progress(bgCtx) })
	wg.Wait()
	if ctx.Err() != nil {
		stopBG()
		bg.Wait()
		return false, ctx.Err()
	}
	fmt.Printf(">> %s: stream and faults done (%s); waiting up to %s for every Delivery to settle\n",
		time.Now().Format("15:04:05"), time.Since(s.t0).Round(time.Second), cfg.drain)
	s.settle(ctx)
	stopBG()
	bg.Wait()
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	r := s.check(ctx)
	r.print(os.Stdout, s, 20)
	r.print(logf, s, 0)
	return r.ok(), nil
}

// goSafe runs fn in a goroutine counted by wg. A panic there is logged and
// fails the run instead of ending the process before it stopped the
// cluster and the services.
func (s *state) goSafe(wg *sync.WaitGroup, what string, fn func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if r := recover(); r != nil {
				s.logf("panic in %s: %v\n%s", what, r, debug.Stack())
				s.mu.Lock()
				s.panics++
				s.mu.Unlock()
			}
		}()
		fn()
	}()
}

// baseFaults are in force all along: callbacks duplicated, reordered and
// delayed by a minute.
var baseFaults = twiliosim.Faults{DuplicateCallback: 0.03, OutOfOrderCallback: 0.03, LateCallback: 0.02, LateCallbackDelay: time.Minute}

// stream creates the Deliveries evenly over the run's length, up to 16
// creates at once (an apiserver slowed by the load does not slow the
// stream).
func (s *state) stream(ctx context.Context) {
	every := s.cfg.length / time.Duration(s.cfg.deliveries)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range s.cfg.deliveries {
		if !periodic.Sleep(ctx, time.Until(s.t0.Add(time.Duration(i)*every))) {
			return
		}
		c := campaigns[i%len(campaigns)]
		t := &tracked{ns: c.ns, campaign: c.name, name: fmt.Sprintf("parcel-%05d", i),
			number: fmt.Sprintf("%s%04d", recipPrefix, i%10000), region: regions[(i/len(campaigns))%len(regions)]}
		s.zones.assign(t, i)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.create(ctx, t, routeAgent(i)); err != nil {
				s.logf("create %s/%s: %v", t.ns, t.name, err)
			}
		}()
	}
}

// create writes the Delivery of t (window from its zone's plan) and tracks
// it; a refused create is retried for a minute (the apiserver under load).
func (s *state) create(ctx context.Context, t *tracked, agent v1.Agent) error {
	start := s.zones.windowStart(t, time.Now(), s.intn(180))
	d := &v1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Namespace: t.ns, Name: t.name, Labels: map[string]string{"delauto.io/campaign": t.campaign}},
		Spec: v1.DeliverySpec{
			Recipient: v1.Recipient{Name: "Recipient " + t.name, Phone: v1.PhoneNumber(t.number), TimeZone: v1.TimeZone(t.zone), Language: "en-US"},
			Address:   v1.Address{Line1: "1 Main St", City: "Springfield", PostalCode: "12345", Country: "US"},
			Region:    t.region,
			Window:    v1.DeliveryWindow{Start: metav1.NewTime(start), End: metav1.NewTime(start.Add(2 * time.Hour))},
			Agent:     agent,
		},
	}
	var err error
	for deadline := time.Now().Add(time.Minute); ; {
		if err = s.sys.Client.Create(ctx, d); err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return err
	}
	t.created = time.Now()
	s.mu.Lock()
	t.uid, t.windowEnd = string(d.UID), start.Add(2*time.Hour)
	s.byName[t.ns+"/"+t.name] = t
	s.byNumber[t.number] = append(s.byNumber[t.number], t)
	s.mu.Unlock()
	return nil
}

// progress prints a line every 15 s: Deliveries by phase, calls.
func (s *state) progress(ctx context.Context) {
	periodic.Every(ctx, 15*time.Second, func(ctx context.Context) {
		var list v1.DeliveryList
		if err := s.sys.Client.List(ctx, &list); err != nil {
			return
		}
		phases := map[v1.DeliveryPhase]int{}
		for _, d := range list.Items {
			phases[d.Status.Phase]++
		}
		st := s.sys.Sim.Stats()
		fmt.Printf("   +%-5s %d Deliveries %v; %d calls, %d create requests, %d callbacks\n", time.Since(s.t0).Round(time.Second),
			len(list.Items), phases, st.CallsCreated, st.CreateRequests, st.Callbacks)
	})
}
