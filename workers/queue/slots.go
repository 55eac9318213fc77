package queue

import (
	"context"
	"sync"
)

// slotPool hands a consumer's handler slots to its per-shard readers and
// reclaimers with weighted fairness. A shard with work (active) is entitled
// to size*weight/(sum of active weights) slots; a reader never gets more than
// its entitlement minus what its shard already holds, and among waiting
// readers the one holding the fewest slots per weight goes first. An idle
// shard probes with one slot, so it holds nothing its neighbours need.
// Reclaimers (priority) are served first and are not capped: taking over a
// dead worker's entries is urgent and rare.
type slotPool struct {
	mu       sync.Mutex
	size     int
	free     int
	users    []*slotUser
	waiters  []*slotWaiter
	released chan struct{} // signalled (best effort) whenever slots return
}

// slotUser is one party drawing slots: a shard's reader or reclaimer.
type slotUser struct {
	weight float64
	held   int
	active bool
	// capped users (readers) are held to their share; reclaimers are not.
	capped bool
}

type slotWaiter struct {
	user     *slotUser
	want     int
	priority bool
	ch       chan int
}

func newSlotPool(size int) *slotPool {
	return &slotPool{size: size, free: size, released: make(chan struct{}, 1)}
}

// addUser registers a reader (capped) or reclaimer.
func (p *slotPool) addUser(weight float64, capped bool) *slotUser {
	u := &slotUser{weight: weight, capped: capped}
	p.mu.Lock()
	p.users = append(p.users, u)
	p.mu.Unlock()
	return u
}

// setActive records whether u's shard has work (its last read got entries).
func (p *slotPool) setActive(u *slotUser, active bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u.active != active {
		u.active = active
		p.grantLocked()
	}
}

// limitLocked is how many more slots u may take now.
func (p *slotPool) limitLocked(u *slotUser, want int) int {
	if !u.capped || !u.active {
		return want
	}
	var w float64
	for _, x := range p.users {
		if x.capped && x.active {
			w += x.weight
		}
	}
	share := int(float64(p.size)*u.weight/w + 0.999999)
	return min(want, share-u.held)
}

// limit is limitLocked under the lock.
func (p *slotPool) limit(u *slotUser, want int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limitLocked(u, want)
}

// acquire waits until u may take at least one slot and takes up to want. It
// returns 0 when ctx ends first.
func (p *slotPool) acquire(ctx context.Context, u *slotUser, want int, priority bool) int {
	w := &slotWaiter{user: u, want: want, priority: priority, ch: make(chan int, 1)}
	p.mu.Lock()
	p.waiters = append(p.waiters, w)
	p.grantLocked()
	p.mu.Unlock()
	select {
	case g := <-w.ch:
		return g
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return 0
		}
	}
	// Granted while ctx ended: give the slots back.
	g := <-w.ch
	p.free += g
	u.held -= g
	p.grantLocked()
	return 0
}

// tryAcquire takes up to want free slots without waiting, unless others
// already wait for them.
func (p *slotPool) tryAcquire(u *slotUser, want int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) > 0 {
		return 0
	}
	g := min(p.free, p.limitLocked(u, want))
	if g <= 0 {
		return 0
	}
	p.free -= g
	u.held += g
	return g
}

// release returns n of u's slots.
func (p *slotPool) release(u *slotUser, n int) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	p.free += n
	u.held -= n
	p.grantLocked()
	p.mu.Unlock()
	select {
	case p.released <- struct{}{}:
	default:
	}
}

func (p *slotPool) grantLocked() {
	for p.free > 0 && len(p.waiters) > 0 {
		best, bestLimit := -1, 0
		for i, w := range p.waiters {
			l := p.limitLocked(w.user, w.want)
			if l <= 0 {
				continue
			}
			if best >= 0 {
				b := p.waiters[best]
				if b.priority && !w.priority {
					continue
				}
				if b.priority == w.priority && float64(b.user.held)/b.user.weight <= float64(w.user.held)/w.user.weight {
					continue
				}
			}
			best, bestLimit = i, l
		}
		if best < 0 {
			return // the free slots belong to active shards between reads
		}
		w := p.waiters[best]
		g := min(p.free, bestLimit)
		p.waiters = append(p.waiters[:best], p.waiters[best+1:]...)
		p.free -= g
		w.user.held += g
		w.ch <- g
	}
}
