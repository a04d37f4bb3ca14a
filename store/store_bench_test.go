package store

import (
	"fmt"
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

// BenchmarkSubmitParallel measures durable ingest: each op is one delivery
// and one run, acknowledged only after its group commit's fsync.
func BenchmarkSubmitParallel(b *testing.B) {
	s := openBench(b)
	body := make([]byte, 4<<10)
	var next atomic.Int64
	b.SetParallelism(16) // webhook handlers wait on their Submit concurrently
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := next.Add(1)
			d := &pipeline.Delivery{Source: pipeline.SourceGitHub, ID: fmt.Sprint(id), Event: "workflow_run", ReceivedAt: t0, Body: body}
			if err := <-s.Submit(d, []*pipeline.Run{testRun(id, "site", pipeline.StatusRunning, pipeline.SourceGitHub, t0)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/float64(s.commits.Load()), "requests/commit")
}

func BenchmarkListRuns(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		s := openBench(b)
		if err := s.BulkLoad(seedRuns(n)); err != nil {
			b.Fatal(err)
		}
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
					runs, err := s.ListRuns(bc.q)
					if err != nil || len(runs) == 0 {
						b.Fatalf("ListRuns = %d runs, %v", len(runs), err)
					}
				}
			})
		}
	}
}

func BenchmarkHasDelivery(b *testing.B) {
	s := openBench(b)
	const n = 10000
	chans := make([]<-chan error, n)
	for i := range n {
		chans[i] = s.Submit(&pipeline.Delivery{Source: pipeline.SourceSupabase, ID: fmt.Sprintf("%032x", i), Event: "INSERT", ReceivedAt: t0, Body: []byte("{}")}, nil)
	}
	for _, ch := range chans {
		if err := <-ch; err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		want bool
	}{{"hit", true}, {"miss", false}} {
		b.Run(bc.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				id := fmt.Sprintf("%032x", i%n)
				if !bc.want {
					id += "x"
				}
				ok, err := s.HasDelivery(pipeline.SourceSupabase, id)
				if err != nil || ok != bc.want {
					b.Fatalf("HasDelivery(%s) = %v, %v", id, ok, err)
				}
				i++
			}
		})
	}
}
