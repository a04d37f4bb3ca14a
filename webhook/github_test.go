package webhook

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGitHubEvents(t *testing.T) {
	cases := []struct {
		event, file string
		want        []pipeline.Event
	}{
		{"workflow_run", "github/workflow_run/completed.json", []pipeline.Event{pipeline.WorkflowRunEvent{
			Repository:   "octo-org/octo-repo",
			RunID:        289782451,
			RunAttempt:   1,
			WorkflowID:   2823525,
			WorkflowPath: ".github/workflows/test.yml",
			HeadBranch:   "master",
			HeadSHA:      "3484a3fb816e0859fd6e1cea078d76385ff50625",
			Event:        "repository_dispatch",
			Status:       "completed",
			Conclusion:   "success",
			HTMLURL:      "https://github.com/octo-org/octo-repo/actions/runs/289782451",
			CreatedAt:    mustTime(t, "2020-10-05T16:33:24Z"),
			UpdatedAt:    mustTime(t, "2020-10-05T16:33:49Z"),
			RunStartedAt: mustTime(t, "2020-10-05T16:33:49Z"),
			DeliveryID:   "delivery-1",
		}}},
		{"workflow_run", "github/workflow_run/requested.json", []pipeline.Event{pipeline.WorkflowRunEvent{
			Repository:   "octo-org/octo-repo",
			RunID:        289782451,
			RunAttempt:   1,
			WorkflowID:   2823525,
			WorkflowPath: ".github/workflows/test.yml",
			HeadBranch:   "master",
			HeadSHA:      "3484a3fb816e0859fd6e1cea078d76385ff50625",
			Event:        "repository_dispatch",
			Status:       "queued",
			HTMLURL:      "https://github.com/octo-org/octo-repo/actions/runs/289782451",
			CreatedAt:    mustTime(t, "2020-10-05T16:33:24Z"),
			UpdatedAt:    mustTime(t, "2020-10-05T16:33:24Z"),
			RunStartedAt: mustTime(t, "2020-10-05T16:33:49Z"),
			DeliveryID:   "delivery-1",
		}}},
		{"workflow_job", "github/workflow_job/completed.failure.with-organization.json", []pipeline.Event{pipeline.WorkflowJobEvent{
			Repository:   "Codertocat/Hello-World",
			RunID:        2202229078,
			RunAttempt:   1,
			JobID:        289782451,
			Name:         "linters",
			WorkflowName: "CodeQL",
			HeadBranch:   "main",
			HeadSHA:      "3484a3fb816e0859fd6e1cea078d76385ff50625",
			Status:       "completed",
			Conclusion:   "failure",
			HTMLURL:      "https://github.com/octo-org/octo-repo/runs/1291536064",
			CreatedAt:    mustTime(t, "2021-08-05T10:33:58Z"),
			StartedAt:    mustTime(t, "2021-08-05T10:34:58Z"),
			CompletedAt:  mustTime(t, "2021-08-05T10:38:16Z"),
		}}},
		{"push", "github/push/with-new-branch.json", []pipeline.Event{pipeline.TriggerEvent{
			Trigger: pipeline.Trigger{
				Source:     pipeline.SourceGitHub,
				Event:      "push",
				DeliveryID: "delivery-1",
				ReceivedAt: testNow,
				Ref:        "refs/heads/master",
				SHA:        "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
			},
			Type:       "push",
			Repository: "Codertocat/Hello-World",
			Branch:     "master",
		}}},
		// A tag deletion publishes nothing.
		{"push", "github/push/payload.json", nil},
		{"repository_dispatch", "github/repository_dispatch/payload.json", []pipeline.Event{pipeline.TriggerEvent{
			Trigger: pipeline.Trigger{
				Source:     pipeline.SourceGitHub,
				Event:      "on-demand-test",
				DeliveryID: "delivery-1",
				ReceivedAt: testNow,
			},
			Type:       "repository_dispatch",
			Repository: "octo-org/octo-repo",
			Branch:     "master",
		}}},
		{"ping", "github/ping/payload.json", nil},
		{"deployment_status", "github/deployment_status/payload.json", nil},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			e := newEnv(t)
			body := readTestdata(t, c.file)
			h := hdr("X-Hub-Signature-256", signGitHub(e.settings.GitHubSecret, body),
				"X-GitHub-Event", c.event, "X-GitHub-Delivery", "delivery-1", "Content-Type", "application/json")
			rec := e.post(pipeline.SourceGitHub, h, body)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202; body %s", rec.Code, rec.Body)
			}
			wantOutcome := pipeline.OutcomeAccepted
			if c.want == nil {
				wantOutcome = pipeline.OutcomeIgnored
			}
			if a := decodeAnswer(t, rec); a.Data.Outcome != wantOutcome {
				t.Errorf("outcome = %q, want %q", a.Data.Outcome, wantOutcome)
			}
			call := e.ing.calls[0]
			if call.d.ID != "delivery-1" || call.d.Event != c.event || call.d.Source != pipeline.SourceGitHub {
				t.Errorf("delivery id/event/source = %q/%q/%q", call.d.ID, call.d.Event, call.d.Source)
			}
			if !reflect.DeepEqual(call.events, c.want) {
				t.Errorf("events:\n got %+v\nwant %+v", call.events, c.want)
			}
		})
	}
}

// TestGitHubJobOfRun checks that the job's run id survives the trip: the
// published job examples belong to no published run, so the run id is set
// in the decoded JSON, as the Tracker would see a job of run 289782451.
func TestGitHubJobOfRun(t *testing.T) {
	body := editJSON(t, readTestdata(t, "github/workflow_job/in_progress.json"), func(m map[string]any) {
		m["workflow_job"].(map[string]any)["run_id"] = 289782451
	})
	events, err := parseWorkflowJob(body)
	if err != nil {
		t.Fatal(err)
	}
	job := events[0].(pipeline.WorkflowJobEvent)
	if job.RunID != 289782451 || job.Status != "in_progress" || job.Conclusion != "" || !job.CompletedAt.IsZero() {
		t.Errorf("job = %+v, want run 289782451 in progress without conclusion or completion", job)
	}
}

// TestGitHubSignatureTestVector uses the values GitHub publishes for checking
// an implementation.
func TestGitHubSignatureTestVector(t *testing.T) {
	var v struct {
		Secret    string `json:"secret"`
		Payload   string `json:"payload"`
		Signature string `json:"X-Hub-Signature-256"`
	}
	if err := json.Unmarshal(readTestdata(t, "github/signature-test-vector.json"), &v); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, payload, signature string
		ok                       bool
	}{
		{"published vector", v.Payload, v.Signature, true},
		{"upper-case hex", v.Payload, "sha256=" + strings.ToUpper(strings.TrimPrefix(v.Signature, "sha256=")), true},
		{"payload changed", v.Payload + " ", v.Signature, false},
		{"digest without prefix", v.Payload, strings.TrimPrefix(v.Signature, "sha256="), false},
		{"truncated digest", v.Payload, v.Signature[:len(v.Signature)-2], false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
			r.Header.Set("X-Hub-Signature-256", c.signature)
			err := authGitHub(r, Settings{GitHubSecret: v.Secret}, []byte(c.payload), testNow)
			if (err == nil) != c.ok {
				t.Errorf("authGitHub = %v, want ok=%v", err, c.ok)
			}
		})
	}
}
