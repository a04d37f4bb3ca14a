package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Journal makes deliveries and run snapshots durable (implemented by store.Store).
type Journal interface {
	// HasDelivery reports whether the delivery is stored or queued; a
	// delivery whose commit was reported must be reported.
	HasDelivery(source Source, id string) (bool, error)
	// Submit queues one durable write of the delivery (may be nil) and the
	// runs; writes are committed in submission order; the channel receives
	// the commit result exactly once.
	Submit(d *Delivery, runs []*Run) <-chan error
}

// History is what the engine restores from at start (implemented by store.Store).
type engineHistory interface {
	ActiveRuns() ([]*Run, error)
	// LastFinishedRuns returns, per pipeline, its latest terminal run.
	LastFinishedRuns() ([]*Run, error)
	// LastSuccessRuns returns, per pipeline, its latest successful run.
	LastSuccessRuns() ([]*Run, error)
	MaxRunID() (int64, error)
}

// EngineOptions are the Engine's collaborators besides the Tracker and the Journal.
type EngineOptions struct {
	// Observers are called with every Update after its commit, outside the
	// lock, in commit order (the collector).
	Observers []func(Update)
	// StartVerify is called for StartVerify updates after their commit,
	// outside the lock.
	StartVerify func(*Run)
	// Now is the clock that decides when timeouts are due; time.Now when nil.
	Now func() time.Time
}

// Engine is the one writer around a Tracker: it applies events, hands the
// changed runs to the Journal, and tells observers once they are durable.
// It is safe for concurrent use. Concurrent deliveries are checked for
// duplicates in parallel, applied one at a time and committed together: the
// lock is not held while reading the Journal or waiting for the commit, so
// the Journal can group them into one transaction.
type Engine struct {
	t    *Tracker
	j    Journal
	opts EngineOptions

	mu       sync.Mutex
	inflight map[deliveryKey]struct{}
	// recent are the last recentMax deliveries committed, so that a
	// delivery whose original committed while Ingest read the Journal,
	// outside the lock, is still a duplicate. ring holds them in commit
	// order; once it is full, the oldest is at committed % recentMax.
	// recentMax is recentDeliveries except in tests.
	recent    map[deliveryKey]struct{}
	ring      []deliveryKey
	recentMax int
	// committed counts the deliveries ever added to recent; it is written
	// under mu and read without it before the Journal is read.
	committed atomic.Uint64
	// carried are the updates of failed writes; their runs are written
	// again, in their current state, with the next write, and observers
	// hear of them once that write commits.
	carried []Update
	seq     uint64

	// turn lets commit results be handled in submission order.
	turnMu   sync.Mutex
	turnCond *sync.Cond
	turn     uint64
}

// recentDeliveries is how many committed deliveries the Engine remembers:
// far more than commit during one HasDelivery read, which takes tens of
// microseconds, and about half a megabyte of keys. Past it Ingest reads the
// Journal again, under the lock, so the bound costs time, never a
// duplicate.
const recentDeliveries = 1 << 12

type deliveryKey struct {
	source Source
	id     string
}

// batch is one submitted write and what to do once it commits.
type batch struct {
	seq     uint64
	updates []Update
	done    <-chan error
	// delivery is set for a delivery added to the in-flight set.
	delivery *deliveryKey
}

// NewEngine returns an Engine around t writing to j.
func NewEngine(t *Tracker, j Journal, opts EngineOptions) *Engine {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Engine{
		t: t, j: j, opts: opts,
		inflight:  make(map[deliveryKey]struct{}),
		recent:    make(map[deliveryKey]struct{}),
		recentMax: recentDeliveries,
	}
	e.turnCond = sync.NewCond(&e.turnMu)
	return e
}

