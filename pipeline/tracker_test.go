package pipeline

import (
	"slices"
	"testing"
	"time"
)

func TestWorkflowMatch(t *testing.T) {
	withGitHubRule := func(events ...string) Spec {
		s := siteSpec()
		s.Triggers = append(s.Triggers, TriggerRule{Source: SourceGitHub, Events: events})
		return s
	}
	tests := []struct {
		name  string
		spec  func() Spec
		event func(*WorkflowRunEvent)
		want  bool
	}{
		{name: "file name", spec: siteSpec, want: true},
		{name: "numeric workflow id", spec: func() Spec { s := siteSpec(); s.Workflow = "2823525"; return s }, want: true},
		{
			name: "path with @ref",
			spec: siteSpec,
			// Reusable and required workflows report their path with the
			// ref they were taken from.
			event: func(e *WorkflowRunEvent) { e.WorkflowPath = ".github/workflows/test.yml@refs/heads/master" },
			want:  true,
		},
		{name: "other workflow", spec: func() Spec { s := siteSpec(); s.Workflow = "deploy.yml"; return s }},
		{name: "other workflow id", spec: func() Spec { s := siteSpec(); s.Workflow = "2823526"; return s }},
		{name: "branch not listed", spec: func() Spec { s := siteSpec(); s.Branches = []string{"main"}; return s }},
		{name: "every branch", spec: func() Spec { s := siteSpec(); s.Branches = nil; return s }, want: true},
		{name: "github rule allows the event", spec: func() Spec { return withGitHubRule("push", "repository_dispatch") }, want: true},
		{name: "github rule excludes the event", spec: func() Spec { return withGitHubRule("push") }},
		{name: "github rule with every event", spec: func() Spec { return withGitHubRule() }, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: fixtureCreated}
			tr := newTestTracker(clock, tc.spec())
			ev := runEvent(t, "requested")
			if tc.event != nil {
				tc.event(&ev)
			}
			ups := apply(t, tr, ev)
			if !tc.want {
				if len(ups) != 0 {
					t.Fatalf("got %d updates for a run no pipeline follows", len(ups))
				}
				return
			}
			r := one(t, ups).Run
			if r.ID != 1 || r.Pipeline != "site" || r.Status != StatusRunning {
				t.Errorf("run %d %s %s, want 1 site running", r.ID, r.Pipeline, r.Status)
			}
			want := Trigger{Source: SourceGitHub, Event: "repository_dispatch", ReceivedAt: fixtureCreated, Ref: "master", SHA: fixtureSHA}
			if !sameTrigger(r.Trigger, want) {
				t.Errorf("trigger %+v, want %+v", r.Trigger, want)
			}
			if got := stageNames(r); !slices.Equal(got, []string{"trigger:success"}) {
				t.Errorf("stages %v, want [trigger:success]", got)
			}
			if r.GitHub == nil || r.GitHub.RunID != fixtureRunID || r.GitHub.Workflow != "test.yml" || r.GitHub.Repository != "octo-org/octo-repo" {
				t.Errorf("github %+v", r.GitHub)
			}
			if !r.CreatedAt.Equal(fixtureCreated) || r.StartedAt == nil || !r.StartedAt.Equal(mustTime("2020-10-05T16:33:49Z")) {
				t.Errorf("created %v started %v", r.CreatedAt, r.StartedAt)
			}
		})
	}
}

func TestRunConclusion(t *testing.T) {
	tests := []struct {
		conclusion string
		status     Status
		err        string
	}{
		{"success", StatusSuccess, ""},
		{"neutral", StatusSuccess, ""},
		{"skipped", StatusCancelled, "workflow run skipped"},
		{"failure", StatusFailed, "workflow run failed"},
		{"startup_failure", StatusFailed, "workflow run failed to start"},
		{"cancelled", StatusCancelled, "workflow run cancelled"},
		{"stale", StatusCancelled, "workflow run stale"},
		{"timed_out", StatusTimedOut, "workflow run timed out"},
		{"something_new", StatusFailed, `workflow run concluded "something_new"`},
	}
	for _, tc := range tests {
		t.Run(tc.conclusion, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCompleted}, siteSpec())
			ev := runEvent(t, "completed")
			ev.Conclusion = tc.conclusion
			u := one(t, apply(t, tr, ev))
			r := u.Run
			if !u.Finished || r.Status != tc.status || r.Error != tc.err {
				t.Fatalf("finished %v status %s error %q, want true %s %q", u.Finished, r.Status, r.Error, tc.status, tc.err)
			}
			if r.FinishedAt == nil || !r.FinishedAt.Equal(fixtureCompleted) || r.DurationSeconds != 25 {
				t.Errorf("finished at %v after %vs, want %v after 25s", r.FinishedAt, r.DurationSeconds, fixtureCompleted)
			}
			if len(active(tr)) != 0 {
				t.Error("a finished run is still active")
			}
		})
	}
}

