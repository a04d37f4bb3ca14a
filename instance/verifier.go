package instance

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/common/version"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/live"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/poller"
	"github.com/pipeline-exporter/pipeline_exporter/verify"
)

// verifier runs the live-site checks the Applier asks for, one goroutine
// per run, and hands each result back to it as an event.
type verifier struct {
	safe *config.SafeConfig
	sink poller.Sink
	// history names the other runs of a pipeline whose build the site
	// may show instead, and the live builds to recheck.
	history pipeline.History
	logger  *slog.Logger
	client  *http.Client
}

func newVerifier(safe *config.SafeConfig, sink poller.Sink, history pipeline.History, logger *slog.Logger) *verifier {
	return &verifier{safe: safe, sink: sink, history: history, logger: logger.With("component", "verify"), client: &http.Client{}}
}

// start checks the run's live site until ctx (the leadership term) ends,
// in a goroutine counted by wg; it never blocks the Applier.
func (v *verifier) start(ctx context.Context, wg *sync.WaitGroup, run *pipeline.Run) {
	target, ok := verifyTarget(v.safe.Get(), run.Pipeline)
	wg.Go(func() {
		// A pipeline that lost its verify block in a reload finishes the
		// stage rather than leave the run waiting for its timeout.
		now := time.Now()
		result := pipeline.VerifyResultEvent{RunID: run.ID, Success: true, StartedAt: now, FinishedAt: now}
		if ok {
			c := verify.Checker{Client: v.client, Now: time.Now, Version: version.Version}
			result = c.Check(ctx, run, target, live.Others(ctx, v.history, run))
		}
		if ctx.Err() != nil {
			// Shutting down or no longer leading: the verify stage stays
			// running in the store and the next leader checks it again.
			return
		}
		if err := v.sink.Apply(ctx, []pipeline.Event{result}); err != nil {
			v.logger.Error("Recording a verify result", "run_id", run.ID, "err", err)
		}
	})
}

// verifyTarget is the verify check configured for a pipeline, if any.
func verifyTarget(c *config.Config, name string) (verify.Target, bool) {
	for _, p := range c.Pipelines {
		if p.Name == name && p.Verify != nil {
			return p.Verify.Target(), true
		}
	}
	return verify.Target{}, false
}

// recheck checks each pipeline's live build again until ctx (the
// leadership term) ends: a leader task.
func (v *verifier) recheck(ctx context.Context) {
	checker := &verify.Checker{Client: v.client, Now: time.Now, Version: version.Version}
	rc := live.NewRechecker(v.history, v.sink, func() map[string]live.Recheck { return rechecks(v.safe.Get()) }, checker, v.logger.With("component", "recheck"))
	_ = rc.Run(ctx)
}

// rechecks lists the pipelines whose live build is checked again: those
// that verify a build, with a recheck_interval.
func rechecks(c *config.Config) map[string]live.Recheck {
	m := map[string]live.Recheck{}
	for _, p := range c.Pipelines {
		if v := p.Verify; v != nil && v.Build != nil && v.RecheckInterval > 0 {
			m[p.Name] = live.Recheck{Target: v.Target(), Interval: time.Duration(v.RecheckInterval)}
		}
	}
	return m
}