// Restore loads the Tracker's state from the history and starts the verify
// checks that were under way when the exporter stopped.
func (e *Engine) Restore(h engineHistory) error {
	active, err := h.ActiveRuns()
	if err != nil {
		return fmt.Errorf("loading active runs: %w", err)
	}
	lastFinished, err := h.LastFinishedRuns()
	if err != nil {
		return fmt.Errorf("loading last finished runs: %w", err)
	}
	lastSuccess, err := h.LastSuccessRuns()
	if err != nil {
		return fmt.Errorf("loading last successful runs: %w", err)
	}
	maxID, err := h.MaxRunID()
	if err != nil {
		return fmt.Errorf("loading the highest run id: %w", err)
	}
	e.mu.Lock()
	e.t.Restore(active, lastFinished, lastSuccess, maxID, nil)
	verifies := e.t.PendingVerifies()
	e.mu.Unlock()
	if e.opts.StartVerify != nil {
		for _, r := range verifies {
			e.opts.StartVerify(r)
		}
	}
	return nil
}

// Ingest applies the events of one webhook delivery and returns once the
// delivery and the runs it changed are durable. A delivery already stored
// or being stored is a duplicate and changes nothing; d is required. Errors
// wrap ErrUnavailable: the sender may retry.
func (e *Engine) Ingest(ctx context.Context, d *Delivery, events []Event) (Outcome, []int64, error) {
	key := deliveryKey{d.Source, d.ID}
	// The Journal is read outside the lock, so that deliveries do not wait
	// for each other's reads; what commits meanwhile is in e.recent.
	seen := e.committed.Load()
	dup, err := e.j.HasDelivery(d.Source, d.ID)
	// From here on e.mu is held unless the delivery is a duplicate or could
	// not be checked.
	if err == nil && !dup {
		e.mu.Lock()
		dup, err = e.duplicate(key, seen)
		if err != nil || dup {
			e.mu.Unlock()
		}
	}
	if err != nil {
		return "", nil, fmt.Errorf("%w: checking delivery %s: %w", ErrUnavailable, d.ID, err)
	}
	if dup {
		return OutcomeDuplicate, nil, nil
	}
	updates, applyErr := e.apply(events)
	if applyErr != nil {
		// The delivery is not stored, so that a retry applies its events
		// again; what the events before the failure changed is kept.
		b, ok := e.submit(nil, updates)
		e.mu.Unlock()
		if ok {
			_ = e.wait(ctx, b)
		}
		return "", nil, fmt.Errorf("%w: %w", ErrUnavailable, applyErr)
	}
	e.inflight[key] = struct{}{}
	b, _ := e.submit(d, updates)
	b.delivery = &key
	e.mu.Unlock()

	if err := e.wait(ctx, b); err != nil {
		return "", nil, err
	}
	if len(updates) == 0 {
		return OutcomeIgnored, nil, nil
	}
	return OutcomeAccepted, runIDs(updates), nil
}

// Apply applies events that come with no delivery to store (polled state,
// verify results) and returns once the runs they changed are durable.
func (e *Engine) Apply(ctx context.Context, events []Event) error {
	e.mu.Lock()
	updates, applyErr := e.apply(events)
	b, ok := e.submit(nil, updates)
	e.mu.Unlock()
	var err error
	if ok {
		err = e.wait(ctx, b)
	}
	if applyErr != nil {
		return errors.Join(fmt.Errorf("%w: %w", ErrUnavailable, applyErr), err)
	}
	return err
}