func TestJobConclusion(t *testing.T) {
	tests := []struct {
		conclusion string
		status     Status
		err        string
	}{
		{"success", StatusSuccess, ""},
		{"neutral", StatusSuccess, ""},
		{"skipped", StatusSkipped, ""},
		{"failure", StatusFailed, "job concluded failure"},
		{"startup_failure", StatusFailed, "job concluded startup_failure"},
		{"action_required", StatusFailed, "job concluded action_required"},
		{"cancelled", StatusCancelled, "job concluded cancelled"},
		{"stale", StatusCancelled, "job concluded stale"},
		{"timed_out", StatusTimedOut, "job concluded timed_out"},
	}
	for _, tc := range tests {
		t.Run(tc.conclusion, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
			apply(t, tr, runEvent(t, "requested"))
			job := jobEvent(t, "completed.success.with-organization")
			job.Conclusion = tc.conclusion
			u := one(t, apply(t, tr, job))
			s := u.Run.Stages[1]
			if s.Name != "linters" || s.Status != tc.status || s.Error != tc.err || s.JobID != 289782451 {
				t.Fatalf("stage %+v, want linters %s %q", s, tc.status, tc.err)
			}
			if s.DurationSeconds != 198 || s.QueuedSeconds != 60 || s.URL != "https://github.com/octo-org/octo-repo/runs/1291536064" {
				t.Errorf("duration %v queued %v url %s, want 198 60", s.DurationSeconds, s.QueuedSeconds, s.URL)
			}
			if got := finishedNames(u); !slices.Equal(got, []string{"linters:" + string(tc.status)}) {
				t.Errorf("stages finished %v", got)
			}
		})
	}
}

func TestFailedJobFailsRun(t *testing.T) {
	tests := []struct {
		name       string
		conclusion string
		status     Status
		err        string
	}{
		{"run failure names the stage", "failure", StatusFailed, "stage linters failed"},
		{"run success with a failed job", "success", StatusFailed, "stage linters failed"},
		{"cancelled run", "cancelled", StatusCancelled, "workflow run cancelled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
			apply(t, tr, runEvent(t, "requested"))
			apply(t, tr, jobEvent(t, "completed.failure.with-organization"))
			ev := runEvent(t, "completed")
			ev.Conclusion = tc.conclusion
			r := one(t, apply(t, tr, ev)).Run
			if r.Status != tc.status || r.Error != tc.err {
				t.Errorf("status %s error %q, want %s %q", r.Status, r.Error, tc.status, tc.err)
			}
		})
	}
}

func TestOutOfOrder(t *testing.T) {
	t.Run("in_progress after completed", func(t *testing.T) {
		tr := newTestTracker(&fakeClock{t: fixtureCompleted}, siteSpec())
		apply(t, tr, runEvent(t, "completed"))
		late := runEvent(t, "requested")
		late.Status = "in_progress"
		if ups := apply(t, tr, late); len(ups) != 0 {
			t.Fatalf("late in_progress changed %d runs", len(ups))
		}
		if r := snapshot(tr).Pipelines[0].LastFinished; r == nil || r.Status != StatusSuccess {
			t.Fatalf("last finished %+v, want success", r)
		}
	})
	t.Run("older updated_at", func(t *testing.T) {
		tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
		newer := runEvent(t, "requested")
		newer.Status, newer.UpdatedAt = "in_progress", fixtureCreated.Add(10*time.Second)
		apply(t, tr, newer)
		older := runEvent(t, "requested")
		older.Status = "waiting"
		if ups := apply(t, tr, older); len(ups) != 0 {
			t.Fatalf("an older update changed the run: %+v", ups[0].Run.GitHub)
		}
		same := newer
		same.Status = "queued"
		if ups := apply(t, tr, same); len(ups) != 0 {
			t.Fatal("a lower status at the same time changed the run")
		}
		same.Status = ghCompleted
		same.Conclusion = "success"
		if u := one(t, apply(t, tr, same)); !u.Finished {
			t.Fatal("completed at the same time did not finish the run")
		}
	})
	t.Run("jobs before their run", func(t *testing.T) {
		tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
		done := jobEvent(t, "completed.success.with-organization")
		if ups := apply(t, tr, done); len(ups) != 0 {
			t.Fatal("a job of an unknown run made an update")
		}
		queued := jobEvent(t, "queued")
		queued.JobID = 2 // a second job of the run: the fixtures share one id
		apply(t, tr, queued)
		u := one(t, apply(t, tr, runEvent(t, "requested")))
		if got := stageNames(u.Run); !slices.Equal(got, []string{"trigger:success", "linters:success", "update:pending"}) {
			t.Fatalf("stages %v", got)
		}
		if got := finishedNames(u); !slices.Equal(got, []string{"trigger:success", "linters:success"}) {
			t.Errorf("stages finished %v", got)
		}
		late := jobEvent(t, "in_progress")
		if ups := apply(t, tr, late); len(ups) != 0 {
			t.Fatal("a late in_progress job undid its completion")
		}
	})
	t.Run("job after its run completed", func(t *testing.T) {
		tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
		apply(t, tr, runEvent(t, "requested"))
		apply(t, tr, jobEvent(t, "in_progress"))
		apply(t, tr, runEvent(t, "completed"))
		u := one(t, apply(t, tr, jobEvent(t, "completed.success.with-organization")))
		if u.Finished || u.Run.Status != StatusSuccess || u.Run.Stages[1].Status != StatusSuccess {
			t.Fatalf("finished %v status %s stage %+v", u.Finished, u.Run.Status, u.Run.Stages[1])
		}
		if last := snapshot(tr).Pipelines[0].LastFinished; last.Stages[1].Status != StatusSuccess {
			t.Errorf("last finished run not updated: %v", stageNames(last))
		}
	})
	t.Run("orphans of ignored workflows are dropped", func(t *testing.T) {
		tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
		apply(t, tr, jobEvent(t, "queued"))
		other := runEvent(t, "requested")
		other.WorkflowPath = ".github/workflows/codeql.yml"
		apply(t, tr, other)
		if tr.orphans.count != 0 {
			t.Fatalf("%d orphan jobs kept for a run no pipeline follows", tr.orphans.count)
		}
	})
}

