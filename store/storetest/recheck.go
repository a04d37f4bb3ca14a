package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// RecheckInterval is verify.recheck_interval's default: how often the
// leader rechecks each pipeline's live build.
const RecheckInterval = 5 * time.Minute

// Clock is a clock that only Round moves, for a store's retention and the
// Org's Applier alike.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock an hour after the live builds were verified.
func NewClock() *Clock { return &Clock{now: at(3600)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Clock) add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// Org is an organization's pipelines whose live builds the leader
// rechecks: n pipelines in a store, each with one live build (liveRun),
// and an Applier over the store that applies the rechecks as the leader's
// does, on a clock that Round moves.
type Org struct {
	n     int
	a     *pipeline.Applier
	stop  context.CancelFunc
	done  chan error
	clock *Clock
}

// NewOrg saves the live builds of n pipelines in s and starts an Applier
// over it on clock; Close stops the Applier.
func NewOrg(tb testing.TB, s Store, n int, clock *Clock) *Org {
	tb.Helper()
	ctx := context.Background()
	runs := make([]*pipeline.Run, n)
	for i := range runs {
		runs[i] = liveRun(int64(i+1), fmt.Sprintf("repo-%d", i), 0)
	}
	tx, err := s.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if err := tx.SaveRuns(runs); err != nil {
		_ = tx.Rollback()
		tb.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	o := &Org{n: n, clock: clock, done: make(chan error, 1)}
	if o.a, err = pipeline.NewApplier(ctx, s, nil, pipeline.ApplierOptions{Now: clock.Now}); err != nil {
		tb.Fatal(err)
	}
	ctx, o.stop = context.WithCancel(ctx)
	go func() { o.done <- o.a.Run(ctx) }()
	return o
}

// Round moves the clock on by RecheckInterval and applies one recheck of
// every pipeline's live build that found it, each submitted on its own
// goroutine as the Rechecker's checks are (so they share group commits).
func (o *Org) Round(tb testing.TB) {
	tb.Helper()
	now := o.clock.add(RecheckInterval)
	errs := make(chan error, o.n)
	for i := range o.n {
		go func() {
			errs <- o.a.Apply(context.Background(), []pipeline.Event{pipeline.RecheckResultEvent{
				RunID: int64(i + 1), Success: true, CheckedAt: now, URL: "https://example.com/",
				StatusCode: 200, ResponseSeconds: 0.084, Served: liveBuild,
			}})
		}()
	}
	for range o.n {
		if err := <-errs; err != nil {
			tb.Fatalf("applying a recheck: %v", err)
		}
	}
}

// Close stops the Applier.
func (o *Org) Close(tb testing.TB) {
	tb.Helper()
	o.stop()
	if err := <-o.done; err != nil {
		tb.Errorf("Applier: %v", err)
	}
}

// BenchmarkRecheckDay applies one day of rechecks of n pipelines' live
// builds at the default interval (288 rounds of n rechecks) to a new
// store from open, calling prune after each round as the pruner runs
// every minute, and reports what the log holds at the end of the day
// (size says: its entries and the bytes of its table and indexes). One
// op is one day.
func BenchmarkRecheckDay(b *testing.B, n int, open func(b *testing.B, clock *Clock) Store,
	prune func(Store) error, size func(b *testing.B, s Store) (entries, bytes int64)) {
	rounds := int(24 * time.Hour / RecheckInterval)
	var entries, bytes int64
	for b.Loop() {
		clock := NewClock()
		s := open(b, clock)
		org := NewOrg(b, s, n, clock)
		for range rounds {
			org.Round(b)
			if err := prune(s); err != nil {
				b.Fatal(err)
			}
		}
		org.Close(b)
		entries, bytes = size(b, s)
	}
	b.ReportMetric(float64(rounds*n), "rechecks/day")
	b.ReportMetric(float64(entries), "log-entries")
	b.ReportMetric(float64(bytes)/1e6, "log-MB")
	if entries > 0 {
		b.ReportMetric(float64(bytes)/float64(entries), "log-B/entry")
	}
}
