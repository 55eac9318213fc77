package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultGroup is the consumer group every worker of a shard reads with.
const DefaultGroup = "workers"

// maxIDLen bounds an attempt id.
const maxIDLen = 512

// Options configure a Queue.
type Options struct {
	// Group is the consumer group name. Default DefaultGroup.
	Group string
	// Metrics are shared by the queue's consumers and promoters. Default:
	// unregistered metrics (use NewMetrics with a Registerer to expose them).
	Metrics *Metrics
	// Logger gets structured logs. Default slog.Default().
	Logger *slog.Logger
	// DeadLetterMaxLen caps each shard's dead-letter stream (approximately,
	// oldest trimmed first). Default 100000.
	DeadLetterMaxLen int64
	// BatchSize is how many attempts one script call of a batch carries.
	// Default 500.
	BatchSize int
}

// Queue schedules, cancels and dispatches call attempts through Redis. It
// works with a single Redis and with Redis Cluster. It is safe for
// concurrent use.
type Queue struct {
	rdb     redis.UniversalClient
	group   string
	metrics *Metrics
	log     *slog.Logger
	deadMax int64
	batch   int

	mu     sync.Mutex
	wakers map[Shard][]chan struct{}
}

// New returns a Queue on rdb.
func New(rdb redis.UniversalClient, opts Options) *Queue {
	if opts.Group == "" {
		opts.Group = DefaultGroup
	}
	if opts.Metrics == nil {
		opts.Metrics, _ = NewMetrics(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DeadLetterMaxLen <= 0 {
		opts.DeadLetterMaxLen = 100000
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	return &Queue{
		rdb: rdb, group: opts.Group, metrics: opts.Metrics, log: opts.Logger,
		deadMax: opts.DeadLetterMaxLen, batch: opts.BatchSize,
		wakers: map[Shard][]chan struct{}{},
	}
}

// Mode says what Schedule does with an id that is already queued.
type Mode uint8

const (
	// AddOnly adds an id that is not queued and leaves a queued one as it is
	// (ZADD NX): scheduling the same attempt twice enqueues it once.
	AddOnly Mode = iota
	// MoveOnly moves a queued id to the new due time and ignores an unknown
	// one (ZADD XX).
	MoveOnly
	// AddOrMove adds the id or moves it if queued.
	AddOrMove
)

func (m Mode) arg() (string, error) {
	switch m {
	case AddOnly:
		return "nx", nil
	case MoveOnly:
		return "xx", nil
	case AddOrMove:
		return "up", nil
	}
	return "", fmt.Errorf("queue: unknown schedule mode %d", m)
}

// Result is what Schedule or Cancel did with one attempt.
type Result uint8

const (
	// Added: the attempt was not queued and now is.
	Added Result = iota + 1
	// Moved: the attempt was queued (due, or ready but not delivered) and now
	// has the new due time.
	Moved
	// Unchanged: the attempt was already queued and AddOnly kept it as it was.
	Unchanged
	// InFlight: a worker has the attempt; nothing was changed. The worker's
	// fenced claim in MongoDB decides whether it still calls.
	InFlight
	// NotQueued: the attempt is not queued (MoveOnly or Cancel of an unknown
	// or finished id); nothing was changed.
	NotQueued
	// Cancelled: the attempt was removed before any worker received it.
	Cancelled
	// CalledOff: the attempt's group was called off (CallOff); nothing was
	// queued.
	CalledOff
)

var resultNames = map[string]Result{
	"added": Added, "moved": Moved, "unchanged": Unchanged, "inflight": InFlight,
	"absent": NotQueued, "cancelled": Cancelled, "calledoff": CalledOff,
}

// String names the result.
func (r Result) String() string {
	switch r {
	case Added:
		return "added"
	case Moved:
		return "moved"
	case Unchanged:
		return "unchanged"
	case InFlight:
		return "in-flight"
	case NotQueued:
		return "not-queued"
	case Cancelled:
		return "cancelled"
	case CalledOff:
		return "called-off"
	}
	return "result(" + strconv.Itoa(int(r)) + ")"
}

// Entry is one attempt to schedule.
type Entry struct {
	// Shard whose workers run the attempt.
	Shard Shard
	// ID is the attempt id (unique per delivery and attempt number).
	ID string
	// Due is when the attempt should run; a time in the past means now.
	Due time.Time
	// Mode is what to do when the id is already queued.
	Mode Mode
}

// Ref names a queued attempt.
type Ref struct {
	Shard Shard
	ID    string
}

func checkID(id string) error {
	if id == "" {
		return errors.New("queue: attempt id is empty")
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("queue: attempt id is longer than %d bytes", maxIDLen)
	}
	return nil
}

// Schedule queues attempt id of shard s for due (AddOnly): an id that is
// already queued keeps its time, so scheduling is idempotent.
func (q *Queue) Schedule(ctx context.Context, s Shard, id string, due time.Time) (Result, error) {
	rs, err := q.ScheduleBatch(ctx, []Entry{{Shard: s, ID: id, Due: due, Mode: AddOnly}})
	if err != nil {
		return 0, err
	}
	return rs[0], nil
}

// Reschedule moves a queued attempt to a new due time (MoveOnly). It
// returns NotQueued for an unknown id and InFlight for one a worker holds.
func (q *Queue) Reschedule(ctx context.Context, s Shard, id string, due time.Time) (Result, error) {
	rs, err := q.ScheduleBatch(ctx, []Entry{{Shard: s, ID: id, Due: due, Mode: MoveOnly}})
	if err != nil {
		return 0, err
	}
	return rs[0], nil
}

// ScheduleBatch schedules many attempts in few round trips (one script call
// per shard and BatchSize entries, all pipelined). Results are in the order
// of entries. On error, some entries may have been applied; running the
// batch again is safe for AddOnly and AddOrMove entries.
func (q *Queue) ScheduleBatch(ctx context.Context, entries []Entry) ([]Result, error) {
	now := time.Now()
	var calls []*scriptCall
	var index [][]int
	byShard := map[Shard][]int{}
	var order []Shard
	for i, e := range entries {
		if err := e.Shard.Validate(); err != nil {
			return nil, err
		}
		if err := checkID(e.ID); err != nil {
			return nil, err
		}
		if e.Due.IsZero() {
			return nil, fmt.Errorf("queue: attempt %q has no due time", e.ID)
		}
		if _, err := e.Mode.arg(); err != nil {
			return nil, err
		}
		if _, ok := byShard[e.Shard]; !ok {
			order = append(order, e.Shard)
		}
		byShard[e.Shard] = append(byShard[e.Shard], i)
	}
	for _, s := range order {
		idx := byShard[s]
		for start := 0; start < len(idx); start += q.batch {
			part := idx[start:min(start+q.batch, len(idx))]
			args := make([]any, 0, 2+3*len(part))
			args = append(args, q.group, s.WakeChannel())
			for _, i := range part {
				e := entries[i]
				// A future due time is rounded up to the millisecond, so an
				// attempt never runs before the time asked for; a past one
				// means now.
				ms := (e.Due.UnixNano() + 999_999) / 1_000_000
				if !e.Due.After(now) {
					ms = now.UnixMilli()
				}
				mode, _ := e.Mode.arg()
				args = append(args, e.ID, ms, mode)
			}
			calls = append(calls, &scriptCall{script: scheduleScript, keys: s.keys(), args: args})
			index = append(index, part)
		}
	}
	if err := runScripts(ctx, q.rdb, calls); err != nil {
		return nil, fmt.Errorf("queue: schedule: %w", err)
	}
	out := make([]Result, len(entries))
	for ci, c := range calls {
		vals, err := c.cmd.Slice()
		if err != nil || len(vals) != len(index[ci])+1 {
			return nil, fmt.Errorf("queue: schedule: unexpected reply %v (%v)", vals, err)
		}
		if w, _ := vals[0].(int64); w == 1 {
			q.wakeLocal(entries[index[ci][0]].Shard)
		}
		for j, i := range index[ci] {
			s, _ := vals[j+1].(string)
			r, ok := resultNames[s]
			if !ok {
				return nil, fmt.Errorf("queue: schedule: unexpected result %q", s)
			}
			out[i] = r
		}
	}
	return out, nil
}

// Cancel removes an attempt that no worker has received yet, whether it is
// still in the due set or already in the ready stream; it returns Cancelled.
// It cannot recall an attempt a worker has already read (InFlight): that
// worker's fenced claim in MongoDB, which sees the attempt cancelled, is the
// final guard. NotQueued means the id is unknown or already finished.
func (q *Queue) Cancel(ctx context.Context, s Shard, id string) (Result, error) {
	rs, err := q.CancelBatch(ctx, []Ref{{Shard: s, ID: id}})
	if err != nil {
		return 0, err
	}
	return rs[0], nil
}

// CancelBatch cancels many attempts in few round trips; see Cancel.
func (q *Queue) CancelBatch(ctx context.Context, refs []Ref) ([]Result, error) {
	byShard := map[Shard][]int{}
	var order []Shard
	for i, r := range refs {
		if err := r.Shard.Validate(); err != nil {
			return nil, err
		}
		if err := checkID(r.ID); err != nil {
			return nil, err
		}
		if _, ok := byShard[r.Shard]; !ok {
			order = append(order, r.Shard)
		}
		byShard[r.Shard] = append(byShard[r.Shard], i)
	}
	var calls []*scriptCall
	var index [][]int
	for _, s := range order {
		idx := byShard[s]
		for start := 0; start < len(idx); start += q.batch {
			part := idx[start:min(start+q.batch, len(idx))]
			args := make([]any, 0, 1+len(part))
			args = append(args, q.group)
			for _, i := range part {
				args = append(args, refs[i].ID)
			}
			calls = append(calls, &scriptCall{script: cancelScript, keys: s.keys(), args: args})
			index = append(index, part)
		}
	}
	if err := runScripts(ctx, q.rdb, calls); err != nil {
		return nil, fmt.Errorf("queue: cancel: %w", err)
	}
	out := make([]Result, len(refs))
	for ci, c := range calls {
		vals, err := c.cmd.StringSlice()
		if err != nil || len(vals) != len(index[ci]) {
			return nil, fmt.Errorf("queue: cancel: unexpected reply %v (%v)", vals, err)
		}
		for j, i := range index[ci] {
			out[i] = resultNames[vals[j]]
		}
	}
	return out, nil
}

// CallOffKeep is how long a call-off is remembered (CallOff): far longer
// than any store outage it covers.
const CallOffKeep = 7 * 24 * time.Hour

// CallOff records that no attempt of group may be called any more: attempt
// ids "<group>-<n>" of shard s, as the call log names a delivery's
// attempts. Schedule refuses them from then on (CalledOff), and a worker
// asks IsCalledOff before it dials. It is the operator's way to stop the
// calls of a cancelled or deleted delivery while MongoDB, where attempts
// are cancelled, cannot be reached; it needs only Redis. It is remembered
// for CallOffKeep.
func (q *Queue) CallOff(ctx context.Context, s Shard, group string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := checkID(group); err != nil {
		return err
	}
	err := callOffScript.Run(ctx, q.rdb, s.keys(), CallOffKeep.Milliseconds(), group).Err()
	if err != nil {
		return fmt.Errorf("queue: call off %s in %s: %w", group, s, err)
	}
	return nil
}

// Hold keeps the attempts of group from being dialed until Unhold lifts it
// at generation or later: a worker that claims one puts it back for a
// while (IsCalledOff reports it held). It is the operator's way to stop
// calls on a plan it is changing (a Delivery given a new window, cancelled
// or deleted; generation is the Delivery's generation that asks for the
// change): it holds the Delivery the moment it sees the change, ahead of
// the reconcile that re-plans or cancels the queued attempt in MongoDB,
// and again when that reconcile fails (the call log unreachable). Like a
// call-off it needs only Redis, and it is forgotten after CallOffKeep.
func (q *Queue) Hold(ctx context.Context, s Shard, group string, generation int64) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := checkID(group); err != nil {
		return err
	}
	err := holdScript.Run(ctx, q.rdb, []string{s.CalledOffKey(), s.holdKey(group)},
		CallOffKeep.Milliseconds(), holdMember(group), generation).Err()
	if err != nil {
		return fmt.Errorf("queue: hold %s in %s: %w", group, s, err)
	}
	return nil
}

// Unhold lifts the Hold of group once the change of generation was carried
// out. A hold for a later generation stays (that change is not carried
// out yet: its reconcile lifts it; Unhold then reports false), and a group
// not held is left as it is.
func (q *Queue) Unhold(ctx context.Context, s Shard, group string, generation int64) (bool, error) {
	if err := s.Validate(); err != nil {
		return false, err
	}
	n, err := unholdScript.Run(ctx, q.rdb, []string{s.CalledOffKey(), s.holdKey(group)}, holdMember(group), generation).Int()
	if err != nil {
		return false, fmt.Errorf("queue: lift the hold of %s in %s: %w", group, s, err)
	}
	return n == 1, nil
}

// holdMember is a held group's member of the called-off set: no attempt
// group starts with "hold:".
func holdMember(group string) string { return "hold:" + group }

// IsCalledOff says whether attempt id of shard s belongs to a group that was
// called off (CallOff: never dial it) or is held (Hold: not now). Workers
// ask it with the pending opt-out in one round trip (DialBlocks).
func IsCalledOff(ctx context.Context, rdb redis.UniversalClient, s Shard, id string) (off, held bool, err error) {
	return calledOff(id, isCalledOffCmd(ctx, rdb, s, id))
}

// isCalledOffCmd asks for the scores of attempt id's call-off and hold.
func isCalledOffCmd(ctx context.Context, c redis.Cmdable, s Shard, id string) *redis.FloatSliceCmd {
	group := GroupOf(id)
	return c.ZMScore(ctx, s.CalledOffKey(), group, holdMember(group))
}

// calledOff reads the answer of isCalledOffCmd.
func calledOff(id string, cmd *redis.FloatSliceCmd) (off, held bool, err error) {
	scores, err := cmd.Result()
	if err != nil {
		return false, false, fmt.Errorf("queue: is %s called off: %w", id, err)
	}
	if len(scores) != 2 {
		return false, false, fmt.Errorf("queue: is %s called off: %d scores for 2 members", id, len(scores))
	}
	// A member that is not in the set scores 0 (go-redis maps nil to 0);
	// every member's score is its time in ms, never 0.
	return scores[0] != 0, scores[1] != 0, nil
}

// Blocks is what Redis holds against dialing an attempt now.
type Blocks struct {
	// CalledOff: its delivery was called off (CallOff); never dial it.
	CalledOff bool
	// Held: its delivery's plan is changing (Hold); not now.
	Held bool
	// OptOutPending: its number opted out in an opt-out MongoDB may not
	// have yet (MarkOptOutPending); never dial it.
	OptOutPending bool
}

// DialBlocks asks Redis, in one round trip, everything it may hold against
// dialing attempt id of shard s to number in namespace: a worker's last
// look before it dials (IsCalledOff and IsOptOutPending together).
func DialBlocks(ctx context.Context, rdb redis.UniversalClient, s Shard, id, namespace, number string) (Blocks, error) {
	var off *redis.FloatSliceCmd
	var pending *redis.IntCmd
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		off = isCalledOffCmd(ctx, p, s, id)
		pending = isOptOutPendingCmd(ctx, p, namespace, number)
		return nil
	})
	var b Blocks
	var err error
	if b.CalledOff, b.Held, err = calledOff(id, off); err != nil {
		return Blocks{}, err
	}
	if b.OptOutPending, err = optOutPending(pending); err != nil {
		return Blocks{}, err
	}
	return b, nil
}