func TestJobStageOrder(t *testing.T) {
	tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
	apply(t, tr, runEvent(t, "requested"))
	base := jobEvent(t, "in_progress")
	// Distinct ids and creation times arranged around the fixture's.
	jobs := []struct {
		id      int64
		name    string
		created time.Duration
	}{
		{30, "deploy", 2 * time.Minute},
		{10, "build", 0},
		{20, "lint", 0},
		{5, "setup", -time.Minute},
	}
	for _, j := range jobs {
		e := base
		e.JobID, e.Name, e.CreatedAt, e.StartedAt = j.id, j.name, base.CreatedAt.Add(j.created), base.CreatedAt.Add(j.created)
		apply(t, tr, e)
	}
	r := active(tr)[0]
	want := []string{"trigger:success", "setup:running", "build:running", "lint:running", "deploy:running"}
	if got := stageNames(r); !slices.Equal(got, want) {
		t.Fatalf("stages %v, want %v", got, want)
	}
}

func TestReRunAttempt(t *testing.T) {
	tr := newTestTracker(&fakeClock{t: fixtureCompleted}, siteSpec())
	ev := runEvent(t, "completed")
	ev.Conclusion = "failure"
	first := one(t, apply(t, tr, ev)).Run
	rerun := runEvent(t, "requested")
	rerun.RunAttempt = 2
	second := one(t, apply(t, tr, rerun)).Run
	if first.ID != 1 || second.ID != 2 || second.GitHub.RunAttempt != 2 || second.Status != StatusRunning {
		t.Fatalf("first %d, re-run %d attempt %d %s", first.ID, second.ID, second.GitHub.RunAttempt, second.Status)
	}
}

func TestIdempotent(t *testing.T) {
	spec := siteSpec()
	spec.PagesProject = fixtureProject
	spec.Verify = true
	queued := jobEvent(t, "queued")
	queued.JobID = 2
	events := []Event{
		supabaseTrigger("d1", fixtureCreated.Add(-4*time.Second)),
		runEvent(t, "requested"),
		queued,
		jobEvent(t, "in_progress"),
		jobEvent(t, "completed.success.with-organization"),
		runEvent(t, "completed"),
		pagesEvent(t),
	}
	tr := newTestTracker(&fakeClock{t: fixtureCreated}, spec)
	for _, ev := range events {
		if len(apply(t, tr, ev)) == 0 {
			t.Fatalf("%T made no update the first time", ev)
		}
		if ups := apply(t, tr, ev); len(ups) != 0 {
			t.Fatalf("%T applied twice made %d updates", ev, len(ups))
		}
	}
	res := VerifyResultEvent{RunID: 1, Success: true, StartedAt: fixtureCompleted, FinishedAt: fixtureCompleted.Add(time.Second), ResponseSeconds: 0.2}
	if u := one(t, apply(t, tr, res)); !u.Finished || u.Run.Status != StatusSuccess {
		t.Fatalf("verify result: finished %v status %s", u.Finished, u.Run.Status)
	}
	for _, ev := range append(events, res) {
		if ups := apply(t, tr, ev); len(ups) != 0 {
			t.Fatalf("%T after the run finished made %d updates", ev, len(ups))
		}
	}
}

