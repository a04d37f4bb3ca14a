package webhook

import (
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

func parseGitHub(r *http.Request, body []byte, received time.Time) (parsed, error) {
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
	p := parsed{id: id, event: event}
	var err error
	switch event {
	case "workflow_run":
		p.events, err = parseWorkflowRun(body, id)
	case "workflow_job":
		p.events, err = parseWorkflowJob(body)
	case "push":
		p.events, err = parsePush(body, id, received)
	case "repository_dispatch":
		p.events, err = parseRepositoryDispatch(body, id, received)
	case "ping":
		err = decodeObject(body, &github.PingEvent{})
	default:
		// Not interesting, but still stored: it must at least be JSON.
		err = decodeObject(body, &struct{}{})
	}
	if err != nil {
		return parsed{}, fmt.Errorf("%s payload: %w", event, err)
	}
	return p, nil
}

// The workflow_run and workflow_job payloads are the hot path: GitHub sends
// one per state change of every run and job. extractFields copies out only
// what the Tracker needs; the rare events use go-github's types.

func parseWorkflowRun(body []byte, deliveryID string) ([]pipeline.Event, error) {
	ev := pipeline.WorkflowRunEvent{DeliveryID: deliveryID}
	run := object{nullable: true, fields: []field{
		{"id", &ev.RunID},
		{"run_attempt", &ev.RunAttempt},
		{"workflow_id", &ev.WorkflowID},
		{"path", &ev.WorkflowPath},
		{"name", &ev.Name},
		{"head_branch", &ev.HeadBranch},
		{"head_sha", &ev.HeadSHA},
		{"event", &ev.Event},
		{"status", &ev.Status},
		{"conclusion", &ev.Conclusion},
		{"html_url", &ev.HTMLURL},
		{"created_at", &ev.CreatedAt},
		{"updated_at", &ev.UpdatedAt},
		{"run_started_at", &ev.RunStartedAt},
	}}
	repo := object{fields: []field{{"full_name", &ev.Repository}}}
	if err := extractFields(body, []field{{"workflow_run", &run}, {"repository", &repo}}); err != nil {
		return nil, err
	}
	switch {
	case !run.present:
		return nil, errors.New("missing workflow_run object")
	case ev.RunID == 0:
		return nil, errors.New("missing workflow_run.id")
	case ev.Status == "":
		return nil, errors.New("missing workflow_run.status")
	}
	return []pipeline.Event{ev}, nil
}

func parseWorkflowJob(body []byte) ([]pipeline.Event, error) {
	var ev pipeline.WorkflowJobEvent
	job := object{nullable: true, fields: []field{
		{"id", &ev.JobID},
		{"run_id", &ev.RunID},
		{"run_attempt", &ev.RunAttempt},
		{"name", &ev.Name},
		{"workflow_name", &ev.WorkflowName},
		{"head_branch", &ev.HeadBranch},
		{"head_sha", &ev.HeadSHA},
		{"status", &ev.Status},
		{"conclusion", &ev.Conclusion},
		{"html_url", &ev.HTMLURL},
		{"created_at", &ev.CreatedAt},
		{"started_at", &ev.StartedAt},
		{"completed_at", &ev.CompletedAt},
	}}
	repo := object{fields: []field{{"full_name", &ev.Repository}}}
	if err := extractFields(body, []field{{"workflow_job", &job}, {"repository", &repo}}); err != nil {
		return nil, err
	}
	switch {
	case !job.present:
		return nil, errors.New("missing workflow_job object")
	case ev.JobID == 0:
		return nil, errors.New("missing workflow_job.id")
	case ev.RunID == 0:
		return nil, errors.New("missing workflow_job.run_id")
	case ev.Status == "":
		return nil, errors.New("missing workflow_job.status")
	}
	return []pipeline.Event{ev}, nil
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
