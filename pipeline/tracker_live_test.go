package pipeline

import (
	"testing"
	"time"
)

// TestRecheck: a verified build is rechecked; two misses in a row with no
// newer run make it stale, a hit clears it, a newer run in progress keeps
// misses from counting, and a result for a run that is no longer the live
// build is ignored.
func TestRecheck(t *testing.T) {
	at := fixtureCompleted.Add(time.Minute)
	spec := siteSpec()
	spec.Verify = true
	clock := &fakeClock{t: at}
	tr := newTestTracker(clock, spec)
	one(t, apply(t, tr, runEvent(t, "completed")))
	u := one(t, apply(t, tr, VerifyResultEvent{RunID: 1, Success: true, StartedAt: at, FinishedAt: at, URL: "https://example.com/", StatusCode: 200, Build: fixtureSHA, Served: fixtureSHA}))
	if !u.Run.Live() || u.Run.Verify.CheckedAt != at || *u.Run.Verify.VerifiedAt != at || u.Run.Verify.StatusCode != 200 {
		t.Fatalf("verified run: live %v, verify %+v", u.Run.Live(), u.Run.Verify)
	}

	miss := func(i int) RecheckResultEvent {
		return RecheckResultEvent{RunID: 1, CheckedAt: at.Add(time.Duration(i) * time.Minute), StatusCode: 200, Served: "1a2b3c4", Error: "site serves 1a2b3c4, not 3484a3f"}
	}
	steps := []struct {
		name   string
		ev     Event
		failed int
		stale  bool
		served string
	}{
		{"first miss", miss(1), 1, false, "1a2b3c4"},
		{"second miss", miss(2), 2, true, "1a2b3c4"},
		{"third miss", miss(3), 3, true, "1a2b3c4"},
		{"back", RecheckResultEvent{RunID: 1, Success: true, CheckedAt: at.Add(4 * time.Minute), Served: fixtureSHA}, 0, false, fixtureSHA},
		{"miss again", miss(5), 1, false, "1a2b3c4"},
	}
	for _, s := range steps {
		u := one(t, apply(t, tr, s.ev))
		v := u.Run.Verify
		if u.Run.ID != 1 || v.FailedRechecks != s.failed || v.Stale != s.stale || v.Served != s.served || !v.CheckedAt.Equal(s.ev.(RecheckResultEvent).CheckedAt) {
			t.Fatalf("%s: run %d verify %+v, want %d failed, stale %v", s.name, u.Run.ID, v, s.failed, s.stale)
		}
		if u.Finished || u.StartVerify || u.Run.Status != StatusSuccess {
			t.Fatalf("%s: a recheck changed the run's outcome: %+v", s.name, u)
		}
	}
	if _, reason := tr.Apply(RecheckResultEvent{RunID: 1, CheckedAt: at.Add(-time.Second)}); reason == "" {
		t.Error("a recheck older than the verify check was applied")
	}
	if _, reason := tr.Apply(RecheckResultEvent{RunID: 7, CheckedAt: at}); reason != "run 7 is not the live build of its pipeline" {
		t.Errorf("reason %q for an unknown run", reason)
	}

	// A newer run starts: the site may show anything meanwhile.
	newer := runEvent(t, "requested")
	newer.RunID++
	newer.HeadSHA = "5d6e7f8a9b0c1d2e3f405162738495a6b7c8d9e0"
	one(t, apply(t, tr, newer))
	for i := 6; i < 9; i++ {
		v := one(t, apply(t, tr, miss(i))).Run.Verify
		if v.FailedRechecks != 1 || v.Stale {
			t.Fatalf("miss %d while run 2 is in progress: %+v", i, v)
		}
	}
	// Run 2 verified: it is the live build now, and run 1's results are
	// ignored.
	done := runEvent(t, "completed")
	done.RunID, done.HeadSHA = newer.RunID, newer.HeadSHA
	one(t, apply(t, tr, done))
	one(t, apply(t, tr, VerifyResultEvent{RunID: 2, Success: true, StartedAt: at, FinishedAt: at.Add(10 * time.Minute), Build: newer.HeadSHA}))
	if _, reason := tr.Apply(miss(11)); reason != "run 1 is not the live build of its pipeline" {
		t.Errorf("reason %q for the replaced build", reason)
	}
	if v := one(t, apply(t, tr, RecheckResultEvent{RunID: 2, Success: true, CheckedAt: at.Add(11 * time.Minute)})).Run.Verify; v.Build != newer.HeadSHA {
		t.Errorf("run 2 verify %+v", v)
	}
}

// TestRecheckAfterRestore: the live build is restored with the last
// success, also when a later run failed, and its rechecks apply to the
// same run a late job event changes.
func TestRecheckAfterRestore(t *testing.T) {
	at := fixtureCompleted.Add(time.Minute)
	verifiedAt := at
	live := &Run{ID: 3, Pipeline: "site", Status: StatusSuccess, GitHub: &GitHubRun{RunID: fixtureRunID, RunAttempt: 1}, Verify: &VerifyCheck{Build: fixtureSHA, VerifiedAt: &verifiedAt, CheckedAt: at}}
	failed := &Run{ID: 4, Pipeline: "site", Status: StatusFailed}
	spec := siteSpec()
	tr := newTestTracker(&fakeClock{t: at}, spec)
	tr.Restore(nil, []*Run{failed}, 4, nil)
	tr.RestoreSuccess([]*Run{live.Clone()})
	// Run 4 started after run 3 and failed: misses do not make run 3 stale.
	v := one(t, apply(t, tr, RecheckResultEvent{RunID: 3, CheckedAt: at.Add(time.Minute)})).Run.Verify
	if v.FailedRechecks != 0 || v.Stale || !v.CheckedAt.Equal(at.Add(time.Minute)) {
		t.Fatalf("after restore: %+v", v)
	}
	job := jobEvent(t, "completed.success.with-organization")
	u := one(t, apply(t, tr, job))
	if u.Run.ID != 3 || u.Run.Verify == nil || !u.Run.Verify.CheckedAt.Equal(at.Add(time.Minute)) {
		t.Fatalf("a late job event changed another copy of run 3: %+v", u.Run.Verify)
	}
}