// GroupOf is the group of attempt id "<group>-<n>"; an id of another form
// is its own group.
func GroupOf(id string) string {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 {
		return id
	}
	for _, c := range id[i+1:] {
		if c < '0' || c > '9' {
			return id
		}
	}
	return id[:i]
}

// EnsureGroup creates the shard's ready stream and consumer group if
// missing. Consumers call it on start; the scripts also create them on the
// first enqueue.
func (q *Queue) EnsureGroup(ctx context.Context, s Shard) error {
	err := q.rdb.XGroupCreateMkStream(ctx, s.ReadyKey(), q.group, "0").Err()
	if err != nil && !isBusyGroup(err) {
		return fmt.Errorf("queue: create group %s of %s: %w", q.group, s, err)
	}
	return nil
}

func isBusyGroup(err error) bool {
	return err != nil && len(err.Error()) >= 9 && err.Error()[:9] == "BUSYGROUP"
}

// DeadLetter is an attempt in a shard's dead-letter stream.
type DeadLetter struct {
	// EntryID is the dead-letter stream entry's id.
	EntryID string
	// ID is the attempt id.
	ID string
	// Due is the attempt's due time.
	Due time.Time
	// Reason says why it was given up on.
	Reason string
	// Deliveries is how many times a handler ran it.
	Deliveries int64
	// Consumer is the consumer that dead-lettered it.
	Consumer string
	// At is when it was dead-lettered.
	At time.Time
}

