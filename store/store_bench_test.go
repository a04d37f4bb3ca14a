package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store/storetest"
)

func openBench(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// webhookBody is the body GitHub sends for a completed workflow_run: the
// published payload, compact as GitHub delivers it.
func webhookBody(b *testing.B) []byte {
	b.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, fixtures.MustLoad("github/workflow_run/completed.json")); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkIngestParallel measures durable ingest through the Applier on
// this store: each op is one published workflow_run delivery (its body and
// its event: a new run, completed) appended to the log, applied to a
// pipeline that follows its workflow and committed with the run,
// acknowledged only after its group commit's fsync. Completed runs keep
// the Tracker's set of active runs empty, as a steady state does.
func BenchmarkIngestParallel(b *testing.B) {
	s := openBench(b)
	body := webhookBody(b)
	p := fixtures.MustDecode(body)
	completed := pipeline.WorkflowRunEvent{
		Repository:   p.String("repository.full_name"),
		RunAttempt:   1,
		WorkflowID:   p.Int("workflow_run.workflow_id"),
		WorkflowPath: p.String("workflow_run.path"),
		HeadBranch:   p.String("workflow_run.head_branch"),
		HeadSHA:      p.String("workflow_run.head_sha"),
		Event:        p.String("workflow_run.event"),
		Status:       p.String("workflow_run.status"),
		Conclusion:   p.String("workflow_run.conclusion"),
		CreatedAt:    p.Time("workflow_run.created_at"),
		UpdatedAt:    p.Time("workflow_run.updated_at"),
	}
	spec := pipeline.Spec{Name: "site", Workflow: "test.yml"}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := pipeline.NewApplier(ctx, s, []pipeline.Spec{spec}, pipeline.ApplierOptions{})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	var next atomic.Int64
	b.SetParallelism(16) // webhook handlers wait on their delivery concurrently
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := next.Add(1)
			ev := completed
			ev.RunID = id
			e := &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: fmt.Sprint(id), Kind: "workflow_run", ReceivedAt: t0, Body: body, Events: []pipeline.Event{ev}}
			res, err := a.Ingest(ctx, e)
			if err != nil || res.Outcome != pipeline.OutcomeAccepted {
				b.Errorf("delivery %d: %+v, %v; want accepted", id, res, err)
				return
			}
		}
	})
}

func BenchmarkListRuns(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		s := openBench(b)
		bulkLoad(b, s, seedRuns(n))
		newest := t0.Add(time.Duration(n) * time.Hour)
		for _, bc := range []struct {
			name string
			q    pipeline.RunQuery
		}{
			{"all", pipeline.RunQuery{}},
			{"pipeline", pipeline.RunQuery{Pipeline: "docs"}},
			{"statuses", pipeline.RunQuery{Statuses: []pipeline.Status{pipeline.StatusFailed, pipeline.StatusTimedOut}}},
			{"pipeline+status", pipeline.RunQuery{Pipeline: "docs", Statuses: []pipeline.Status{pipeline.StatusFailed}}},
			{"trigger", pipeline.RunQuery{Trigger: pipeline.SourceSupabase}},
			{"since-week", pipeline.RunQuery{Since: newest.Add(-7 * 24 * time.Hour)}},
			{"until-oldest", pipeline.RunQuery{Until: t0.Add(100 * time.Hour)}},
			// The worst case: the range holds every run, all read from the
			// created_at index to find the newest 100.
			{"since-all", pipeline.RunQuery{Since: t0}},
			{"cursor-middle", pipeline.RunQuery{BeforeID: int64(n / 2)}},
		} {
			b.Run(fmt.Sprintf("runs=%d/%s", n, bc.name), func(b *testing.B) {
				bc.q.Limit = 100
				for b.Loop() {
					runs, err := s.ListRuns(context.Background(), bc.q)
					if err != nil || len(runs) == 0 {
						b.Fatalf("ListRuns = %d runs, %v", len(runs), err)
					}
				}
			})
		}
	}
}

// BenchmarkSummaries measures the store read of every scrape at 1,000
// pipelines (storetest.BenchmarkSummaries).
func BenchmarkSummaries(b *testing.B) {
	storetest.BenchmarkSummaries(b, openBench(b), 1000)
}
