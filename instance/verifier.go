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
	// discovered reads the pipelines discovered from repository
	// patterns, which verify as their pattern says.
	discovered func(context.Context) ([]pipeline.Discovered, error)
	logger     *slog.Logger
	client     *http.Client
}

func newVerifier(safe *config.SafeConfig, sink poller.Sink, st Store, logger *slog.Logger) *verifier {
	return &verifier{safe: safe, sink: sink, history: st, discovered: st.Discovered, logger: logger.With("component", "verify"), client: &http.Client{}}
}

// written returns every pipeline by name with the config that applies to
// it: the written ones, and each discovered one with its pattern's.
func (v *verifier) written(ctx context.Context) map[string]*config.Pipeline {
	c := v.safe.Get()
	m := make(map[string]*config.Pipeline, len(c.Pipelines))
	patterns := map[[2]string]*config.Pipeline{}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		if p.IsPattern() {
			patterns[[2]string{p.Repository, p.Name}] = p
			continue
		}
		m[p.Name] = p
	}
	if len(patterns) == 0 {
		return m
	}
	d, err := v.discovered(ctx)
	if err != nil {
		v.logger.Error("Reading the discovered pipelines", "err", err)
	}
	for _, p := range d {
		if w := patterns[[2]string{p.Pattern, p.Template}]; w != nil {
			m[p.Name] = w
		}
	}
	return m
}

// start checks the run's live site until ctx (the leadership term) ends,
// in a goroutine counted by wg; it never blocks the Applier, which calls it
// before it answers the deliveries of the commit: the pipeline's verify
// block (for a discovered pipeline, a read of the store) is looked up in
// that goroutine too.
func (v *verifier) start(ctx context.Context, wg *sync.WaitGroup, run *pipeline.Run) {
	wg.Go(func() {
		target, ok := verifyTarget(v.written(ctx), run.Pipeline)
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
func verifyTarget(pipelines map[string]*config.Pipeline, name string) (verify.Target, bool) {
	if p := pipelines[name]; p != nil && p.Verify != nil {
		return p.Verify.Target(), true
	}
	return verify.Target{}, false
}

// recheck checks each pipeline's live build again until ctx (the
// leadership term) ends: a leader task.
func (v *verifier) recheck(ctx context.Context) {
	checker := &verify.Checker{Client: v.client, Now: time.Now, Version: version.Version}
	rc := live.NewRechecker(v.history, v.sink, func() map[string]live.Recheck { return rechecks(v.written(ctx)) }, checker, v.logger.With("component", "recheck"))
	_ = rc.Run(ctx)
}

// rechecks lists the pipelines whose live build is checked again: those
// that verify a build, with a recheck_interval.
func rechecks(pipelines map[string]*config.Pipeline) map[string]live.Recheck {
	m := map[string]live.Recheck{}
	for name, p := range pipelines {
		if v := p.Verify; v != nil && v.Build != nil && v.RecheckInterval > 0 {
			m[name] = live.Recheck{Target: v.Target(), Interval: time.Duration(v.RecheckInterval)}
		}
	}
	return m
}