// DeadLetters lists up to count dead-lettered attempts of s, oldest first.
func (q *Queue) DeadLetters(ctx context.Context, s Shard, count int64) ([]DeadLetter, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	msgs, err := q.rdb.XRangeN(ctx, s.DeadKey(), "-", "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("queue: read dead letters of %s: %w", s, err)
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		str := func(k string) string { v, _ := m.Values[k].(string); return v }
		num := func(k string) int64 { n, _ := strconv.ParseInt(str(k), 10, 64); return n }
		out = append(out, DeadLetter{
			EntryID: m.ID, ID: str("id"), Due: time.UnixMilli(num("due")), Reason: str("reason"),
			Deliveries: num("deliveries"), Consumer: str("consumer"), At: time.UnixMilli(num("at")),
		})
	}
	return out, nil
}

// subscribeLocal registers a channel that is signalled when an attempt of s
// scheduled in this process became the earliest due.
func (q *Queue) subscribeLocal(s Shard) (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	q.mu.Lock()
	q.wakers[s] = append(q.wakers[s], ch)
	q.mu.Unlock()
	return ch, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		l := q.wakers[s]
		for i, c := range l {
			if c == ch {
				q.wakers[s] = append(l[:i:i], l[i+1:]...)
				break
			}
		}
		if len(q.wakers[s]) == 0 {
			delete(q.wakers, s)
		}
	}
}

// wakeLocal signals this process's promoters of s.
func (q *Queue) wakeLocal(s Shard) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, ch := range q.wakers[s] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
