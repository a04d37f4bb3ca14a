// Package pipeline is the domain of pipeline_exporter: pipeline runs, their
// stages, the events that move them, and the Tracker that correlates events
// into runs. It imports no HTTP, SQL or Prometheus code: sources turn outside
// payloads into Events, sinks read the Runs the Tracker decided.
package pipeline

import "time"

// Status is the state of a run or of a stage.
type Status string

// Run and stage statuses. A run uses pending, running and the four terminal
// statuses; a stage may also be skipped.
const (
	StatusPending   Status = "pending"
	StatusRunning   Status = "running"
	StatusSuccess   Status = "success"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
	StatusTimedOut  Status = "timed_out"
	StatusSkipped   Status = "skipped"
)

// RunStatuses lists every run status in a fixed order, for one-hot metrics
// and for validating query parameters.
var RunStatuses = []Status{StatusPending, StatusRunning, StatusSuccess, StatusFailed, StatusCancelled, StatusTimedOut}

// StageStatuses lists every stage status in a fixed order.
var StageStatuses = []Status{StatusPending, StatusRunning, StatusSuccess, StatusFailed, StatusCancelled, StatusSkipped, StatusTimedOut}

// Terminal reports whether a run or stage in this status will not change again.
func (s Status) Terminal() bool {
	switch s {
	case StatusSuccess, StatusFailed, StatusCancelled, StatusTimedOut, StatusSkipped:
		return true
	}
	return false
}

// Source names where a trigger or delivery came from. The values are the
// `trigger` label values of the run metrics.
type Source string

// The sources the exporter knows.
const (
	SourceGitHub     Source = "github"
	SourceSupabase   Source = "supabase"
	SourceMailerLite Source = "mailerlite"
	SourceCloudflare Source = "cloudflare"
)

// Sources lists every source in a fixed order.
var Sources = []Source{SourceGitHub, SourceSupabase, SourceMailerLite, SourceCloudflare}

// Well-known stage names. Job stages are named after their GitHub job;
// the workflow stage stands for a workflow run that ended badly with no job
// stage to show where.
const (
	StageTrigger  = "trigger"
	StageDispatch = "dispatch"
	StageWorkflow = "workflow"
	StagePages    = "pages"
	StageVerify   = "verify"
)

// Trigger is the outside event that started (or joined) a run.
type Trigger struct {
	Source     Source    `json:"source"`
	Event      string    `json:"event"`
	DeliveryID string    `json:"delivery_id,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
	Ref        string    `json:"ref,omitempty"`
	SHA        string    `json:"sha,omitempty"`
	// Recovered marks a trigger whose delivery GitHub failed to make and
	// the exporter read back from GitHub's record of its hook's deliveries.
	Recovered bool `json:"recovered,omitempty"`
}

// Stage is one step of a run: trigger, dispatch, a GitHub Actions job, the
// Cloudflare Pages deployment, or the verify check of the live site.
type Stage struct {
	Name            string     `json:"name"`
	Status          Status     `json:"status"`
	StartedAt       *time.Time `json:"started_at,omitempty"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	DurationSeconds float64    `json:"duration_seconds"`
	URL             string     `json:"url,omitempty"`
	Error           string     `json:"error,omitempty"`
	// JobID is the GitHub Actions job id for job stages; it keys job updates.
	JobID int64 `json:"job_id,omitempty"`
	// QueuedSeconds is, for job stages, the time from job creation to job start.
	QueuedSeconds float64 `json:"queued_seconds,omitempty"`
	// ResponseSeconds is, for the verify stage, the last measured response time.
	ResponseSeconds float64 `json:"response_seconds,omitempty"`
}

