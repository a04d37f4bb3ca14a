package pipeline

import (
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
		if ups, reason := tr.Apply(e); len(ups) != 1 {
			b.Fatalf("run %d: %d updates (%s)", e.RunID, len(ups), reason)
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
		if ups, reason := tr.Apply(e); len(ups) != 1 {
			b.Fatalf("event %d: %d updates (%s)", i, len(ups), reason)
		}
	}
}

// BenchmarkTrackerLateTrigger is what every GitHub trigger now costs
// before it opens a pending run: the look for the workflow run it started
// among benchRuns runs in progress and a full finished cache, none of them
// its run.
func BenchmarkTrackerLateTrigger(b *testing.B) {
	tr, _ := benchTracker(b)
	done := runEvent(b, "completed")
	for i := range finishedCacheSize {
		e := done
		e.RunID = int64(benchRuns + i + 1)
		if ups, reason := tr.Apply(e); len(ups) != 1 || !ups[0].Finished {
			b.Fatalf("run %d: %d updates (%s)", e.RunID, len(ups), reason)
		}
	}
	spec := tr.spec("site")
	push := TriggerEvent{
		// The values of fixtures/github/push/with-new-branch.json, in the
		// runs' repository.
		Trigger:    Trigger{Source: SourceGitHub, Event: "push", ReceivedAt: fixtureCreated, Ref: "refs/heads/master", SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246"},
		Type:       "push",
		Repository: fixtureRepo,
		Branch:     "master",
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if tr.joinStarted(spec, push) {
			b.Fatal("the push joined a run of another commit")
		}
	}
}
