package pipeline

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// benchRuns is how many workflow runs are in progress at once: far more
// than a site pipeline has, so that lookups by run are measured too.
const benchRuns = 1000

// benchTracker returns a Tracker with benchRuns runs in progress, started
// from the workflow_run fixture, and a job event of the fixtures to vary.
func benchTracker(b *testing.B) (*Tracker, WorkflowJobEvent) {
	clock := &fakeClock{t: fixtureCreated}
	tr := newTestTracker(clock, siteSpec())
	run := runEvent(b, "requested")
	for i := range benchRuns {
		e := run
		e.RunID = int64(i + 1)
		if _, err := tr.Apply(e); err != nil {
			b.Fatal(err)
		}
	}
	return tr, jobEvent(b, "in_progress")
}

// BenchmarkTrackerApply applies workflow_job events spread over many runs,
// eight jobs per run, each event a newer in_progress so that every one
// changes a stage and yields an Update.
func BenchmarkTrackerApply(b *testing.B) {
	tr, job := benchTracker(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e := job
		e.RunID = int64(i%benchRuns + 1)
		e.JobID = int64(i/benchRuns%8 + 1)
		e.StartedAt = job.StartedAt.Add(time.Duration(i) * time.Millisecond)
		ups, err := tr.Apply(e)
		if err != nil || len(ups) != 1 {
			b.Fatalf("event %d: %d updates, %v", i, len(ups), err)
		}
	}
}

// instantJournal commits every write at once, so that the Engine's own cost
// is measured.
type instantJournal struct{}

func (instantJournal) HasDelivery(Source, string) (bool, error) { return false, nil }

func (instantJournal) Submit(*Delivery, []*Run) <-chan error {
	ch := make(chan error, 1)
	ch <- nil
	return ch
}

// BenchmarkEngineIngest is the webhook hot path: concurrent deliveries of
// workflow_job events, each applied, submitted and observed.
func BenchmarkEngineIngest(b *testing.B) {
	tr, job := benchTracker(b)
	e := NewEngine(tr, instantJournal{}, EngineOptions{Observers: []func(Update){func(Update) {}}})
	var seq atomic.Int64
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
