package pipeline

import (
	"errors"
	"time"
)

// Spec is one configured pipeline, as the Tracker needs it.
type Spec struct {
	Name string
	// Repository is the owner/repo whose workflow runs, jobs, pushes and
	// dispatches belong to the pipeline, compared without regard to case;
	// empty matches any repository.
	Repository string
	// Workflow is a workflow file name ("deploy.yml") or a numeric workflow id.
	Workflow string
	// Branches limits the tracked workflow runs; empty means every branch.
	Branches        []string
	Triggers        []TriggerRule
	PagesProject    string
	Verify          bool
	DispatchTimeout time.Duration
	Timeout         time.Duration
	SlowThreshold   time.Duration
	// ClockSkew is how much earlier than the first trigger a workflow run may
	// be created and still claim a pending run.
	ClockSkew time.Duration
	// Discover makes the Spec a pattern: Repository is a path.Match
	// pattern over owner/repo (compared in lower case) and Name a
	// text/template over NameData. The Tracker makes a pipeline of its own
	// for each repository that matches when it first sees a run of
	// Workflow there (see Discovered); the pattern itself has no runs.
	Discover bool
}

// TriggerRule says which triggers start a run of a pipeline.
type TriggerRule struct {
	Source Source
	// Table is the Supabase table; empty matches every table.
	Table string
	// Events lists the accepted event types; empty accepts all.
	Events []string
	// Pipeline, on a rule of a pattern Spec, is the name of the one
	// discovered pipeline the rule applies to; empty applies it to every
	// pipeline of the pattern. Each discovered pipeline has all the
	// pattern's rules (Instantiate) and follows those that apply to it.
	Pipeline string
}

// appliesTo reports whether the rule is one of spec's own: it names no
// pipeline or names spec.
func (r TriggerRule) appliesTo(spec *Spec) bool {
	return r.Pipeline == "" || r.Pipeline == spec.Name
}

// Update is what one Event (or one timeout) did to one run.
type Update struct {
	// Run is a copy of the run after the change.
	Run *Run
	// Finished is true when the run became terminal with this update.
	Finished bool
	// StagesFinished are the stages that became terminal with this update.
	StagesFinished []Stage
	// StartVerify is true when the run's verify stage just became due: the
	// caller checks the live site and applies a VerifyResultEvent.
	StartVerify bool
}

// Outcome is what ingestion did with a delivery.
type Outcome string

// Ingestion outcomes, as reported to webhook senders and counted in metrics.
const (
	OutcomeAccepted  Outcome = "accepted"
	OutcomeIgnored   Outcome = "ignored"
	OutcomeDuplicate Outcome = "duplicate"
	// OutcomeQueued is a delivery durable in the shared log that the leader
	// has not applied yet (several instances only).
	OutcomeQueued Outcome = "queued"
)

// RunQuery selects runs from the history, newest first.
type RunQuery struct {
	Statuses []Status
	Pipeline string
	Trigger  Source
	// Since and Until bound the run's CreatedAt (inclusive); zero means open.
	Since, Until time.Time
	// MinDuration, when non-zero, returns only runs whose DurationSeconds
	// is at least this long (so only finished runs: a running run has 0).
	MinDuration time.Duration
	// BeforeID, when non-zero, returns only runs with a smaller ID (the cursor).
	BeforeID int64
	Limit    int
}

// ErrNotFound is returned by history lookups for an unknown run.
var ErrNotFound = errors.New("run not found")

// ErrUnavailable wraps failures to make an event durable; webhook senders
// get 503 and may retry.
var ErrUnavailable = errors.New("store unavailable")
