package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"
	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
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
			HeadCommitAt: mustTime(t, "2020-10-05T16:32:07Z"),
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
			HeadCommitAt: mustTime(t, "2020-10-05T16:32:07Z"),
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
			body := fixtures.MustLoad(c.file)
			h := hdr("X-Hub-Signature-256", fixtures.SignGitHub(e.settings.GitHubSecret, body),
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
			call := e.ing.entries[0]
			if call.DeliveryID != "delivery-1" || call.Kind != c.event || call.Source != pipeline.SourceGitHub {
				t.Errorf("delivery id/event/source = %q/%q/%q", call.DeliveryID, call.Kind, call.Source)
			}
			if !reflect.DeepEqual(call.Events, c.want) {
				t.Errorf("events:\n got %+v\nwant %+v", call.Events, c.want)
			}
		})
	}
}

// TestGitHubJobOfRun checks that the job's run id survives the trip: the
// published job examples belong to no published run, so the run id is set
// in the decoded JSON, as the Tracker would see a job of run 289782451.
func TestGitHubJobOfRun(t *testing.T) {
	body := fixtures.MustEdit(fixtures.MustLoad("github/workflow_job/in_progress.json"), map[string]any{"workflow_job.run_id": 289782451})
	events, err := parseWorkflowJob(body, testNow)
	if err != nil {
		t.Fatal(err)
	}
	job := events[0].(pipeline.WorkflowJobEvent)
	if job.RunID != 289782451 || job.Status != "in_progress" || job.Conclusion != "" || !job.CompletedAt.IsZero() {
		t.Errorf("job = %+v, want run 289782451 in progress without conclusion or completion", job)
	}
}

// TestGitHubWithoutRunAttempt reads the older shapes GitHub Enterprise
// Server and earlier api.github.com versions publish, without run_attempt:
// their runs and jobs are attempt 1, not a second run numbered 0.
func TestGitHubWithoutRunAttempt(t *testing.T) {
	run, err := parseWorkflowRun(fixtures.MustWithout(fixtures.MustLoad("github/workflow_run/completed.json"), "workflow_run.run_attempt"), "d", testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := run[0].(pipeline.WorkflowRunEvent).RunAttempt; got != 1 {
		t.Errorf("workflow_run without run_attempt: attempt %d, want 1", got)
	}
	job, err := parseWorkflowJob(fixtures.MustWithout(fixtures.MustLoad("github/workflow_job/queued.json"), "workflow_job.run_attempt"), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := job[0].(pipeline.WorkflowJobEvent).RunAttempt; got != 1 {
		t.Errorf("workflow_job without run_attempt: attempt %d, want 1", got)
	}
	// A published later attempt keeps its number.
	run, err = parseWorkflowRun(fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/completed.json"), map[string]any{"workflow_run.run_attempt": 3}), "d", testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := run[0].(pipeline.WorkflowRunEvent).RunAttempt; got != 3 {
		t.Errorf("workflow_run attempt 3: attempt %d", got)
	}
}

// TestTimeRange checks the edges of the accepted payload times: from
// 2000-01-01 to a year past the handler's clock, both included; an absent
// (null) time is not checked.
func TestTimeRange(t *testing.T) {
	job := fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	cases := []struct {
		name string
		at   any
		ok   bool
	}{
		{"first accepted instant", "2000-01-01T00:00:00Z", true},
		{"a second before", "1999-12-31T23:59:59Z", false},
		{"a year ahead", testNow.Add(365 * 24 * time.Hour).Format(time.RFC3339), true},
		{"a year and a second ahead", testNow.Add(365*24*time.Hour + time.Second).Format(time.RFC3339), false},
		{"the zero time", "0001-01-01T00:00:00Z", false},
		{"null", nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseWorkflowJob(fixtures.MustEdit(job, map[string]any{"workflow_job.started_at": c.at}), testNow)
			if c.ok && err != nil || !c.ok && (err == nil || !strings.Contains(err.Error(), "field workflow_job.started_at: ")) {
				t.Errorf("started_at %v: err = %v, want ok=%v", c.at, err, c.ok)
			}
		})
	}
}

// TestDecodeMatchesGoGitHub decodes every published GitHub payload in the
// fixtures with the handler's parser and with go-github's event types, and
// compares the fields the exporter uses. go-github v60 has no
// workflow_run.path; it comes from a generic decode of the same body.
func TestDecodeMatchesGoGitHub(t *testing.T) {
	names, err := fixtures.Glob("github/*/*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no GitHub payloads: %v", err)
	}
	attempt := func(n int64) int {
		if n < 1 {
			return 1
		}
		return int(n)
	}
	ts := func(t *github.Timestamp) time.Time {
		if t == nil {
			return time.Time{}
		}
		return t.Time
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			event := path.Base(path.Dir(name))
			body := fixtures.MustLoad(name)
			r := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
			r.Header.Set("X-GitHub-Event", event)
			r.Header.Set("X-GitHub-Delivery", "d")
			got, err := parseGitHub(r, body, testNow)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := github.ParseWebHook(event, body)
			if err != nil {
				t.Fatal(err)
			}
			var want []pipeline.Event
			switch ev := ref.(type) {
			case *github.WorkflowRunEvent:
				var raw struct {
					WorkflowRun struct{ Path string } `json:"workflow_run"`
				}
				if err := json.Unmarshal(body, &raw); err != nil {
					t.Fatal(err)
				}
				run := ev.GetWorkflowRun()
				want = []pipeline.Event{pipeline.WorkflowRunEvent{
					Repository:   ev.GetRepo().GetFullName(),
					RunID:        run.GetID(),
					RunAttempt:   attempt(int64(run.GetRunAttempt())),
					WorkflowID:   run.GetWorkflowID(),
					WorkflowPath: raw.WorkflowRun.Path,
					Name:         run.GetName(),
					HeadBranch:   run.GetHeadBranch(),
					HeadSHA:      run.GetHeadSHA(),
					Event:        run.GetEvent(),
					Status:       run.GetStatus(),
					Conclusion:   run.GetConclusion(),
					HTMLURL:      run.GetHTMLURL(),
					CreatedAt:    ts(run.CreatedAt),
					UpdatedAt:    ts(run.UpdatedAt),
					RunStartedAt: ts(run.RunStartedAt),
					HeadCommitAt: ts(run.GetHeadCommit().Timestamp),
					DeliveryID:   "d",
				}}
			case *github.WorkflowJobEvent:
				job := ev.GetWorkflowJob()
				want = []pipeline.Event{pipeline.WorkflowJobEvent{
					Repository:   ev.GetRepo().GetFullName(),
					RunID:        job.GetRunID(),
					RunAttempt:   attempt(job.GetRunAttempt()),
					JobID:        job.GetID(),
					Name:         job.GetName(),
					WorkflowName: job.GetWorkflowName(),
					HeadBranch:   job.GetHeadBranch(),
					HeadSHA:      job.GetHeadSHA(),
					Status:       job.GetStatus(),
					Conclusion:   job.GetConclusion(),
					HTMLURL:      job.GetHTMLURL(),
					CreatedAt:    ts(job.CreatedAt),
					StartedAt:    ts(job.StartedAt),
					CompletedAt:  ts(job.CompletedAt),
				}}
			case *github.PushEvent:
				if branch, ok := strings.CutPrefix(ev.GetRef(), "refs/heads/"); ok && !ev.GetDeleted() {
					want = []pipeline.Event{pipeline.TriggerEvent{
						Trigger:    pipeline.Trigger{Source: pipeline.SourceGitHub, Event: "push", DeliveryID: "d", ReceivedAt: testNow, Ref: ev.GetRef(), SHA: ev.GetAfter()},
						Type:       "push",
						Repository: ev.GetRepo().GetFullName(),
						Branch:     branch,
					}}
				}
			case *github.RepositoryDispatchEvent:
				want = []pipeline.Event{pipeline.TriggerEvent{
					Trigger:    pipeline.Trigger{Source: pipeline.SourceGitHub, Event: ev.GetAction(), DeliveryID: "d", ReceivedAt: testNow},
					Type:       "repository_dispatch",
					Repository: ev.GetRepo().GetFullName(),
					Branch:     ev.GetBranch(),
				}}
			}
			if !reflect.DeepEqual(got.events, want) {
				t.Errorf("events:\n ours      %+v\n go-github %+v", got.events, want)
			}
			if got.id != "d" || got.event != event {
				t.Errorf("id/event = %q/%q", got.id, got.event)
			}
		})
	}
}