func TestTriggerCorrelation(t *testing.T) {
	received := fixtureCreated.Add(-4 * time.Second)
	clock := &fakeClock{t: received}
	spec := siteSpec()
	tr := newTestTracker(clock, spec)

	u := one(t, apply(t, tr, supabaseTrigger("d1", received)))
	r := u.Run
	if r.ID != 1 || r.Status != StatusPending || !r.CreatedAt.Equal(received) || !r.SeenAt.Equal(received) {
		t.Fatalf("run %d %s created %v seen %v", r.ID, r.Status, r.CreatedAt, r.SeenAt)
	}
	if got := stageNames(r); !slices.Equal(got, []string{"trigger:success", "dispatch:running"}) {
		t.Fatalf("stages %v", got)
	}
	if got := finishedNames(u); !slices.Equal(got, []string{"trigger:success"}) {
		t.Errorf("stages finished %v", got)
	}

	ignored := supabaseTrigger("d2", received)
	ignored.Table = "comments"
	if ups := apply(t, tr, ignored); len(ups) != 0 {
		t.Fatal("a trigger of another table made an update")
	}

	clock.Advance(2 * time.Second)
	ml := TriggerEvent{Trigger: Trigger{Source: SourceMailerLite, Event: "campaign.sent", ReceivedAt: clock.Now()}, Type: "campaign.sent"}
	r = one(t, apply(t, tr, ml)).Run
	if r.ID != 1 || len(r.Triggers) != 2 || r.Trigger.Source != SourceSupabase || r.Triggers[1].Source != SourceMailerLite {
		t.Fatalf("coalesced run %d triggers %+v first %+v", r.ID, r.Triggers, r.Trigger)
	}

	clock.Advance(2 * time.Second)
	u = one(t, apply(t, tr, runEvent(t, "requested")))
	r = u.Run
	if r.ID != 1 || r.Status != StatusRunning || r.GitHub == nil || r.Trigger.Source != SourceSupabase {
		t.Fatalf("claimed run %d %s github %v trigger %s", r.ID, r.Status, r.GitHub, r.Trigger.Source)
	}
	d := r.Stages[1]
	if d.Name != StageDispatch || d.Status != StatusSuccess || d.DurationSeconds != 4 || !d.FinishedAt.Equal(fixtureCreated) {
		t.Errorf("dispatch %+v", d)
	}
	if got := finishedNames(u); !slices.Equal(got, []string{"dispatch:success"}) {
		t.Errorf("stages finished %v", got)
	}

	r = one(t, apply(t, tr, runEvent(t, "completed"))).Run
	if r.Status != StatusSuccess || r.DurationSeconds != 29 {
		t.Errorf("status %s duration %v, want success 29 (first trigger to finish)", r.Status, r.DurationSeconds)
	}

	// A trigger after the claim opens the next run.
	r = one(t, apply(t, tr, supabaseTrigger("d3", clock.Now()))).Run
	if r.ID != 2 || r.Status != StatusPending {
		t.Errorf("next trigger: run %d %s, want 2 pending", r.ID, r.Status)
	}
}

