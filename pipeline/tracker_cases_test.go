package pipeline

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// named is siteSpec under another name, following a repository.
func named(name, repo string) Spec {
	s := siteSpec()
	s.Name, s.Repository = name, repo
	return s
}

// TestRepositories: with several repositories (an organization webhook, a
// GitHub App, github.repositories), a workflow run belongs to the pipeline
// of its repository, and one that names its repository comes first
// whatever the config order.
func TestRepositories(t *testing.T) {
	tests := []struct {
		name   string
		specs  []Spec
		edit   func(*WorkflowRunEvent)
		want   string // pipeline of the run, "" when ignored
		reason string
	}{
		{name: "named repository", specs: []Spec{named("site", fixtureRepo)}, want: "site"},
		{name: "names compare without case", specs: []Spec{named("site", "Octo-Org/Octo-Repo")}, want: "site"},
		{name: "no repository matches any", specs: []Spec{named("site", "")}, want: "site"},
		{
			name:   "other repository",
			specs:  []Spec{named("site", "acme/site")},
			reason: "no pipeline for workflow test.yml in repository octo-org/octo-repo",
		},
		{
			name:  "same workflow in two repositories",
			specs: []Spec{named("site", "acme/site"), named("octo", fixtureRepo)},
			want:  "octo",
		},
		{
			name:  "named before unnamed whatever the order",
			specs: []Spec{named("any", ""), named("octo", fixtureRepo)},
			want:  "octo",
		},
		{
			name:  "unnamed takes other repositories",
			specs: []Spec{named("any", ""), named("site", "acme/site")},
			want:  "any",
		},
		{
			name:   "branch not followed",
			specs:  []Spec{named("site", fixtureRepo)},
			edit:   func(e *WorkflowRunEvent) { e.HeadBranch = "feature" },
			reason: "pipeline site does not follow branch feature of workflow test.yml",
		},
		{
			name:   "workflow of another file",
			specs:  []Spec{named("site", fixtureRepo)},
			edit:   func(e *WorkflowRunEvent) { e.WorkflowPath, e.WorkflowID = ".github/workflows/deploy.yml", 1 },
			reason: "no pipeline for workflow deploy.yml in repository octo-org/octo-repo",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCreated}, tc.specs...)
			ev := runEvent(t, "requested")
			if tc.edit != nil {
				tc.edit(&ev)
			}
			ups, reason := tr.Apply(ev)
			if tc.want == "" {
				if len(ups) != 0 || reason != tc.reason {
					t.Fatalf("%d updates, reason %q; want none, %q", len(ups), reason, tc.reason)
				}
				return
			}
			if r := one(t, ups).Run; r.Pipeline != tc.want || reason != "" {
				t.Fatalf("pipeline %s reason %q, want %s", r.Pipeline, reason, tc.want)
			}
		})
	}
}