// TestDuplicateNamesAsEncodingJSON: a member named twice decodes as
// encoding/json (and so go-github) decodes it, the last one counting; the
// decoder does not keep every object's names to refuse repeats.
func TestDuplicateNamesAsEncodingJSON(t *testing.T) {
	body := fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	body = bytes.Replace(body, []byte(`"workflow_job": {`), []byte(`"workflow_job": {"conclusion": "failure", "name": "first",`), 1)
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
	r.Header.Set("X-GitHub-Event", "workflow_job")
	r.Header.Set("X-GitHub-Delivery", "d")
	got, err := parseGitHub(r, body, testNow)
	if err != nil {
		t.Fatal(err)
	}
	var ref github.WorkflowJobEvent
	if err := json.Unmarshal(body, &ref); err != nil {
		t.Fatal(err)
	}
	job := got.events[0].(pipeline.WorkflowJobEvent)
	if job.Conclusion != ref.GetWorkflowJob().GetConclusion() || job.Name != ref.GetWorkflowJob().GetName() || job.Conclusion != "success" {
		t.Errorf("conclusion/name = %q/%q, encoding/json reads %q/%q", job.Conclusion, job.Name,
			ref.GetWorkflowJob().GetConclusion(), ref.GetWorkflowJob().GetName())
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
	if err := json.Unmarshal(fixtures.MustLoad("github/signature-test-vector.json"), &v); err != nil {
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

// TestCommitTimeOutOfRange: a head commit dated before 2000 or more than a
// year ahead (an author's clock) leaves the run without a commit time, so
// no lead time, rather than refusing the delivery.
func TestCommitTimeOutOfRange(t *testing.T) {
	for _, ts := range []string{"1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z"} {
		e := newEnv(t)
		body := fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/completed.json"), map[string]any{"workflow_run.head_commit.timestamp": ts})
		h := hdr("X-Hub-Signature-256", fixtures.SignGitHub(e.settings.GitHubSecret, body),
			"X-GitHub-Event", "workflow_run", "X-GitHub-Delivery", "delivery-1", "Content-Type", "application/json")
		if rec := e.post(pipeline.SourceGitHub, h, body); rec.Code != http.StatusAccepted {
			t.Fatalf("head commit at %s: status %d, want 202; body %s", ts, rec.Code, rec.Body)
		}
		if ev := e.ing.entries[0].Events[0].(pipeline.WorkflowRunEvent); !ev.HeadCommitAt.IsZero() || ev.HeadSHA == "" {
			t.Errorf("head commit at %s: event %+v, want no commit time", ts, ev)
		}
	}
}
