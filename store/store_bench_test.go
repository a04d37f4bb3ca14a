package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
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

// realisticRun is a finished run shaped like the ones the Tracker stores
// (trigger, dispatch, three jobs, verify; one in ten failed), about 1 KB of
// JSON, as bench/seed.go seeds them.
func realisticRun(id int64, created time.Time) *pipeline.Run {
	status := pipeline.StatusSuccess
	if id%10 == 0 {
		status = pipeline.StatusFailed
	}
	at := func(s int) *time.Time { t := created.Add(time.Duration(s) * time.Second); return &t }
	stage := func(name string, from, to int, st pipeline.Status) pipeline.Stage {
		return pipeline.Stage{Name: name, Status: st, StartedAt: at(from), FinishedAt: at(to), DurationSeconds: float64(to - from)}
	}
	trigger := pipeline.Trigger{Source: pipeline.SourceSupabase, Event: "INSERT", DeliveryID: fmt.Sprintf("seed-%d", id), ReceivedAt: created}
	r := &pipeline.Run{
		ID:        id,
		Pipeline:  fmt.Sprintf("site-%d", id%10),
		Status:    status,
		Trigger:   trigger,
		Triggers:  []pipeline.Trigger{trigger},
		CreatedAt: created, StartedAt: at(20), FinishedAt: at(300), DurationSeconds: 300,
		GitHub: &pipeline.GitHubRun{
			Repository: "octo-org/octo-repo", RunID: 1_000_000_000 + id, RunAttempt: 1, WorkflowID: 2823525,
			Workflow: "deploy.yml", HTMLURL: fmt.Sprintf("https://github.com/octo-org/octo-repo/actions/runs/%d", 1_000_000_000+id),
			HeadSHA: "3484a3fb816e0859fd6e1cea078d76385ff50625", HeadBranch: "main", Event: "repository_dispatch",
			Status: "completed", Conclusion: string(status), CreatedAt: created.Add(15 * time.Second), UpdatedAt: *at(280),
		},
		Stages: []pipeline.Stage{
			stage(pipeline.StageTrigger, 0, 0, pipeline.StatusSuccess),
			stage(pipeline.StageDispatch, 0, 15, pipeline.StatusSuccess),
			stage("build", 20, 200, pipeline.StatusSuccess),
			stage("test", 20, 150, pipeline.StatusSuccess),
			stage("deploy", 200, 280, status),
		},
		SeenAt: created,
	}
	if status == pipeline.StatusSuccess {
		r.Stages = append(r.Stages, stage(pipeline.StageVerify, 280, 300, pipeline.StatusSuccess))
	} else {
		r.Error = "stage deploy failed"
	}
	return r
}

// webhookBody is the body GitHub sends for a workflow_run event: the
// published payload, compact as GitHub delivers it.
func webhookBody(b *testing.B) []byte {
	b.Helper()
	raw, err := os.ReadFile("testdata/workflow_run.requested.json")
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkIngestParallel measures durable ingest through the Applier on
// this store: each op is one published workflow_run delivery appended to the
// log and applied, acknowledged only after its group commit's fsync.
func BenchmarkIngestParallel(b *testing.B) {
	s := openBench(b)
	body := webhookBody(b)
	var events []pipeline.Event
	a := pipeline.NewApplier(s, nil, pipeline.ApplierOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	var next atomic.Int64
	b.SetParallelism(16) // webhook handlers wait on their delivery concurrently
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := next.Add(1)
			e := &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: fmt.Sprint(id), Kind: "workflow_run", ReceivedAt: t0, Body: body, Events: events}
			if _, err := a.Ingest(ctx, e); err != nil {
				b.Error(err)
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