func TestTriggerMatch(t *testing.T) {
	spec := siteSpec()
	spec.Triggers = append(spec.Triggers,
		TriggerRule{Source: SourceSupabase}, // every table
		TriggerRule{Source: SourceGitHub, Events: []string{"push", "repository_dispatch"}},
	)
	spec.Triggers[0] = TriggerRule{Source: SourceSupabase, Table: "posts", Events: []string{"DELETE"}}
	tests := []struct {
		name string
		ev   TriggerEvent
		want bool
	}{
		{"table rule without events", TriggerEvent{Trigger: Trigger{Source: SourceSupabase}, Table: "posts", Type: "INSERT"}, true},
		{"mailerlite other type", TriggerEvent{Trigger: Trigger{Source: SourceMailerLite}, Type: "subscriber.create"}, false},
		{"push on a listed branch", TriggerEvent{Trigger: Trigger{Source: SourceGitHub}, Type: "push", Branch: "master"}, true},
		{"push on another branch", TriggerEvent{Trigger: Trigger{Source: SourceGitHub}, Type: "push", Branch: "feature"}, false},
		{"repository_dispatch", TriggerEvent{Trigger: Trigger{Source: SourceGitHub}, Type: "repository_dispatch"}, true},
		{"workflow_dispatch not listed", TriggerEvent{Trigger: Trigger{Source: SourceGitHub}, Type: "workflow_dispatch"}, false},
		{"cloudflare has no rule", TriggerEvent{Trigger: Trigger{Source: SourceCloudflare}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCreated}, spec)
			tc.ev.Trigger.ReceivedAt = fixtureCreated
			if got := len(apply(t, tr, tc.ev)) == 1; got != tc.want {
				t.Errorf("opened a run: %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClaimSkewWindow(t *testing.T) {
	tests := []struct {
		name      string
		triggerAt time.Time
		skew      time.Duration
		claims    bool
	}{
		{"trigger before the run", fixtureCreated.Add(-time.Minute), time.Minute, true},
		{"trigger within the skew", fixtureCreated.Add(59 * time.Second), time.Minute, true},
		{"trigger at the edge of the skew", fixtureCreated.Add(time.Minute), time.Minute, true},
		{"run created before trigger minus skew", fixtureCreated.Add(96 * time.Second), time.Minute, false},
		{"wider skew", fixtureCreated.Add(96 * time.Second), 2 * time.Minute, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := siteSpec()
			spec.ClockSkew = tc.skew
			tr := newTestTracker(&fakeClock{t: tc.triggerAt}, spec)
			apply(t, tr, supabaseTrigger("d1", tc.triggerAt))
			r := one(t, apply(t, tr, runEvent(t, "requested"))).Run
			if claimed := r.ID == 1; claimed != tc.claims {
				t.Fatalf("run %d (trigger %s): claimed %v, want %v", r.ID, r.Trigger.Source, claimed, tc.claims)
			}
			if !tc.claims {
				active := active(tr)
				if len(active) != 2 || active[0].Status != StatusPending || active[1].Trigger.Source != SourceGitHub {
					t.Fatalf("active %d runs, want the pending one and the GitHub one", len(active))
				}
			}
		})
	}
}

func TestDispatchTimeout(t *testing.T) {
	start := fixtureCreated
	clock := &fakeClock{t: start}
	tr := newTestTracker(clock, siteSpec())
	apply(t, tr, supabaseTrigger("d1", start))
	if d, ok := tr.NextDeadline(); !ok || !d.Equal(start.Add(10*time.Minute)) {
		t.Fatalf("next deadline %v %v, want %v", d, ok, start.Add(10*time.Minute))
	}
	clock.Advance(10*time.Minute - time.Second)
	if ups := tr.Expire(); len(ups) != 0 {
		t.Fatal("expired before dispatch_timeout")
	}
	clock.Advance(time.Second)
	u := one(t, tr.Expire())
	r := u.Run
	if !u.Finished || r.Status != StatusTimedOut || r.Error != "no workflow run picked up the trigger within 10m0s" {
		t.Fatalf("finished %v status %s error %q", u.Finished, r.Status, r.Error)
	}
	if got := finishedNames(u); !slices.Equal(got, []string{"dispatch:timed_out"}) {
		t.Errorf("stages finished %v", got)
	}
	if r.DurationSeconds != 600 {
		t.Errorf("duration %v, want 600", r.DurationSeconds)
	}
	if _, ok := tr.NextDeadline(); ok {
		t.Error("a deadline is left after the only run ended")
	}
	if ups := apply(t, tr, runEvent(t, "requested")); one(t, ups).Run.ID != 2 {
		t.Error("a workflow run claimed a timed-out run")
	}
}

func TestRunTimeout(t *testing.T) {
	clock := &fakeClock{t: fixtureCreated}
	tr := newTestTracker(clock, siteSpec())
	apply(t, tr, runEvent(t, "requested"))
	apply(t, tr, jobEvent(t, "in_progress"))
	clock.Advance(6*time.Hour - time.Nanosecond)
	if len(tr.Expire()) != 0 {
		t.Fatal("expired before timeout")
	}
	clock.Advance(time.Nanosecond)
	u := one(t, tr.Expire())
	if !u.Finished || u.Run.Status != StatusTimedOut || u.Run.Error != "run did not finish within 6h0m0s" {
		t.Fatalf("finished %v status %s error %q", u.Finished, u.Run.Status, u.Run.Error)
	}
	if got := finishedNames(u); !slices.Equal(got, []string{"Analyze (javascript):timed_out"}) {
		t.Errorf("stages finished %v", got)
	}
	// GitHub's own completion arrives after the exporter gave up.
	if ups := apply(t, tr, runEvent(t, "completed")); len(ups) != 0 {
		t.Error("a completion changed a timed-out run")
	}
}

func TestRestore(t *testing.T) {
	clock := &fakeClock{t: fixtureCreated}
	before := newTestTracker(clock, siteSpec())
	apply(t, before, supabaseTrigger("d1", clock.Now()))
	clock.Advance(time.Minute)
	other := runEvent(t, "requested")
	other.RunID = 1 // a second GitHub run, not claiming the pending trigger
	other.CreatedAt = fixtureCreated.Add(-5 * time.Minute)
	apply(t, before, other)
	done := runEvent(t, "completed")
	done.RunID = 2
	done.CreatedAt = other.CreatedAt
	apply(t, before, done)
	snap := snapshot(before).Pipelines[0]

	clock.Advance(5 * time.Minute)
	after := newTestTracker(clock, siteSpec())
	after.Restore(active(before), []*Run{snap.LastFinished}, 41, nil)
	if d, ok := after.NextDeadline(); !ok || !d.Equal(fixtureCreated.Add(10*time.Minute)) {
		t.Fatalf("restored deadline %v %v", d, ok)
	}
	if got := snapshot(after).Pipelines[0]; got.InProgress != 2 || got.LastFinished.ID != 3 {
		t.Fatalf("restored snapshot in progress %d last %d", got.InProgress, got.LastFinished.ID)
	}
	if ups := apply(t, after, done); len(ups) != 0 {
		t.Error("a duplicate of the last finished run made an update after Restore")
	}
	late := jobEvent(t, "completed.success.with-organization")
	late.RunID = done.RunID
	one(t, apply(t, after, late))
	if got := snapshot(after).Pipelines[0]; len(got.LastFinished.Stages) != 2 {
		t.Errorf("late job of the restored last run: %v", stageNames(got.LastFinished))
	}
	if r := one(t, apply(t, after, supabaseTrigger("d2", clock.Now()))).Run; r.ID != 1 || len(r.Triggers) != 2 {
		t.Errorf("trigger after restore: run %d with %d triggers, want the restored pending run", r.ID, len(r.Triggers))
	}
	clock.Advance(4 * time.Minute)
	u := one(t, after.Expire())
	if u.Run.ID != 1 || u.Run.Status != StatusTimedOut {
		t.Fatalf("expired run %d %s, want 1 timed_out", u.Run.ID, u.Run.Status)
	}
	r := one(t, apply(t, after, runEvent(t, "requested"))).Run
	if r.ID != 42 {
		t.Errorf("new run id %d, want 42 (after the restored max id)", r.ID)
	}
	// The restored GitHub run still takes its jobs and completes.
	other.Status, other.Conclusion, other.UpdatedAt = ghCompleted, "success", clock.Now()
	if u := one(t, apply(t, after, other)); !u.Finished || u.Run.ID != 2 {
		t.Errorf("restored GitHub run: finished %v id %d", u.Finished, u.Run.ID)
	}
}

func TestPages(t *testing.T) {
	deployEnd := mustTime("2021-03-09T00:58:59.045655Z")
	failed := func(e *PagesDeploymentEvent) {
		e.LatestStage.Name, e.LatestStage.Status = "build", cfFailure
	}
	tests := []struct {
		name         string
		pagesFirst   bool
		edit         func(*PagesDeploymentEvent)
		status       Status
		err          string
		stage        Status
		pagesPending bool
	}{
		{name: "after the workflow", status: StatusSuccess, stage: StatusSuccess},
		{name: "before the workflow", pagesFirst: true, status: StatusSuccess, stage: StatusSuccess},
		{name: "failure", edit: failed, status: StatusFailed, err: "stage pages failed", stage: StatusFailed},
		{name: "failure before the workflow", pagesFirst: true, edit: failed, status: StatusFailed, err: "stage pages failed", stage: StatusFailed},
		{
			name: "canceled", status: StatusCancelled, err: "stage pages cancelled", stage: StatusCancelled,
			edit: func(e *PagesDeploymentEvent) { e.LatestStage.Status = cfCanceled },
		},
		{
			name: "still deploying", status: StatusRunning, stage: StatusRunning,
			edit: func(e *PagesDeploymentEvent) { e.LatestStage.Status = "active" },
		},
		{
			name: "other commit", status: StatusRunning, stage: StatusPending, pagesPending: true,
			edit: func(e *PagesDeploymentEvent) { e.Deployment.CommitHash = "ad9ccd918a81025731e10e40267e11273a263421" },
		},
		{
			name: "deployed before the run began", status: StatusRunning, stage: StatusPending, pagesPending: true,
			edit: func(e *PagesDeploymentEvent) { e.CreatedOn = fixtureCreated.Add(-61 * time.Second) },
		},
		{
			name: "deployed within the clock skew", status: StatusSuccess, stage: StatusSuccess,
			edit: func(e *PagesDeploymentEvent) { e.CreatedOn = fixtureCreated.Add(-59 * time.Second) },
		},
		{
			name: "other project", status: StatusRunning, stage: StatusPending, pagesPending: true,
			edit: func(e *PagesDeploymentEvent) { e.Project = "ninjakittens" },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := siteSpec()
			spec.PagesProject = fixtureProject
			tr := newTestTracker(&fakeClock{t: fixtureCompleted}, spec)
			pages := pagesEvent(t)
			if tc.edit != nil {
				tc.edit(&pages)
			}
			if tc.pagesFirst {
				if ups := apply(t, tr, pages); len(ups) != 0 {
					t.Fatal("a deployment with no run made an update")
				}
			}
			u := one(t, apply(t, tr, runEvent(t, "completed")))
			if !tc.pagesFirst {
				if u.Finished || u.Run.Status != StatusRunning || specialStage(u.Run, StagePages).Status != StatusPending {
					t.Fatalf("after the workflow: finished %v status %s stages %v", u.Finished, u.Run.Status, stageNames(u.Run))
				}
				ups := apply(t, tr, pages)
				if tc.pagesPending {
					if len(ups) != 0 {
						t.Fatal("a deployment of something else changed the run")
					}
				} else {
					u = one(t, ups)
				}
			}
			r := u.Run
			if r.Status != tc.status || r.Error != tc.err {
				t.Fatalf("status %s error %q, want %s %q", r.Status, r.Error, tc.status, tc.err)
			}
			st := specialStage(r, StagePages)
			if st.Status != tc.stage {
				t.Fatalf("pages stage %s, want %s", st.Status, tc.stage)
			}
			if tc.pagesPending {
				return
			}
			if r.Pages == nil || r.Pages.DeploymentID != fixtureDeployID || len(r.Pages.Stages) != 5 || st.URL != "https://f64788e9.ninjakittens.pages.dev" {
				t.Fatalf("pages %+v url %s", r.Pages, st.URL)
			}
			if tc.status == StatusSuccess && tc.edit == nil {
				if !u.Finished || !r.FinishedAt.Equal(deployEnd) || st.DurationSeconds != 235.122199 {
					t.Errorf("finished %v at %v, pages took %v", u.Finished, r.FinishedAt, st.DurationSeconds)
				}
			}
		})
	}
}

func TestVerify(t *testing.T) {
	verifyAt := fixtureCompleted.Add(time.Minute)
	tests := []struct {
		name   string
		pages  bool
		result VerifyResultEvent
		status Status
		err    string
	}{
		{
			name:   "success",
			result: VerifyResultEvent{RunID: 1, Success: true, StartedAt: verifyAt, FinishedAt: verifyAt.Add(300 * time.Millisecond), ResponseSeconds: 0.3, Attempts: 1},
			status: StatusSuccess,
		},
		{
			name:   "after pages",
			pages:  true,
			result: VerifyResultEvent{RunID: 1, Success: true, StartedAt: verifyAt, FinishedAt: verifyAt.Add(300 * time.Millisecond), ResponseSeconds: 0.3, Attempts: 1},
			status: StatusSuccess,
		},
		{
			name:   "failure",
			result: VerifyResultEvent{RunID: 1, StartedAt: verifyAt, FinishedAt: verifyAt.Add(300 * time.Millisecond), ResponseSeconds: 0.3, Attempts: 3, Error: "status 503, want 200"},
			status: StatusFailed,
			err:    "stage verify failed: status 503, want 200",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := siteSpec()
			spec.Verify = true
			if tc.pages {
				spec.PagesProject = fixtureProject
			}
			clock := &fakeClock{t: verifyAt}
			tr := newTestTracker(clock, spec)
			u := one(t, apply(t, tr, runEvent(t, "completed")))
			if tc.pages {
				if u.StartVerify {
					t.Fatal("verify started before the Pages deployment")
				}
				u = one(t, apply(t, tr, pagesEvent(t)))
			}
			if !u.StartVerify || u.Finished || u.Run.Status != StatusRunning {
				t.Fatalf("start verify %v finished %v status %s", u.StartVerify, u.Finished, u.Run.Status)
			}
			if v := specialStage(u.Run, StageVerify); v == nil || v.Status != StatusRunning || !v.StartedAt.Equal(verifyAt) {
				t.Fatalf("verify stage %+v", v)
			}
			if got := tr.PendingVerifies(); len(got) != 1 || got[0].ID != 1 {
				t.Fatalf("pending verifies %v", got)
			}
			if ups := apply(t, tr, pagesEvent(t)); len(ups) != 0 {
				t.Fatal("verify was started twice")
			}
			u = one(t, apply(t, tr, tc.result))
			r := u.Run
			if !u.Finished || r.Status != tc.status || r.Error != tc.err {
				t.Fatalf("finished %v status %s error %q, want %s %q", u.Finished, r.Status, r.Error, tc.status, tc.err)
			}
			v := specialStage(r, StageVerify)
			if v.ResponseSeconds != 0.3 || v.DurationSeconds != 0.3 || !r.FinishedAt.Equal(tc.result.FinishedAt) {
				t.Errorf("verify stage %+v, run finished %v", v, r.FinishedAt)
			}
			if got := finishedNames(u); !slices.Equal(got, []string{"verify:" + string(tc.status)}) {
				t.Errorf("stages finished %v", got)
			}
		})
	}
}

