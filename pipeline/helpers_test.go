package pipeline

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The values of the fixtures in testdata/, used by the assertions.
const (
	fixtureRunID = 289782451
	fixtureRepo  = "octo-org/octo-repo"
	// fixtureWorkflowID is workflow_id of the workflow_run fixtures.
	fixtureWorkflowID = 2823525
	fixtureSHA        = "3484a3fb816e0859fd6e1cea078d76385ff50625"
	fixtureProject    = "this-is-my-project-01"
	fixtureDeployID   = "f64788e9-fccd-4d4a-a28a-cb84f88f6"
)

var (
	// fixtureCreated is created_at of the workflow_run fixtures.
	fixtureCreated = mustTime("2020-10-05T16:33:24Z")
	// fixtureCompleted is updated_at of workflow_run/completed.json.
	fixtureCompleted = mustTime("2020-10-05T16:33:49Z")
)

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// fakeClock is the Tracker's clock in tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func readFixture(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// runEvent decodes a workflow_run webhook fixture the way the webhook
// package does, keeping only what the Tracker reads.
func runEvent(t testing.TB, name string) WorkflowRunEvent {
	var p struct {
		WorkflowRun struct {
			ID           int64     `json:"id"`
			RunAttempt   int       `json:"run_attempt"`
			WorkflowID   int64     `json:"workflow_id"`
			Path         string    `json:"path"`
			Name         string    `json:"name"`
			HeadBranch   string    `json:"head_branch"`
			HeadSHA      string    `json:"head_sha"`
			Event        string    `json:"event"`
			Status       string    `json:"status"`
			Conclusion   string    `json:"conclusion"`
			HTMLURL      string    `json:"html_url"`
			CreatedAt    time.Time `json:"created_at"`
			UpdatedAt    time.Time `json:"updated_at"`
			RunStartedAt time.Time `json:"run_started_at"`
		} `json:"workflow_run"`
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	readFixture(t, filepath.Join("github", "workflow_run", name+".json"), &p)
	w := p.WorkflowRun
	return WorkflowRunEvent{
		Repository: p.Repository.FullName, RunID: w.ID, RunAttempt: w.RunAttempt,
		WorkflowID: w.WorkflowID, WorkflowPath: w.Path, Name: w.Name,
		HeadBranch: w.HeadBranch, HeadSHA: w.HeadSHA, Event: w.Event,
		Status: w.Status, Conclusion: w.Conclusion, HTMLURL: w.HTMLURL,
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, RunStartedAt: w.RunStartedAt,
	}
}

// jobEvent decodes a workflow_job webhook fixture. The job fixtures belong
// to run 2202229078 of Codertocat/Hello-World, which has no workflow_run
// fixture; they are moved to the workflow_run fixtures' run and repository
// so that they can be its stages.
func jobEvent(t testing.TB, name string) WorkflowJobEvent {
	var p struct {
		WorkflowJob struct {
			ID           int64     `json:"id"`
			RunID        int64     `json:"run_id"`
			RunAttempt   int       `json:"run_attempt"`
			Name         string    `json:"name"`
			WorkflowName string    `json:"workflow_name"`
			HeadBranch   string    `json:"head_branch"`
			HeadSHA      string    `json:"head_sha"`
			Status       string    `json:"status"`
			Conclusion   string    `json:"conclusion"`
			HTMLURL      string    `json:"html_url"`
			CreatedAt    time.Time `json:"created_at"`
			StartedAt    time.Time `json:"started_at"`
			CompletedAt  time.Time `json:"completed_at"`
		} `json:"workflow_job"`
	}
	readFixture(t, filepath.Join("github", "workflow_job", name+".json"), &p)
	j := p.WorkflowJob
	return WorkflowJobEvent{
		Repository: fixtureRepo, RunID: fixtureRunID, RunAttempt: j.RunAttempt,
		JobID: j.ID, Name: j.Name, WorkflowName: j.WorkflowName, HeadBranch: j.HeadBranch,
		HeadSHA: j.HeadSHA, Status: j.Status, Conclusion: j.Conclusion, HTMLURL: j.HTMLURL,
		CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, CompletedAt: j.CompletedAt,
	}
}

// pagesEvent decodes the Cloudflare "get deployment" example the way the
// poller does. Its commit is set to the workflow_run fixtures' head SHA so
// that the deployment belongs to their run.
func pagesEvent(t testing.TB) PagesDeploymentEvent {
	var p struct {
		Result struct {
			ID          string       `json:"id"`
			URL         string       `json:"url"`
			Environment string       `json:"environment"`
			ProjectName string       `json:"project_name"`
			CreatedOn   time.Time    `json:"created_on"`
			LatestStage PagesStage   `json:"latest_stage"`
			Stages      []PagesStage `json:"stages"`
			Trigger     struct {
				Metadata struct {
					CommitHash string `json:"commit_hash"`
				} `json:"metadata"`
			} `json:"deployment_trigger"`
		} `json:"result"`
	}
	readFixture(t, filepath.Join("cloudflare", "get-deployment.api-reference-example.json"), &p)
	r := p.Result
	return PagesDeploymentEvent{
		Project: r.ProjectName,
		Deployment: PagesDeployment{
			Project: r.ProjectName, DeploymentID: r.ID, URL: r.URL, Environment: r.Environment,
			CommitHash: fixtureSHA, Stages: r.Stages,
		},
		LatestStage: r.LatestStage,
		CreatedOn:   r.CreatedOn,
	}
}

// siteSpec is a pipeline following the fixtures' workflow (test.yml on
// master) with the documented default timeouts.
func siteSpec() Spec {
	return Spec{
		Name:     "site",
		Workflow: "test.yml",
		Branches: []string{"master"},
		Triggers: []TriggerRule{
			{Source: SourceSupabase, Table: "posts", Events: []string{"INSERT", "UPDATE", "DELETE"}},
			{Source: SourceMailerLite, Events: []string{"campaign.sent"}},
		},
		DispatchTimeout: 10 * time.Minute,
		Timeout:         6 * time.Hour,
		ClockSkew:       60 * time.Second,
	}
}

// supabaseTrigger is a Supabase INSERT on posts received at the given time.
func supabaseTrigger(id string, at time.Time) TriggerEvent {
	return TriggerEvent{
		Trigger: Trigger{Source: SourceSupabase, Event: "INSERT", DeliveryID: id, ReceivedAt: at},
		Table:   "posts",
		Type:    "INSERT",
	}
}

func newTestTracker(clock *fakeClock, specs ...Spec) *Tracker {
	return NewTracker(specs, clock.Now)
}

// apply applies the event and fails the test on a Finder error.
func apply(t testing.TB, tr *Tracker, ev Event) []Update {
	t.Helper()
	ups, _ := tr.Apply(ev)
	return ups
}

// one asserts that exactly one run changed and returns its update.
func one(t testing.TB, ups []Update) Update {
	t.Helper()
	if len(ups) != 1 {
		t.Fatalf("got %d updates, want 1: %+v", len(ups), ups)
	}
	return ups[0]
}

func stageNames(r *Run) []string {
	names := make([]string, len(r.Stages))
	for i, s := range r.Stages {
		names[i] = s.Name + ":" + string(s.Status)
	}
	return names
}

func finishedNames(u Update) []string {
	names := make([]string, len(u.StagesFinished))
	for i, s := range u.StagesFinished {
		names[i] = s.Name + ":" + string(s.Status)
	}
	return names
}
