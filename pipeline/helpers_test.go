package pipeline

import (
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

// Values of the published payloads in the fixtures package, used by the
// assertions.
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

// runEvent decodes a published workflow_run webhook payload the way the
// webhook package does, keeping only what the Tracker reads.
func runEvent(t testing.TB, name string) WorkflowRunEvent {
	t.Helper()
	p := fixtures.MustDecode(fixtures.MustLoad("github/workflow_run/" + name + ".json"))
	return WorkflowRunEvent{
		Repository:   p.String("repository.full_name"),
		RunID:        p.Int("workflow_run.id"),
		RunAttempt:   int(p.Int("workflow_run.run_attempt")),
		WorkflowID:   p.Int("workflow_run.workflow_id"),
		WorkflowPath: p.String("workflow_run.path"),
		Name:         p.String("workflow_run.name"),
		HeadBranch:   p.String("workflow_run.head_branch"),
		HeadSHA:      p.String("workflow_run.head_sha"),
		Event:        p.String("workflow_run.event"),
		Status:       p.String("workflow_run.status"),
		Conclusion:   p.String("workflow_run.conclusion"),
		HTMLURL:      p.String("workflow_run.html_url"),
		CreatedAt:    p.Time("workflow_run.created_at"),
		UpdatedAt:    p.Time("workflow_run.updated_at"),
		RunStartedAt: p.Time("workflow_run.run_started_at"),
	}
}

// jobEvent decodes a published workflow_job webhook payload. The job
// payloads belong to run 2202229078 of Codertocat/Hello-World, which has no
// workflow_run payload; they are moved to the workflow_run payloads' run
// and repository so that they can be its stages.
func jobEvent(t testing.TB, name string) WorkflowJobEvent {
	t.Helper()
	p := fixtures.MustDecode(fixtures.MustLoad("github/workflow_job/" + name + ".json"))
	return WorkflowJobEvent{
		Repository:   fixtureRepo,
		RunID:        fixtureRunID,
		RunAttempt:   int(p.Int("workflow_job.run_attempt")),
		JobID:        p.Int("workflow_job.id"),
		Name:         p.String("workflow_job.name"),
		WorkflowName: p.String("workflow_job.workflow_name"),
		HeadBranch:   p.String("workflow_job.head_branch"),
		HeadSHA:      p.String("workflow_job.head_sha"),
		Status:       p.String("workflow_job.status"),
		Conclusion:   p.String("workflow_job.conclusion"),
		HTMLURL:      p.String("workflow_job.html_url"),
		CreatedAt:    p.Time("workflow_job.created_at"),
		StartedAt:    p.Time("workflow_job.started_at"),
		CompletedAt:  p.Time("workflow_job.completed_at"),
	}
}

// pagesEvent decodes the Cloudflare "get deployment" example the way the
// poller does. Its commit is set to the workflow_run payloads' head SHA so
// that the deployment belongs to their run.
func pagesEvent(t testing.TB) PagesDeploymentEvent {
	t.Helper()
	p := fixtures.MustDecode(fixtures.MustLoad("cloudflare/pages/get-deployment.api-reference-example.json"))
	var latest PagesStage
	var stages []PagesStage
	p.Unmarshal("result.latest_stage", &latest)
	p.Unmarshal("result.stages", &stages)
	project := p.String("result.project_name")
	return PagesDeploymentEvent{
		Project: project,
		Deployment: PagesDeployment{
			Project: project, DeploymentID: p.String("result.id"), URL: p.String("result.url"),
			Environment: p.String("result.environment"), CommitHash: fixtureSHA, Stages: stages,
		},
		LatestStage: latest,
		CreatedOn:   p.Time("result.created_on"),
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

// apply applies the event and returns the updates it made.
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

// pipelineState is one pipeline's state as the tests read it from the
// Tracker: runs in progress and the last finished run.
type pipelineState struct {
	Spec         Spec
	InProgress   int
	LastFinished *Run
}

// snapshotOf reads, for every configured pipeline, its state, with copies of
// the runs.
type snapshotOf struct {
	Pipelines []pipelineState
}

func snapshot(t *Tracker) snapshotOf {
	inProgress := make(map[string]int, len(t.specs))
	for _, tr := range t.active {
		inProgress[tr.run.Pipeline]++
	}
	var s snapshotOf
	for _, spec := range t.specs {
		ps := pipelineState{Spec: spec, InProgress: inProgress[spec.Name]}
		if r := t.lastFinished[spec.Name]; r != nil {
			ps.LastFinished = r.Clone()
		}
		s.Pipelines = append(s.Pipelines, ps)
	}
	return s
}

// active returns copies of the Tracker's non-terminal runs, oldest first.
func active(t *Tracker) []*Run {
	var runs []*Run
	for _, tr := range t.sortedActive() {
		runs = append(runs, tr.run.Clone())
	}
	return runs
}