// TestRecall: an event of a GitHub run the Tracker no longer holds asks
// for it (NeedsRun); once recalled from the history, the event neither
// opens a new run nor changes the finished one.
func TestRecall(t *testing.T) {
	history := make(map[runKey]*Run)
	tr := NewTracker([]Spec{siteSpec()}, (&fakeClock{t: fixtureCreated}).Now)
	// applyRecalling is what the Applier does around Apply.
	lookups := 0
	applyRecalling := func(e Event) []Update {
		t.Helper()
		if id, attempt, ok := tr.NeedsRun(e); ok {
			lookups++
			if r := history[runKey{id, attempt}]; r != nil {
				tr.Recall(r.Clone())
			}
		}
		return apply(t, tr, e)
	}
	done := runEvent(t, "completed")
	u := one(t, applyRecalling(done))
	history[runKey{done.RunID, done.RunAttempt}] = u.Run
	if ups := applyRecalling(done); len(ups) != 0 || lookups != 1 {
		t.Fatalf("cached run: %d updates, %d lookups, want 0 and 1", len(ups), lookups)
	}
	for i := range finishedCacheSize {
		e := done
		e.RunID = int64(i + 1)
		history[runKey{e.RunID, e.RunAttempt}] = one(t, applyRecalling(e)).Run
	}
	lookups = 0
	for _, e := range []WorkflowRunEvent{runEvent(t, "requested"), done} {
		if ups := applyRecalling(e); len(ups) != 0 {
			t.Fatalf("an event of an evicted finished run (%s) changed runs: %+v", e.Status, ups)
		}
	}
	if lookups != 1 {
		t.Fatalf("%d lookups of the evicted run, want 1 (then cached)", lookups)
	}
	if _, reason := tr.Apply(done); reason != "run 1 already finished" {
		t.Fatalf("reason %q, want run 1 already finished", reason)
	}
}

