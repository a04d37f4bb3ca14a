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

// webhookBody is the body GitHub sends for a workflow_run event: the
// published payload, compact as GitHub delivers it.
func webhookBody(b *testing.B) []byte {
	b.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, fixtures.MustLoad("github/workflow_run/requested.json")); err != nil {
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
