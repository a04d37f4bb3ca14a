package pipeline

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// walkedDeadline is NextDeadline by walking every active run, as it was
// before the heap: the reference the heap must agree with.
func walkedDeadline(t *Tracker) (time.Time, bool) {
	var next time.Time
	found := false
	for _, tr := range t.active {
		if d, ok := deadline(tr); ok && (!found || d.Before(next)) {
			next, found = d, true
		}
	}
	return next, found
}

// checkDeadlines fails unless the heap holds exactly the active runs that
// have a deadline, each at its current deadline and place, and
// NextDeadline agrees with a walk of the runs.
func checkDeadlines(t *testing.T, step string, tr *Tracker) {
	t.Helper()
	want := 0
	for _, a := range tr.active {
		d, ok := deadline(a)
		if !ok {
			if a.heapSlot != 0 {
				t.Fatalf("%s: run %d has no deadline but is in the heap", step, a.run.ID)
			}
			continue
		}
		want++
		if a.heapSlot < 1 || a.heapSlot > len(tr.deadlines) || tr.deadlines[a.heapSlot-1] != a {
			t.Fatalf("%s: run %d is not at its place in the heap", step, a.run.ID)
		}
		if !a.deadline.Equal(d) {
			t.Fatalf("%s: run %d is in the heap at %v, its deadline is %v", step, a.run.ID, a.deadline, d)
		}
	}
	if len(tr.deadlines) != want {
		t.Fatalf("%s: heap holds %d runs, want %d", step, len(tr.deadlines), want)
	}
	for i := 1; i < len(tr.deadlines); i++ {
		if tr.deadlines.Less(i, (i-1)/2) {
			t.Fatalf("%s: heap order broken at %d", step, i)
		}
	}
	got, gotOK := tr.NextDeadline()
	ref, refOK := walkedDeadline(tr)
	if gotOK != refOK || !got.Equal(ref) {
		t.Fatalf("%s: NextDeadline %v %v, a walk of the runs says %v %v", step, got, gotOK, ref, refOK)
	}
}

// TestNextDeadlineHeap drives a Tracker through random triggers, workflow
// runs that claim them or run on their own, completions, timeouts, reloads
// with other timeouts and restores, and checks the heap after every step.
func TestNextDeadlineHeap(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		clock := &fakeClock{t: fixtureCreated}
		spec := siteSpec()
		tr := newTestTracker(clock, spec)
		var runIDs []int64
		nextRun := int64(1)
		for step := range 300 {
			name := ""
			switch op := rng.IntN(10); {
			case op < 3:
				name = "trigger"
				apply(t, tr, supabaseTrigger("d"+strconv.Itoa(step), clock.Now()))
			case op < 5:
				name = "workflow run requested"
				e := runEvent(t, "requested")
				e.RunID = nextRun
				nextRun++
				e.CreatedAt = clock.Now()
				e.UpdatedAt = clock.Now()
				apply(t, tr, e)
				runIDs = append(runIDs, e.RunID)
			case op < 6 && len(runIDs) > 0:
				name = "workflow run completed"
				i := rng.IntN(len(runIDs))
				e := runEvent(t, "completed")
				e.RunID = runIDs[i]
				e.CreatedAt = clock.Now()
				e.UpdatedAt = clock.Now()
				apply(t, tr, e)
				runIDs = append(runIDs[:i], runIDs[i+1:]...)
			case op < 8:
				name = "clock and Expire"
				clock.Advance(time.Duration(rng.IntN(20)) * time.Minute)
				tr.Expire()
			case op < 9:
				name = "reload"
				spec.DispatchTimeout = time.Duration(rng.IntN(3)) * 5 * time.Minute
				spec.Timeout = time.Duration(rng.IntN(3)) * time.Hour
				tr.SetSpecs([]Spec{spec})
			default:
				name = "restore"
				after := newTestTracker(clock, spec)
				after.Restore(active(tr), nil, tr.lastID, nil)
				tr = after
			}
			checkDeadlines(t, name, tr)
		}
	}
}

// BenchmarkTrackerNextDeadline is what the Applier asks of the Tracker per
// delivery: apply a job event to a run in progress, then find the next
// deadline, with 0 and with 30,000 other runs unfinished.
func BenchmarkTrackerNextDeadline(b *testing.B) {
	for _, unfinished := range []int{0, 30000} {
		b.Run("unfinished="+strconv.Itoa(unfinished), func(b *testing.B) {
			clock := &fakeClock{t: fixtureCreated}
			tr := newTestTracker(clock, siteSpec())
			run := runEvent(b, "requested")
			for i := range unfinished + 1 {
				run.RunID = int64(i + 1)
				one(b, apply(b, tr, run))
			}
			job := jobEvent(b, "in_progress")
			job.RunID = run.RunID
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				e := job
				e.StartedAt = job.StartedAt.Add(time.Duration(i) * time.Millisecond)
				if ups, reason := tr.Apply(e); len(ups) != 1 {
					b.Fatalf("event %d: %d updates (%s)", i, len(ups), reason)
				}
				if _, ok := tr.NextDeadline(); !ok {
					b.Fatal("no deadline")
				}
			}
		})
	}
}