func TestOrphanBound(t *testing.T) {
	o := newOrphanJobs(3, time.Hour)
	for i := range 4 {
		o.add(runKey{int64(i), 1}, HeldJob{Job: WorkflowJobEvent{RunID: int64(i), JobID: int64(i)}, HeldAt: fixtureCreated})
	}
	if o.count != 3 || o.take(runKey{0, 1}) != nil || len(o.take(runKey{3, 1})) != 1 {
		t.Fatalf("count %d after 4 adds, want the oldest run dropped", o.count)
	}
}

func TestOrphanAge(t *testing.T) {
	o := newOrphanJobs(10, time.Hour)
	o.add(runKey{1, 1}, HeldJob{Job: WorkflowJobEvent{RunID: 1, JobID: 1}, HeldAt: fixtureCreated})
	o.add(runKey{2, 1}, HeldJob{Job: WorkflowJobEvent{RunID: 2, JobID: 2}, HeldAt: fixtureCreated.Add(30 * time.Minute)})
	if held, changed := o.held(); len(held) != 2 || !changed {
		t.Fatalf("held %d changed %v, want 2 and true", len(held), changed)
	}
	if _, changed := o.held(); changed {
		t.Fatal("held reports a change twice")
	}
	o.expire(fixtureCreated.Add(61 * time.Minute))
	held, changed := o.held()
	if len(held) != 1 || held[0].Job.RunID != 2 || !changed {
		t.Fatalf("after an hour: held %+v changed %v, want run 2 only", held, changed)
	}
}

