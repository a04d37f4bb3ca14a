// Package live keeps checking, on the leader, that each pipeline's site
// still serves the build that was last verified live there. Each recheck
// is a single attempt of the pipeline's verify check, and its result goes
// through the delivery log like a verify result: the Applier decides
// whether the pipeline is stale.
package live

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/verify"
)

// othersLimit is how many recent runs of a pipeline a check compares the
// site with to say which run's build it serves.
const othersLimit = 20

// Others returns up to 20 recent runs of run's pipeline other than run,
// newest first: the builds the site may show instead. A failed read
// returns none; the check then only says that the site does not show the
// build.
func Others(ctx context.Context, h pipeline.History, run *pipeline.Run) []*pipeline.Run {
	runs, err := h.ListRuns(ctx, pipeline.RunQuery{Pipeline: run.Pipeline, Limit: othersLimit + 1})
	if err != nil {
		return nil
	}
	others := runs[:0]
	for _, r := range runs {
		if r.ID != run.ID {
			others = append(others, r)
		}
	}
	return others
}

// Recheck is what a pipeline's rechecks need from its configuration.
type Recheck struct {
	Target verify.Target
	// Interval is how long after its last check the live build is
	// checked again.
	Interval time.Duration
}

// Sink takes recheck results (the leader's Applier).
type Sink interface {
	Apply(ctx context.Context, events []pipeline.Event) error
}

// Rechecker checks each pipeline's live build again once Interval has
// passed since its last check, one check per pipeline at a time. It reads
// the live builds from the store, so a new leader goes on where the last
// one stopped.
type Rechecker struct {
	history pipeline.History
	sink    Sink
	// rechecks returns the pipelines to recheck, by name, as the
	// configuration says now.
	rechecks func() map[string]Recheck
	checker  *verify.Checker
	logger   *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	inFlight map[string]bool
	wg       sync.WaitGroup
}

// NewRechecker returns a Rechecker; Run starts it.
func NewRechecker(h pipeline.History, sink Sink, rechecks func() map[string]Recheck, checker *verify.Checker, logger *slog.Logger) *Rechecker {
	now := checker.Now
	if now == nil {
		now = time.Now
	}
	return &Rechecker{history: h, sink: sink, rechecks: rechecks, checker: checker, logger: logger, now: now, inFlight: map[string]bool{}}
}

// maxWait bounds how long the loop sleeps without reading the live builds:
// a build verified meanwhile is first rechecked at most this late.
const maxWait = time.Minute

// Run rechecks until ctx is done (the leadership term ends), then waits
// for the checks under way, whose results it drops.
func (r *Rechecker) Run(ctx context.Context) error {
	defer r.wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		timer.Reset(r.step(ctx))
	}
}

// step starts the rechecks that are due and returns how long to wait for
// the next.
func (r *Rechecker) step(ctx context.Context) time.Duration {
	rechecks := r.rechecks()
	wait := maxWait
	for _, rc := range rechecks {
		wait = min(wait, rc.Interval)
	}
	if len(rechecks) == 0 {
		return wait
	}
	sums, err := r.history.Summaries(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("Reading the live builds to recheck failed", "err", err)
		}
		return min(wait, time.Second)
	}
	now := r.now()
	for _, s := range sums {
		rc, ok := rechecks[s.Pipeline]
		run := s.LastSuccess
		if !ok || rc.Interval <= 0 || run == nil || !run.Live() {
			continue
		}
		due := run.Verify.CheckedAt.Add(rc.Interval)
		if due.After(now) {
			wait = min(wait, due.Sub(now))
			continue
		}
		r.start(ctx, run, rc)
	}
	return max(wait, 10*time.Millisecond)
}

// start checks run's site in the background unless a check of its
// pipeline is still under way.
func (r *Rechecker) start(ctx context.Context, run *pipeline.Run, rc Recheck) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inFlight[run.Pipeline] {
		return
	}
	r.inFlight[run.Pipeline] = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.inFlight, run.Pipeline)
			r.mu.Unlock()
		}()
		res := r.checker.Recheck(ctx, run, rc.Target, Others(ctx, r.history, run))
		if ctx.Err() != nil {
			return
		}
		if !res.Success {
			r.logger.Info("Live build not found", "pipeline", run.Pipeline, "run_id", run.ID, "err", res.Error)
		}
		if err := r.sink.Apply(ctx, []pipeline.Event{res}); err != nil && ctx.Err() == nil {
			r.logger.Error("Recording a recheck result", "pipeline", run.Pipeline, "run_id", run.ID, "err", err)
		}
	}()
}