// TestRepositoryTriggersAndJobs: pushes and dispatches open pending runs
// only in the pipelines of their repository, and jobs of a repository no
// pipeline follows are not kept.
func TestRepositoryTriggersAndJobs(t *testing.T) {
	// The values of fixtures/github/push/with-new-branch.json and
	// repository_dispatch/payload.json.
	push := TriggerEvent{
		Trigger:    Trigger{Source: SourceGitHub, Event: "push", Ref: "refs/heads/master", SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", ReceivedAt: fixtureCreated},
		Type:       "push",
		Repository: "Codertocat/Hello-World",
		Branch:     "master",
	}
	dispatch := TriggerEvent{
		Trigger:    Trigger{Source: SourceGitHub, Event: "repository_dispatch", ReceivedAt: fixtureCreated},
		Type:       "repository_dispatch",
		Repository: fixtureRepo,
	}
	withGitHub := func(s Spec) Spec {
		s.Triggers = append(s.Triggers, TriggerRule{Source: SourceGitHub})
		return s
	}
	docs := withGitHub(named("docs", ""))
	docs.Workflow = "docs.yml"
	tests := []struct {
		name    string
		specs   []Spec
		ev      TriggerEvent
		opens   []string
		reason  string
		pending bool
	}{
		{name: "push of the named repository", specs: []Spec{withGitHub(named("hello", "codertocat/hello-world"))}, ev: push, opens: []string{"hello"}},
		{
			name: "push of another repository", specs: []Spec{withGitHub(named("site", fixtureRepo))}, ev: push,
			reason: "no pipeline for github trigger push in repository Codertocat/Hello-World",
		},
		{
			name:  "dispatch goes to the named pipeline, not the unnamed one of the same workflow",
			specs: []Spec{withGitHub(named("any", "")), withGitHub(named("octo", fixtureRepo))}, ev: dispatch,
			opens: []string{"octo"},
		},
		{
			name:  "unnamed pipeline of another workflow still opens",
			specs: []Spec{withGitHub(named("octo", fixtureRepo)), docs}, ev: dispatch,
			opens: []string{"octo", "docs"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCreated}, tc.specs...)
			ups, reason := tr.Apply(tc.ev)
			var got []string
			for _, u := range ups {
				got = append(got, u.Run.Pipeline)
			}
			if !slices.Equal(got, tc.opens) || reason != tc.reason {
				t.Fatalf("opened %v reason %q, want %v %q", got, reason, tc.opens, tc.reason)
			}
		})
	}

	t.Run("jobs of a repository no pipeline follows", func(t *testing.T) {
		tr := newTestTracker(&fakeClock{t: fixtureCreated}, named("site", "acme/site"))
		job := jobEvent(t, "queued")
		job.Repository = "Codertocat/Hello-World" // the fixture's own
		if _, reason := tr.Apply(job); reason != "no pipeline for repository Codertocat/Hello-World" {
			t.Fatalf("reason %q", reason)
		}
		if held := len(tr.orphans.byKey); held != 0 {
			t.Fatalf("kept %d jobs of a repository no pipeline follows", held)
		}
		job.Repository = "ACME/site"
		if ups, reason := tr.Apply(job); len(ups) != 0 || reason != "" {
			t.Fatalf("a job of the pipeline's repository: %d updates, reason %q; want kept", len(ups), reason)
		}
	})
}

// TestApprovals: a run waiting for approval (action_required) or for an
// environment (waiting) is not final; it stays running with GitHub's own
// status, and a later event takes it on to its real conclusion.
func TestApprovals(t *testing.T) {
	waiting := func(t *testing.T) WorkflowRunEvent {
		e := runEvent(t, "requested")
		e.Status = "waiting"
		return e
	}
	// After approval GitHub queues the same run id and attempt again.
	approved := func(t *testing.T) WorkflowRunEvent {
		e := runEvent(t, "requested")
		e.UpdatedAt = fixtureCreated.Add(10 * time.Second)
		return e
	}
	tests := []struct {
		name       string
		first      func(*testing.T) WorkflowRunEvent
		then       []func(*testing.T) WorkflowRunEvent
		ghStatus   string
		conclusion string
		status     Status
	}{
		{
			name:  "action_required waits",
			first: func(t *testing.T) WorkflowRunEvent { return runEvent(t, "requested.with-conclusion") },
			// GitHub reports it as completed.
			ghStatus: "completed", conclusion: "action_required", status: StatusRunning,
		},
		{
			name:     "approved then succeeds",
			first:    func(t *testing.T) WorkflowRunEvent { return runEvent(t, "requested.with-conclusion") },
			then:     []func(*testing.T) WorkflowRunEvent{approved, func(t *testing.T) WorkflowRunEvent { return runEvent(t, "completed") }},
			ghStatus: "completed", conclusion: "success", status: StatusSuccess,
		},
		{
			name:     "completed straight after action_required",
			first:    func(t *testing.T) WorkflowRunEvent { return runEvent(t, "requested.with-conclusion") },
			then:     []func(*testing.T) WorkflowRunEvent{func(t *testing.T) WorkflowRunEvent { return runEvent(t, "completed") }},
			ghStatus: "completed", conclusion: "success", status: StatusSuccess,
		},
		{
			name:     "action_required delivered late changes nothing",
			first:    func(t *testing.T) WorkflowRunEvent { return runEvent(t, "completed") },
			then:     []func(*testing.T) WorkflowRunEvent{func(t *testing.T) WorkflowRunEvent { return runEvent(t, "requested.with-conclusion") }},
			ghStatus: "completed", conclusion: "success", status: StatusSuccess,
		},
		{
			name: "environment protection waits", first: waiting,
			ghStatus: "waiting", status: StatusRunning,
		},
		{
			name: "environment approved", first: waiting,
			then:     []func(*testing.T) WorkflowRunEvent{func(t *testing.T) WorkflowRunEvent { return runEvent(t, "completed") }},
			ghStatus: "completed", conclusion: "success", status: StatusSuccess,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
			one(t, apply(t, tr, tc.first(t)))
			for _, ev := range tc.then {
				apply(t, tr, ev(t))
			}
			var r *Run
			if active := active(tr); len(active) == 1 {
				r = active[0]
				if n := snapshot(tr).Pipelines[0].InProgress; n != 1 {
					t.Errorf("in progress %d, want 1", n)
				}
			} else {
				r = snapshot(tr).Pipelines[0].LastFinished
			}
			if r.Status != tc.status || r.GitHub.Status != tc.ghStatus || r.GitHub.Conclusion != tc.conclusion {
				t.Fatalf("run %s github %s/%s, want %s %s/%s", r.Status, r.GitHub.Status, r.GitHub.Conclusion, tc.status, tc.ghStatus, tc.conclusion)
			}
			if r.FinishedAt != nil && r.StartedAt.After(*r.FinishedAt) {
				t.Errorf("started at %v after finished at %v", r.StartedAt, r.FinishedAt)
			}
			if r.Status == StatusSuccess && (!r.FinishedAt.Equal(fixtureCompleted) || r.DurationSeconds != 25) {
				t.Errorf("finished at %v after %vs, want %v after 25s", r.FinishedAt, r.DurationSeconds, fixtureCompleted)
			}
		})
	}

	t.Run("the run timeout still applies", func(t *testing.T) {
		clock := &fakeClock{t: fixtureCreated}
		tr := newTestTracker(clock, siteSpec())
		apply(t, tr, runEvent(t, "requested.with-conclusion"))
		clock.Advance(6 * time.Hour)
		u := one(t, tr.Expire())
		if u.Run.Status != StatusTimedOut || u.Run.StartedAt.After(*u.Run.FinishedAt) {
			t.Fatalf("status %s started %v finished %v", u.Run.Status, u.Run.StartedAt, u.Run.FinishedAt)
		}
	})
}