func TestSnapshot(t *testing.T) {
	clock := &fakeClock{t: fixtureCreated}
	other := siteSpec()
	other.Name, other.Workflow = "docs", "docs.yml"
	tr := newTestTracker(clock, siteSpec(), other)
	apply(t, tr, supabaseTrigger("d1", clock.Now()))
	ok := runEvent(t, "completed")
	ok.RunID = 10
	apply(t, tr, ok)
	bad := runEvent(t, "completed")
	bad.RunID, bad.Conclusion, bad.UpdatedAt = 11, "failure", bad.UpdatedAt.Add(time.Minute)
	apply(t, tr, bad)

	s := snapshot(tr)
	if len(s.Pipelines) != 2 || s.Pipelines[1].Spec.Name != "docs" || s.Pipelines[1].LastFinished != nil {
		t.Fatalf("pipelines %+v", s.Pipelines)
	}
	site := s.Pipelines[0]
	// The pending run was claimed by run 10 (created after the trigger).
	if site.InProgress != 0 || site.LastFinished.GitHub.RunID != 11 {
		t.Fatalf("in progress %d, last %d", site.InProgress, site.LastFinished.GitHub.RunID)
	}
}

func TestSetSpecs(t *testing.T) {
	clock := &fakeClock{t: fixtureCreated}
	tr := newTestTracker(clock, siteSpec())
	apply(t, tr, supabaseTrigger("d1", clock.Now()))
	longer := siteSpec()
	longer.DispatchTimeout = time.Hour
	tr.SetSpecs([]Spec{longer})
	if d, _ := tr.NextDeadline(); !d.Equal(fixtureCreated.Add(time.Hour)) {
		t.Errorf("deadline %v after reload, want the new dispatch_timeout", d)
	}
	if got := slices.Clone(tr.specs); len(got) != 1 || got[0].DispatchTimeout != time.Hour {
		t.Errorf("specs %+v", got)
	}
	if len(active(tr)) != 1 {
		t.Error("reload dropped the run in progress")
	}
}

func TestWorkflowFile(t *testing.T) {
	for in, want := range map[string]string{
		".github/workflows/deploy.yml":                 "deploy.yml",
		".github/workflows/deploy.yml@refs/heads/main": "deploy.yml",
		"octo/repo/.github/workflows/ci.yaml@v1.2.3":   "ci.yaml",
		"": "",
	} {
		if got := workflowFile(in); got != want {
			t.Errorf("workflowFile(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLastFinishedIsLatestRun(t *testing.T) {
	clock := &fakeClock{t: fixtureCreated.Add(5 * time.Minute)}
	tr := newTestTracker(clock, siteSpec())
	apply(t, tr, supabaseTrigger("d1", clock.Now()))
	// Created before the trigger, so it runs on its own as run 2.
	if r := one(t, apply(t, tr, runEvent(t, "completed"))).Run; r.ID != 2 || r.Status != StatusSuccess {
		t.Fatalf("run %d %s, want 2 success", r.ID, r.Status)
	}
	clock.Advance(10 * time.Minute)
	if u := one(t, tr.Expire()); u.Run.ID != 1 || u.Run.Status != StatusTimedOut {
		t.Fatalf("expired run %d %s", u.Run.ID, u.Run.Status)
	}
	if last := snapshot(tr).Pipelines[0].LastFinished; last.ID != 2 {
		t.Errorf("last finished run %d, want 2: an older run ending later does not replace it", last.ID)
	}
}