// GitHubRun identifies the GitHub Actions workflow run a pipeline run follows.
type GitHubRun struct {
	Repository string `json:"repository,omitempty"`
	RunID      int64  `json:"run_id"`
	RunAttempt int    `json:"run_attempt"`
	WorkflowID int64  `json:"workflow_id,omitempty"`
	Workflow   string `json:"workflow"`
	HTMLURL    string `json:"html_url,omitempty"`
	HeadSHA    string `json:"head_sha,omitempty"`
	HeadBranch string `json:"head_branch,omitempty"`
	// HeadCommitAt is the head commit's own time (GitHub's
	// head_commit.timestamp): where DORA's lead time starts.
	HeadCommitAt *time.Time `json:"head_commit_timestamp,omitempty"`
	Event        string     `json:"event,omitempty"`
	Status       string     `json:"status,omitempty"`
	Conclusion   string     `json:"conclusion,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	// Recovered is set once a workflow_run or workflow_job delivery of this
	// run was read back from GitHub's record of its hook's deliveries
	// rather than received.
	Recovered bool `json:"recovered,omitempty"`
}

// PagesStage is one of Cloudflare Pages' own deployment stages
// (queued, initialize, clone_repo, build, deploy) with Cloudflare's status
// (idle, active, success, failure, canceled).
type PagesStage struct {
	Name      string     `json:"name"`
	Status    string     `json:"status"`
	StartedOn *time.Time `json:"started_on,omitempty"`
	EndedOn   *time.Time `json:"ended_on,omitempty"`
}

// PagesDeployment is the Cloudflare Pages deployment matched to a run.
type PagesDeployment struct {
	Project      string       `json:"project,omitempty"`
	DeploymentID string       `json:"deployment_id"`
	URL          string       `json:"url,omitempty"`
	Environment  string       `json:"environment,omitempty"`
	CommitHash   string       `json:"commit_hash,omitempty"`
	Stages       []PagesStage `json:"stages"`
}

// Run is one pipeline run: from its first trigger to the live site answering
// (or to the stage where it stopped).
type Run struct {
	// ID is assigned by the Tracker, increases with creation order and is
	// never reused; the store and the API sort and page by it.
	ID       int64     `json:"id"`
	Pipeline string    `json:"pipeline"`
	Status   Status    `json:"status"`
	Trigger  Trigger   `json:"trigger"`
	Triggers []Trigger `json:"triggers"`
	// CreatedAt is when the run began: its first trigger, or the workflow
	// run's creation when GitHub itself started it.
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// DurationSeconds is first trigger to finish: the pipeline's response time.
	DurationSeconds float64          `json:"duration_seconds"`
	GitHub          *GitHubRun       `json:"github,omitempty"`
	Pages           *PagesDeployment `json:"pages,omitempty"`
	Stages          []Stage          `json:"stages"`
	Error           string           `json:"error,omitempty"`
	// Verify is what the live site showed: at the verify stage, then, for
	// the pipeline's live build, at each recheck. Nil until verify ran.
	Verify *VerifyCheck `json:"verify,omitempty"`
	// SeenAt is when the exporter first saw this run, on its own clock;
	// dispatch_timeout and timeout are measured from it.
	SeenAt time.Time `json:"seen_at"`
	// ChangeSeq numbers the run's latest committed change; every change of
	// any run gets the next number (the id of its live event).
	ChangeSeq int64 `json:"-"`
}

// VerifyCheck is the latest look at the live site for a run: its verify
// check, or for the pipeline's live build the latest recheck.
type VerifyCheck struct {
	URL             string  `json:"url"`
	StatusCode      int     `json:"status_code,omitempty"`
	ResponseSeconds float64 `json:"response_seconds"`
	// Build is the commit the check looked for; empty when the pipeline
	// checks only that the site answers.
	Build string `json:"build,omitempty"`
	// Served is the commit the site showed, when it could be read;
	// ServedRunID the exporter's run that built it, when known.
	Served      string `json:"served,omitempty"`
	ServedRunID int64  `json:"served_run_id,omitempty"`
	// CheckedAt is when the site was last looked at.
	CheckedAt time.Time `json:"checked_at"`
	// VerifiedAt is when the build was first seen live (the verify
	// stage's success); zero for a failed check.
	VerifiedAt *time.Time `json:"verified_at,omitempty"`
	// FailedRechecks counts the rechecks in a row that did not find the
	// build live while no newer run of the pipeline had started.
	FailedRechecks int `json:"failed_rechecks,omitempty"`
	// Stale is set once two rechecks in a row did not find the build, and
	// cleared by a recheck that finds it.
	Stale bool `json:"stale,omitempty"`
	// Error says why the latest recheck did not find the build.
	Error string `json:"error,omitempty"`
}

// Live reports whether the run's build was verified live: it succeeded
// with a verify check that looked for its build.
func (r *Run) Live() bool {
	return r.Status == StatusSuccess && r.Verify != nil && r.Verify.Build != "" && r.Verify.VerifiedAt != nil
}

// Clone returns a deep copy of r, safe to hand to another goroutine.
func (r *Run) Clone() *Run {
	c := *r
	c.Triggers = append([]Trigger(nil), r.Triggers...)
	c.Stages = append([]Stage(nil), r.Stages...)
	if r.GitHub != nil {
		g := *r.GitHub
		c.GitHub = &g
	}
	if r.Verify != nil {
		v := *r.Verify
		c.Verify = &v
	}
	if r.Pages != nil {
		p := *r.Pages
		p.Stages = append([]PagesStage(nil), r.Pages.Stages...)
		c.Pages = &p
	}
	return &c
}
