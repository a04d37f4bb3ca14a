package webhook

import (
	"cmp"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// authGitHub accepts only X-Hub-Signature-256. go-github's ValidateSignature
// also accepts sha1= and sha512= tags, so the prefix is checked here first,
// and the legacy X-Hub-Signature header is never consulted.
func authGitHub(r *http.Request, s Settings, body []byte, _ time.Time) error {
	sig := r.Header.Get(github.SHA256SignatureHeader)
	if sig == "" {
		if r.Header.Get(github.SHA1SignatureHeader) != "" {
			return errors.New("missing X-Hub-Signature-256 header (SHA-1 signatures are not accepted)")
		}
		return errors.New("missing X-Hub-Signature-256 header")
	}
	if !strings.HasPrefix(sig, "sha256=") {
		return errors.New("X-Hub-Signature-256 does not start with sha256=")
	}
	if github.ValidateSignature(sig, body, []byte(s.GitHubSecret)) != nil {
		return errors.New("X-Hub-Signature-256 does not match the body")
	}
	return nil
}

func parseGitHub(r *http.Request, body []byte, now time.Time) (parsed, error) {
	event := github.WebHookType(r)
	if event == "" {
		return parsed{}, errors.New("missing X-GitHub-Event header")
	}
	id := github.DeliveryID(r)
	if id == "" {
		return parsed{}, errors.New("missing X-GitHub-Delivery header")
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		return parsed{}, errors.New("form-encoded payloads are not supported: set the webhook's content type to application/json")
	}
	events, err := GitHubEvents(event, id, body, now)
	if err != nil {
		return parsed{}, err
	}
	return parsed{id: id, event: event, events: events}, nil
}

// githubParsers read the events of the GitHub deliveries the exporter
// follows, by X-GitHub-Event: the others are stored but change no run.
var githubParsers = map[string]func(body []byte, deliveryID string, received time.Time) ([]pipeline.Event, error){
	"workflow_run": parseWorkflowRun,
	"workflow_job": func(body []byte, _ string, received time.Time) ([]pipeline.Event, error) {
		return parseWorkflowJob(body, received)
	},
	"push":                parsePush,
	"repository_dispatch": parseRepositoryDispatch,
}

// GitHubIngests reports whether the exporter reads events from a GitHub
// delivery of this X-GitHub-Event: the others are stored but change no run.
func GitHubIngests(event string) bool {
	_, ok := githubParsers[event]
	return ok
}

// GitHubEvents reads the events of a GitHub delivery: its X-GitHub-Event,
// X-GitHub-Delivery and body. received bounds the payload's times and is
// the time of the triggers it makes. The webhook handler and the reading
// back of missed deliveries (poller.Reconciler) share it, so a delivery
// means the same whichever way it came.
func GitHubEvents(event, deliveryID string, body []byte, received time.Time) ([]pipeline.Event, error) {
	var events []pipeline.Event
	var err error
	switch parse := githubParsers[event]; {
	case parse != nil:
		events, err = parse(body, deliveryID, received)
	case event == "ping":
		err = decodeObject(body, &github.PingEvent{})
	default:
		// Not interesting, but still stored: it must at least be JSON.
		err = decodeObject(body, &struct{}{})
	}
	if err != nil {
		return nil, fmt.Errorf("%s payload: %w", event, err)
	}
	return events, nil
}

// The workflow_run and workflow_job payloads are decoded into the few
// fields the Tracker needs rather than go-github's full event types, which
// also build the repository, sender and organisation objects of every
// delivery (BenchmarkDecodeWorkflowJob: 22 allocations against go-github's
// 387).
// TestDecodeMatchesGoGitHub holds go-github's types as the reference on
// every published payload. Times are pointers so that an absent or null
// time stays apart from a present one, which must be in range.

type repositoryPayload struct {
	FullName string `json:"full_name"`
}

type workflowRunPayload struct {
	WorkflowRun *struct {
		ID           int64      `json:"id"`
		RunAttempt   int        `json:"run_attempt"`
		WorkflowID   int64      `json:"workflow_id"`
		Path         string     `json:"path"`
		Name         string     `json:"name"`
		HeadBranch   string     `json:"head_branch"`
		HeadSHA      string     `json:"head_sha"`
		Event        string     `json:"event"`
		Status       string     `json:"status"`
		Conclusion   string     `json:"conclusion"`
		HTMLURL      string     `json:"html_url"`
		CreatedAt    *time.Time `json:"created_at"`
		UpdatedAt    *time.Time `json:"updated_at"`
		RunStartedAt *time.Time `json:"run_started_at"`
		HeadCommit   *struct {
			Timestamp *time.Time `json:"timestamp"`
		} `json:"head_commit"`
	} `json:"workflow_run"`
	Repository repositoryPayload `json:"repository"`
}

func parseWorkflowRun(body []byte, deliveryID string, now time.Time) ([]pipeline.Event, error) {
	var p workflowRunPayload
	if err := decodeObject(body, &p); err != nil {
		return nil, err
	}
	run := p.WorkflowRun
	switch {
	case run == nil:
		return nil, errors.New("missing workflow_run object")
	case run.ID == 0:
		return nil, errors.New("missing workflow_run.id")
	case run.Status == "":
		return nil, errors.New("missing workflow_run.status")
	}
	if err := cmp.Or(
		checkTime("workflow_run.created_at", run.CreatedAt, now),
		checkTime("workflow_run.updated_at", run.UpdatedAt, now),
		checkTime("workflow_run.run_started_at", run.RunStartedAt, now),
	); err != nil {
		return nil, err
	}
	// A commit's time is its author's clock, which may be anything: one
	// outside the allowed range is left out (no lead time), not refused.
	var commitTime time.Time
	if run.HeadCommit != nil && checkTime("workflow_run.head_commit.timestamp", run.HeadCommit.Timestamp, now) == nil {
		commitTime = value(run.HeadCommit.Timestamp)
	}
	return []pipeline.Event{pipeline.WorkflowRunEvent{
		Repository:   p.Repository.FullName,
		RunID:        run.ID,
		RunAttempt:   attempt(run.RunAttempt),
		WorkflowID:   run.WorkflowID,
		WorkflowPath: run.Path,
		Name:         run.Name,
		HeadBranch:   run.HeadBranch,
		HeadSHA:      run.HeadSHA,
		Event:        run.Event,
		Status:       run.Status,
		Conclusion:   run.Conclusion,
		HTMLURL:      run.HTMLURL,
		CreatedAt:    value(run.CreatedAt),
		UpdatedAt:    value(run.UpdatedAt),
		RunStartedAt: value(run.RunStartedAt),
		HeadCommitAt: commitTime,
		DeliveryID:   deliveryID,
	}}, nil
}

type workflowJobPayload struct {
	WorkflowJob *struct {
		ID           int64      `json:"id"`
		RunID        int64      `json:"run_id"`
		RunAttempt   int        `json:"run_attempt"`
		Name         string     `json:"name"`
		WorkflowName string     `json:"workflow_name"`
		HeadBranch   string     `json:"head_branch"`
		HeadSHA      string     `json:"head_sha"`
		Status       string     `json:"status"`
		Conclusion   string     `json:"conclusion"`
		HTMLURL      string     `json:"html_url"`
		CreatedAt    *time.Time `json:"created_at"`
		StartedAt    *time.Time `json:"started_at"`
		CompletedAt  *time.Time `json:"completed_at"`
	} `json:"workflow_job"`
	Repository repositoryPayload `json:"repository"`
}

func parseWorkflowJob(body []byte, now time.Time) ([]pipeline.Event, error) {
	var p workflowJobPayload
	if err := decodeObject(body, &p); err != nil {
		return nil, err
	}
	job := p.WorkflowJob
	switch {
	case job == nil:
		return nil, errors.New("missing workflow_job object")
	case job.ID == 0:
		return nil, errors.New("missing workflow_job.id")
	case job.RunID == 0:
		return nil, errors.New("missing workflow_job.run_id")
	case job.Status == "":
		return nil, errors.New("missing workflow_job.status")
	}
	if err := cmp.Or(
		checkTime("workflow_job.created_at", job.CreatedAt, now),
		checkTime("workflow_job.started_at", job.StartedAt, now),
		checkTime("workflow_job.completed_at", job.CompletedAt, now),
	); err != nil {
		return nil, err
	}
	return []pipeline.Event{pipeline.WorkflowJobEvent{
		Repository:   p.Repository.FullName,
		RunID:        job.RunID,
		RunAttempt:   attempt(job.RunAttempt),
		JobID:        job.ID,
		Name:         job.Name,
		WorkflowName: job.WorkflowName,
		HeadBranch:   job.HeadBranch,
		HeadSHA:      job.HeadSHA,
		Status:       job.Status,
		Conclusion:   job.Conclusion,
		HTMLURL:      job.HTMLURL,
		CreatedAt:    value(job.CreatedAt),
		StartedAt:    value(job.StartedAt),
		CompletedAt:  value(job.CompletedAt),
	}}, nil
}

// attempt returns a payload's run_attempt, or 1 when it has none (or a
// nonsensical one): GitHub Enterprise Server and older api.github.com
// versions leave it out, and their runs are first attempts.
func attempt(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

func value(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// Payload times must lie between minTime and maxAhead past the handler's
// clock: a year 1 or 9999 time would make negative timestamp gauges and
// durations of centuries downstream (docs/http-api.md).
var minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

const maxAhead = 365 * 24 * time.Hour

// checkTime rejects a present time outside the accepted range, naming the
// field.
func checkTime(field string, t *time.Time, now time.Time) error {
	if t == nil || !t.Before(minTime) && !t.After(now.Add(maxAhead)) {
		return nil
	}
	return fmt.Errorf("field %s: time %s is before 2000-01-01 or more than a year ahead", field, t.UTC().Format(time.RFC3339))
}

// parsePush makes a trigger of a branch push. Tag pushes and branch
// deletions publish nothing, so they make none.
func parsePush(body []byte, deliveryID string, received time.Time) ([]pipeline.Event, error) {
	var ev github.PushEvent
	if err := decodeObject(body, &ev); err != nil {
		return nil, err
	}
	branch, ok := strings.CutPrefix(ev.GetRef(), "refs/heads/")
	if !ok || branch == "" || ev.GetDeleted() {
		return nil, nil
	}
	return []pipeline.Event{pipeline.TriggerEvent{
		Trigger: pipeline.Trigger{
			Source:     pipeline.SourceGitHub,
			Event:      "push",
			DeliveryID: deliveryID,
			ReceivedAt: received,
			Ref:        ev.GetRef(),
			SHA:        ev.GetAfter(),
		},
		Type:       "push",
		Repository: ev.GetRepo().GetFullName(),
		Branch:     branch,
	}}, nil
}

func parseRepositoryDispatch(body []byte, deliveryID string, received time.Time) ([]pipeline.Event, error) {
	var ev github.RepositoryDispatchEvent
	if err := decodeObject(body, &ev); err != nil {
		return nil, err
	}
	return []pipeline.Event{pipeline.TriggerEvent{
		Trigger: pipeline.Trigger{
			Source:     pipeline.SourceGitHub,
			Event:      ev.GetAction(),
			DeliveryID: deliveryID,
			ReceivedAt: received,
		},
		Type:       "repository_dispatch",
		Repository: ev.GetRepo().GetFullName(),
		Branch:     ev.GetBranch(),
	}}, nil
}
