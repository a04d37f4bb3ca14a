package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/common/version"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/verify"
)

// verifier runs the live-site checks the Applier asks for, one goroutine
// per run, and hands each result back to it as an event.
type verifier struct {
	wg     *sync.WaitGroup
	safe   *config.SafeConfig
	sink   *leadership
	logger *slog.Logger
	client *http.Client
}

func newVerifier(wg *sync.WaitGroup, safe *config.SafeConfig, sink *leadership, logger *slog.Logger) *verifier {
	return &verifier{wg: wg, safe: safe, sink: sink, logger: logger.With("component", "verify"), client: &http.Client{}}
}

// start checks the run's live site until ctx (the leadership term) ends;
// it never blocks the Applier.
func (v *verifier) start(ctx context.Context, run *pipeline.Run) {
	target, ok := verifyTarget(v.safe.Get(), run.Pipeline)
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
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
	}()
}