// TestOlderPayloads: GitHub Enterprise Server and older api.github.com
// versions send no run_attempt (attempt 1) and no path (matched by
// workflow_id).
func TestOlderPayloads(t *testing.T) {
	noAttempt := func(e *WorkflowRunEvent) { e.RunAttempt = 0 }
	noPath := func(e *WorkflowRunEvent) { e.WorkflowPath = "" }
	type step struct {
		fixture string
		runID   int64
		edit    func(*WorkflowRunEvent)
	}
	tests := []struct {
		name     string
		workflow string
		steps    []step
		// want is each run's GitHub run id, attempt and status at the end.
		want []string
	}{
		{
			name:  "no run_attempt is attempt 1",
			steps: []step{{"requested", fixtureRunID, noAttempt}, {"completed", fixtureRunID, nil}},
			want:  []string{"289782451/1 success"},
		},
		{
			name:  "attempt 1 then no run_attempt",
			steps: []step{{"requested", fixtureRunID, nil}, {"completed", fixtureRunID, noAttempt}},
			want:  []string{"289782451/1 success"},
		},
		{
			name: "no path, numeric workflow", workflow: "2823525",
			steps: []step{{"requested", fixtureRunID, noPath}, {"completed", fixtureRunID, noPath}},
			want:  []string{"289782451/1 success"},
		},
		{
			name:  "no path after a run that names the file",
			steps: []step{{"completed", 1, nil}, {"requested", fixtureRunID, noPath}, {"completed", fixtureRunID, noPath}},
			want:  []string{"1/1 success", "289782451/1 success"},
		},
		{
			name:  "no path before a run that names the file",
			steps: []step{{"requested", fixtureRunID, noPath}, {"completed", fixtureRunID, noPath}, {"completed", 1, nil}},
			want:  []string{"289782451/1 success", "1/1 success"},
		},
		{
			name:  "completed without path before requested with path",
			steps: []step{{"completed", fixtureRunID, noPath}, {"requested", fixtureRunID, nil}},
			want:  []string{"289782451/1 success"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := siteSpec()
			if tc.workflow != "" {
				spec.Workflow = tc.workflow
			}
			tr := newTestTracker(&fakeClock{t: fixtureCompleted}, spec)
			var runs []*Run
			for _, s := range tc.steps {
				e := runEvent(t, s.fixture)
				e.RunID = s.runID
				if s.edit != nil {
					s.edit(&e)
				}
				for _, u := range apply(t, tr, e) {
					if i := slices.IndexFunc(runs, func(r *Run) bool { return r.ID == u.Run.ID }); i >= 0 {
						runs[i] = u.Run
					} else {
						runs = append(runs, u.Run)
					}
				}
			}
			var got []string
			for _, r := range runs {
				got = append(got, formatRun(r))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("runs %v, want %v", got, tc.want)
			}
			if runs[0].GitHub.Workflow != "test.yml" && tc.workflow == "" {
				t.Errorf("workflow %q, want test.yml", runs[0].GitHub.Workflow)
			}
		})
	}
}

