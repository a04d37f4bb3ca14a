package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// lookupCost is what one HasDelivery costs the store: a SQLite read of
// 16-40 us, measured by the store's delivery lookup benchmark.
const lookupCost = 20 * time.Microsecond

// costlyJournal costs what the store costs in the caller's goroutine: a
// busy lookup and the JSON encoding of the runs. It commits every write at
// once, so that the Engine's own contention is measured.
type costlyJournal struct{}

func (costlyJournal) HasDelivery(Source, string) (bool, error) {
	// A spin, not a sleep: the read keeps a CPU busy, which is what
	// contends with the other deliveries.
	for start := time.Now(); time.Since(start) < lookupCost; {
	}
	return false, nil
}

func (costlyJournal) Submit(_ *Delivery, runs []*Run) <-chan error {
	ch := make(chan error, 1)
	for _, r := range runs {
		if _, err := json.Marshal(r); err != nil {
			ch <- err
			return ch
		}
	}
	ch <- nil
	return ch
}

// BenchmarkEngineIngestJournalCost is BenchmarkEngineIngest against a
// journal with the store's costs: concurrent deliveries must not wait for
// each other's lookups.
func BenchmarkEngineIngestJournalCost(b *testing.B) {
	tr, job := benchTracker(b)
	e := NewEngine(tr, costlyJournal{}, EngineOptions{Observers: []func(Update){func(Update) {}}})
	var seq atomic.Int64
	// 16 clients at -cpu 2, as the webhook load test sends.
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			ev := job
			ev.RunID = i%benchRuns + 1
			ev.JobID = i/benchRuns%8 + 1
			ev.StartedAt = job.StartedAt.Add(time.Duration(i) * time.Millisecond)
			d := &Delivery{Source: SourceGitHub, ID: fmt.Sprint(i), Event: "workflow_job"}
			if o, _, err := e.Ingest(context.Background(), d, []Event{ev}); err != nil || o != OutcomeAccepted {
				b.Fatalf("delivery %d: %s %v", i, o, err)
			}
		}
	})
}
