package pipeline

import "time"

// Event is something a source observed: a GitHub workflow run or job update,
// a trigger from Supabase, MailerLite or GitHub, a Cloudflare Pages deployment
// update, or the result of a verify check. Sources build Events; only the
// Tracker interprets them.
type Event interface {
	event()
}

// WorkflowRunEvent is a GitHub Actions workflow run as seen by a
// `workflow_run` webhook or by the REST API.
type WorkflowRunEvent struct {
	Repository   string // owner/name
	RunID        int64
	RunAttempt   int
	WorkflowID   int64
	WorkflowPath string // ".github/workflows/deploy.yml", possibly with an "@ref" suffix
	Name         string
	HeadBranch   string
	HeadSHA      string
	// HeadCommitAt is head_commit.timestamp, zero when the payload has none.
	HeadCommitAt time.Time
	Event        string // what started the workflow run: push, repository_dispatch, ...
	Status       string // GitHub's: requested, queued, pending, waiting, in_progress, completed
	Conclusion   string // GitHub's, empty until completed
	HTMLURL      string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	RunStartedAt time.Time
	// DeliveryID is the webhook delivery, empty when polled.
	DeliveryID string
	// Recovered marks a delivery read back from GitHub's record of its
	// hook's deliveries.
	Recovered bool `json:",omitempty"`
}

// WorkflowJobEvent is a GitHub Actions job as seen by a `workflow_job`
// webhook or by the REST API. Each job becomes a stage of its run.
type WorkflowJobEvent struct {
	Repository   string
	RunID        int64
	RunAttempt   int
	JobID        int64
	Name         string
	WorkflowName string
	HeadBranch   string
	HeadSHA      string
	Status       string // queued, waiting, in_progress, completed
	Conclusion   string
	HTMLURL      string
	CreatedAt    time.Time
	StartedAt    time.Time
	CompletedAt  time.Time
	// Recovered marks a delivery read back from GitHub's record of its
	// hook's deliveries.
	Recovered bool `json:",omitempty"`
}

// TriggerEvent is a change that should make a pipeline publish: a Supabase
// database change, a MailerLite event, a git push or a repository dispatch.
type TriggerEvent struct {
	Trigger Trigger
	// Table is the Supabase table (schema-less name), empty for other sources.
	Table string
	// Type is what the rule's `events` list matches: the Supabase operation
	// (INSERT, UPDATE, DELETE), the MailerLite event type (campaign.sent), or
	// the GitHub event name (push, repository_dispatch, workflow_dispatch).
	Type string
	// Repository is owner/name for GitHub triggers.
	Repository string
	// Branch is the pushed branch for GitHub push triggers.
	Branch string
}

// PagesDeploymentEvent is a Cloudflare Pages deployment as listed by the
// Pages API.
type PagesDeploymentEvent struct {
	Project    string
	Deployment PagesDeployment
	// LatestStage is the deployment's current stage name and status.
	LatestStage PagesStage
	CreatedOn   time.Time
}

// VerifyResultEvent is the outcome of checking the live site for a run.
type VerifyResultEvent struct {
	RunID           int64
	Success         bool
	StartedAt       time.Time
	FinishedAt      time.Time
	ResponseSeconds float64
	Attempts        int
	Error           string
	// What the last attempt saw; empty in results logged before they were
	// recorded.
	URL        string `json:",omitempty"`
	StatusCode int    `json:",omitempty"`
	// Build is the commit the check looked for, empty when it looked for
	// none; Served the commit the site showed, when it could be read, and
	// ServedRunID the earlier run of the pipeline that built it.
	Build       string `json:",omitempty"`
	Served      string `json:",omitempty"`
	ServedRunID int64  `json:",omitempty"`
}

// RecheckResultEvent is a later look at the live site for the pipeline's
// live build (the run whose build was last verified live).
type RecheckResultEvent struct {
	RunID   int64
	Success bool
	// CheckedAt is when the answer came.
	CheckedAt       time.Time
	URL             string `json:",omitempty"`
	StatusCode      int    `json:",omitempty"`
	ResponseSeconds float64
	Served          string `json:",omitempty"`
	ServedRunID     int64  `json:",omitempty"`
	Error           string `json:",omitempty"`
}

func (WorkflowRunEvent) event()     {}
func (WorkflowJobEvent) event()     {}
func (TriggerEvent) event()         {}
func (PagesDeploymentEvent) event() {}
func (VerifyResultEvent) event()    {}
func (RecheckResultEvent) event()   {}
