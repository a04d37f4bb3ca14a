package live

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store"
	"github.com/pipeline-exporter/pipeline_exporter/verify"
)

const (
	liveSHA = "5d6e7f8a9b0c1d2e3f405162738495a6b7c8d9e0"
	oldSHA  = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
)

// liveStore is a SQLite store and its Applier with one pipeline whose run
// 1 was verified live showing liveSHA.
func liveStore(t *testing.T) (*store.Store, *pipeline.Applier) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	spec := pipeline.Spec{Name: "site", Workflow: "deploy.yml", Verify: true, Timeout: time.Hour, DispatchTimeout: time.Hour}
	a, err := pipeline.NewApplier(ctx, st, []pipeline.Spec{spec}, pipeline.ApplierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	now := time.Now().UTC()
	if err := a.Apply(ctx, []pipeline.Event{pipeline.WorkflowRunEvent{
		Repository: "acme/site", RunID: 41, RunAttempt: 1, WorkflowPath: ".github/workflows/deploy.yml", HeadBranch: "main",
		HeadSHA: liveSHA, Event: "push", Status: "completed", Conclusion: "success", CreatedAt: now, UpdatedAt: now,
	}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, []pipeline.Event{pipeline.VerifyResultEvent{RunID: 1, Success: true, StartedAt: now, FinishedAt: now, Build: liveSHA, Served: liveSHA}}); err != nil {
		t.Fatal(err)
	}
	return st, a
}

func liveOf(t *testing.T, h pipeline.History) *pipeline.VerifyCheck {
	t.Helper()
	sums, err := h.Summaries(context.Background())
	if err != nil || len(sums) != 1 || sums[0].LastSuccess == nil || !sums[0].LastSuccess.Live() {
		t.Fatalf("summaries %+v, %v: want site's run 1 live", sums, err)
	}
	return sums[0].LastSuccess.Verify
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRechecker: the live build is rechecked every interval through the
// Applier; a rollback makes it stale after two misses and names what is
// served, and the build back clears it.
func TestRechecker(t *testing.T) {
	st, a := liveStore(t)
	var serving atomic.Value
	serving.Store(liveSHA)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Commit", serving.Load().(string))
	}))
	t.Cleanup(site.Close)
	target := verify.Target{URL: site.URL, Timeout: time.Second, Build: &verify.Build{Header: "X-Commit"}}
	rc := NewRechecker(st, a, func() map[string]Recheck {
		return map[string]Recheck{"site": {Target: target, Interval: 50 * time.Millisecond}}
	}, &verify.Checker{Client: site.Client()}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = rc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	verified := liveOf(t, st).CheckedAt
	waitFor(t, "recheck", func() bool { return liveOf(t, st).CheckedAt.After(verified) })
	if v := liveOf(t, st); v.Stale || v.FailedRechecks != 0 || v.Served != liveSHA {
		t.Fatalf("after a recheck that found the build: %+v", v)
	}

	serving.Store(oldSHA)
	waitFor(t, "stale build", func() bool { return liveOf(t, st).Stale })
	if v := liveOf(t, st); v.FailedRechecks < 2 || v.Served != oldSHA || v.Error != "site serves 1a2b3c4, not 5d6e7f8" {
		t.Errorf("stale: %+v", v)
	}
	serving.Store(liveSHA)
	waitFor(t, "fresh build", func() bool { v := liveOf(t, st); return !v.Stale && v.FailedRechecks == 0 })
}

// TestRecheckOneAtATime: a hung site holds one recheck per pipeline at a
// time, each bounded by the timeout, however short the interval.
func TestRecheckOneAtATime(t *testing.T) {
	st, a := liveStore(t)
	var inFlight, most, requests atomic.Int32
	site := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-r.Context().Done()
	}))
	t.Cleanup(site.Close)
	const timeout = 200 * time.Millisecond
	target := verify.Target{URL: site.URL, Timeout: timeout, Build: &verify.Build{Header: "X-Commit"}}
	rc := NewRechecker(st, a, func() map[string]Recheck {
		return map[string]Recheck{"site": {Target: target, Interval: 10 * time.Millisecond}}
	}, &verify.Checker{Client: site.Client()}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { _ = rc.Run(ctx); close(done) }()
	waitFor(t, "stale build", func() bool { return liveOf(t, st).Stale })
	cancel()
	<-done
	elapsed := time.Since(start)
	if most.Load() != 1 {
		t.Errorf("%d rechecks of one pipeline at once, want 1", most.Load())
	}
	if n, limit := requests.Load(), int32(elapsed/timeout)+1; n > limit {
		t.Errorf("%d requests in %v, more than one per %v timeout (%d)", n, elapsed, timeout, limit)
	}
	if v := liveOf(t, st); v.Error != fmt.Sprintf("timeout after %s", timeout) {
		t.Errorf("error %q", v.Error)
	}
}