func formatRun(r *Run) string {
	return fmt.Sprintf("%d/%d %s", r.GitHub.RunID, r.GitHub.RunAttempt, r.Status)
}

// TestDeliveryOrder: whatever order a run's deliveries arrive in (jobs
// before the run, a requested without path after the completion), the run
// ends the same, in the same pipeline.
func TestDeliveryOrder(t *testing.T) {
	other := siteSpec()
	other.Name, other.Workflow = "other", "2823525"
	other.Repository = "acme/site"
	requested := runEvent(t, "requested")
	requested.WorkflowPath, requested.RunAttempt = "", 0
	job := jobEvent(t, "in_progress")
	job.RunAttempt = 0
	events := []Event{requested, job, jobEvent(t, "completed.success.with-organization"), runEvent(t, "completed")}
	want := "site success [trigger:success linters:success]"
	for _, order := range permutations(len(events)) {
		tr := newTestTracker(&fakeClock{t: fixtureCompleted}, other, siteSpec())
		var last *Run
		for _, i := range order {
			for _, u := range apply(t, tr, events[i]) {
				last = u.Run
			}
		}
		if last == nil {
			t.Fatalf("order %v: no run", order)
		}
		if got := last.Pipeline + " " + string(last.Status) + " " + fmtStages(last); got != want {
			t.Errorf("order %v: %s, want %s", order, got, want)
		}
		if held := len(tr.orphans.byKey); held != 0 {
			t.Errorf("order %v: %d events still held", order, held)
		}
	}
}

func fmtStages(r *Run) string {
	return fmt.Sprint(stageNames(r))
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

// TestWorkflowStage: a run that ends badly with no job stage to show where
// gets a workflow stage carrying GitHub's conclusion.
func TestWorkflowStage(t *testing.T) {
	tests := []struct {
		conclusion string
		jobs       []string
		stages     []string
		err        string
	}{
		{conclusion: "startup_failure", stages: []string{"trigger:success", "workflow:failed"}, err: "workflow run failed to start"},
		{conclusion: "failure", stages: []string{"trigger:success", "workflow:failed"}, err: "workflow run failed"},
		{conclusion: "cancelled", stages: []string{"trigger:success", "workflow:cancelled"}, err: "workflow run cancelled"},
		{conclusion: "timed_out", stages: []string{"trigger:success", "workflow:timed_out"}, err: "workflow run timed out"},
		{conclusion: "skipped", stages: []string{"trigger:success"}, err: "workflow run skipped"},
		{
			conclusion: "failure", jobs: []string{"completed.success.with-organization"},
			stages: []string{"trigger:success", "linters:success", "workflow:failed"}, err: "workflow run failed",
		},
		{
			conclusion: "failure", jobs: []string{"completed.failure.with-organization"},
			stages: []string{"trigger:success", "linters:failed"}, err: "stage linters failed",
		},
	}
	for _, tc := range tests {
		t.Run(tc.conclusion+" "+strings.Join(tc.jobs, " "), func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCompleted}, siteSpec())
			for _, j := range tc.jobs {
				apply(t, tr, jobEvent(t, j))
			}
			ev := runEvent(t, "completed")
			ev.Conclusion = tc.conclusion
			u := one(t, apply(t, tr, ev))
			if got := stageNames(u.Run); !slices.Equal(got, tc.stages) || u.Run.Error != tc.err {
				t.Fatalf("stages %v error %q, want %v %q", got, u.Run.Error, tc.stages, tc.err)
			}
			w := specialStage(u.Run, StageWorkflow)
			if w == nil {
				return
			}
			if w.Error != "workflow run concluded "+tc.conclusion || w.URL != "https://github.com/octo-org/octo-repo/actions/runs/289782451" ||
				!w.FinishedAt.Equal(fixtureCompleted) || !slices.Contains(finishedNames(u), "workflow:"+string(w.Status)) {
				t.Errorf("workflow stage %+v, finished %v", w, finishedNames(u))
			}
		})
	}
}