// Run applies timeouts when they fall due, at most a second late, until ctx
// is done.
func (e *Engine) Run(ctx context.Context) {
	for {
		e.expire(ctx)
		wait := time.Second
		e.mu.Lock()
		next, ok := e.t.NextDeadline()
		e.mu.Unlock()
		if ok {
			// The floor keeps a clock that disagrees with the Tracker's
			// from spinning the loop.
			wait = min(max(next.Sub(e.opts.Now()), 10*time.Millisecond), wait)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// expire applies due timeouts and retries failed writes.
func (e *Engine) expire(ctx context.Context) {
	e.mu.Lock()
	b, ok := e.submit(nil, e.t.Expire())
	e.mu.Unlock()
	if ok {
		_ = e.wait(ctx, b)
	}
}

// Snapshot returns the Tracker's per-pipeline state.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.t.Snapshot()
}

// SetSpecs replaces the pipelines after a config reload.
func (e *Engine) SetSpecs(specs []Spec) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.t.SetSpecs(specs)
}

// ActiveRuns returns copies of the runs in progress, oldest first.
func (e *Engine) ActiveRuns() []*Run {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.t.Active()
}

// duplicate reports whether the delivery is being stored or was stored
// after the Journal read that began when e.committed was seen. The caller
// holds e.mu.
func (e *Engine) duplicate(key deliveryKey, seen uint64) (bool, error) {
	if _, ok := e.inflight[key]; ok {
		return true, nil
	}
	if _, ok := e.recent[key]; ok {
		return true, nil
	}
	if e.committed.Load()-seen <= uint64(e.recentMax) {
		return false, nil
	}
	// More deliveries committed during the read than e.recent holds: the
	// original may be among the forgotten ones.
	return e.j.HasDelivery(key.source, key.id)
}

// remember adds a committed delivery to e.recent, forgetting the oldest
// when it is full. The caller holds e.mu.
func (e *Engine) remember(key deliveryKey) {
	n := e.committed.Load()
	if len(e.ring) < e.recentMax {
		e.ring = append(e.ring, key)
	} else {
		i := n % uint64(e.recentMax)
		delete(e.recent, e.ring[i])
		e.ring[i] = key
	}
	e.recent[key] = struct{}{}
	e.committed.Store(n + 1)
}

// apply runs the events through the Tracker; the caller holds e.mu.
func (e *Engine) apply(events []Event) ([]Update, error) {
	var all []Update
	for _, ev := range events {
		ups, err := e.t.Apply(ev)
		all = append(all, ups...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

// submit hands one write to the Journal: the delivery and the runs of the
// updates, with the runs of failed writes in their current state. It
// reports false when there is nothing to write. The caller holds e.mu, so
// writes are submitted in the order the Tracker made them.
func (e *Engine) submit(d *Delivery, updates []Update) (batch, bool) {
	carried := len(e.carried)
	if carried > 0 {
		updates = append(e.carried, updates...)
		e.carried = nil
	}
	if d == nil && len(updates) == 0 {
		return batch{}, false
	}
	runs := make([]*Run, 0, len(updates))
	for i, u := range updates {
		r := u.Run
		if i < carried {
			if cur := e.t.runByID(r.ID); cur != nil {
				r = cur
			}
		}
		if j := indexRun(runs, r.ID); j >= 0 {
			runs[j] = r
		} else {
			runs = append(runs, r)
		}
	}
	b := batch{seq: e.seq, updates: updates, done: e.j.Submit(d, runs)}
	e.seq++
	return b, true
}

func indexRun(runs []*Run, id int64) int {
	for i, r := range runs {
		if r.ID == id {
			return i
		}
	}
	return -1
}

// wait waits for the batch's commit and handles it. When ctx ends first,
// the commit is handled in the background, since later batches wait for
// their turn behind it.
func (e *Engine) wait(ctx context.Context, b batch) error {
	select {
	case err := <-b.done:
		return e.complete(b, err)
	case <-ctx.Done():
		go func() { _ = e.complete(b, <-b.done) }()
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// complete handles a commit result in submission order: observers and
// verify checks after a successful commit, a retry after a failed one.
func (e *Engine) complete(b batch, err error) error {
	e.turnMu.Lock()
	for e.turn != b.seq {
		e.turnCond.Wait()
	}
	e.turnMu.Unlock()

	if err != nil {
		e.mu.Lock()
		e.carried = append(e.carried, b.updates...)
		e.mu.Unlock()
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	} else {
		e.notify(b.updates)
	}

	e.turnMu.Lock()
	e.turn++
	e.turnCond.Broadcast()
	e.turnMu.Unlock()

	if b.delivery != nil {
		e.mu.Lock()
		delete(e.inflight, *b.delivery)
		if err == nil {
			e.remember(*b.delivery)
		}
		e.mu.Unlock()
	}
	return err
}

func (e *Engine) notify(updates []Update) {
	for _, u := range updates {
		for _, o := range e.opts.Observers {
			o(u)
		}
		if u.StartVerify && e.opts.StartVerify != nil {
			e.opts.StartVerify(u.Run)
		}
	}
}

func runIDs(updates []Update) []int64 {
	ids := make([]int64, 0, len(updates))
	for _, u := range updates {
		if !slices.Contains(ids, u.Run.ID) {
			ids = append(ids, u.Run.ID)
		}
	}
	return ids
}
