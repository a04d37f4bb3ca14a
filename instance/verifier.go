package instance

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/common/version"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/poller"
	"github.com/pipeline-exporter/pipeline_exporter/verify"
)

// verifier runs the live-site checks the Applier asks for, one goroutine
// per run, and hands each result back to it as an event.
type verifier struct {
	safe   *config.SafeConfig
	sink   poller.Sink
	logger *slog.Logger
	client *http.Client
}

func newVerifier(safe *config.SafeConfig, sink poller.Sink, logger *slog.Logger) *verifier {
	return &verifier{safe: safe, sink: sink, logger: logger.With("component", "verify"), client: &http.Client{}}
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
			result = c.Check(ctx, run.ID, target)
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
		if p.Name != name || p.Verify == nil {
			continue
		}
		v := p.Verify
		var re *regexp.Regexp
		if v.BodyRegexp != nil {
			re = v.BodyRegexp.Regexp
		}
		return verify.Target{
			URL:          v.URL,
			ExpectStatus: v.ExpectStatus,
			Timeout:      time.Duration(v.Timeout),
			BodyContains: v.BodyContains,
			BodyRegexp:   re,
			Deadline:     time.Duration(v.Deadline),
		}, true
	}
	return verify.Target{}, false
}