// TestIgnoredReasons: every event that changes nothing says why.
func TestIgnoredReasons(t *testing.T) {
	spec := siteSpec()
	spec.PagesProject = fixtureProject
	failed := runEvent(t, "completed")
	failed.Conclusion = "failure"
	tests := []struct {
		name   string
		before []Event
		ev     func(*testing.T) Event
		reason string
	}{
		{
			name:   "duplicate run event",
			before: []Event{runEvent(t, "requested")},
			ev:     func(t *testing.T) Event { return runEvent(t, "requested") },
			reason: "run 1 already has a later update of GitHub run 289782451",
		},
		{
			name:   "event after the completion, waiting for Pages",
			before: []Event{runEvent(t, "completed")},
			ev:     func(t *testing.T) Event { return runEvent(t, "requested") },
			reason: "run 1 already has the completion of GitHub run 289782451",
		},
		{
			name:   "finished run",
			before: []Event{failed},
			ev:     func(t *testing.T) Event { return runEvent(t, "requested") },
			reason: "run 1 already finished",
		},
		{
			name:   "late job",
			before: []Event{runEvent(t, "requested"), jobEvent(t, "completed.success.with-organization")},
			ev:     func(t *testing.T) Event { return jobEvent(t, "in_progress") },
			reason: "run 1 already has job linters success",
		},
		{
			name:   "trigger of another table",
			ev:     func(*testing.T) Event { e := supabaseTrigger("d1", fixtureCreated); e.Table = "comments"; return e },
			reason: "no pipeline for supabase trigger INSERT on table comments",
		},
		{
			name:   "trigger applied twice",
			before: []Event{supabaseTrigger("d1", fixtureCreated)},
			ev:     func(*testing.T) Event { return supabaseTrigger("d1", fixtureCreated) },
			reason: "trigger already seen",
		},
		{
			name:   "pages of another project",
			ev:     func(t *testing.T) Event { e := pagesEvent(t); e.Project = "ninjakittens"; return e },
			reason: "no pipeline for Pages project ninjakittens",
		},
		{
			name:   "pages seen",
			before: []Event{pagesEvent(t)},
			ev:     func(t *testing.T) Event { return pagesEvent(t) },
			reason: "deployment f64788e9-fccd-4d4a-a28a-cb84f88f6 of project this-is-my-project-01 already seen",
		},
		{
			name:   "pages before its run is kept",
			ev:     func(t *testing.T) Event { return pagesEvent(t) },
			reason: "",
		},
		{
			name:   "verify of an unknown run",
			ev:     func(*testing.T) Event { return VerifyResultEvent{RunID: 7} },
			reason: "run 7 is not in progress",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCreated}, spec)
			for _, ev := range tc.before {
				apply(t, tr, ev)
			}
			ups, reason := tr.Apply(tc.ev(t))
			if reason != tc.reason || (reason != "" && len(ups) != 0) {
				t.Fatalf("%d updates, reason %q, want %q", len(ups), reason, tc.reason)
			}
		})
	}
}

// TestHeldAcrossRestart: what the Tracker keeps for a run not seen yet (a
// job, a run event without path) is committed through Held and restored,
// so a restart between it and its run loses nothing.
func TestHeldAcrossRestart(t *testing.T) {
	noPath := runEvent(t, "completed")
	noPath.WorkflowPath = ""
	tests := []struct {
		name   string
		held   Event
		then   Event
		stages []string
		status Status
	}{
		{
			name: "job before its run", held: jobEvent(t, "completed.success.with-organization"), then: runEvent(t, "completed"),
			stages: []string{"trigger:success", "linters:success"}, status: StatusSuccess,
		},
		{
			name: "run without path before one with path", held: noPath, then: runEvent(t, "requested"),
			stages: []string{"trigger:success"}, status: StatusSuccess,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: fixtureCompleted}
			before := newTestTracker(clock, siteSpec())
			if ups, reason := before.Apply(tc.held); len(ups) != 0 || reason != "" {
				t.Fatalf("%d updates, reason %q; want kept", len(ups), reason)
			}
			held, changed := before.Held()
			if len(held) != 1 || !changed {
				t.Fatalf("held %d changed %v", len(held), changed)
			}
			after := newTestTracker(clock, siteSpec())
			after.Restore(nil, nil, 0, held)
			r := one(t, apply(t, after, tc.then)).Run
			if got := stageNames(r); !slices.Equal(got, tc.stages) || r.Status != tc.status {
				t.Fatalf("stages %v status %s, want %v %s", got, r.Status, tc.stages, tc.status)
			}
		})
	}
}
