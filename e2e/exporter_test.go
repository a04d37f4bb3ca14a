package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

const githubSecret = "e2e-github-secret"

// coreConfig tracks the published examples' workflow (.github/workflows/test.yml
// on master). max_body_bytes is small enough that a padded example is too large.
const coreConfig = `
webhooks:
  github: { secret: ` + githubSecret + ` }
  max_body_bytes: 65536
pipelines:
  - name: site
    workflow: test.yml
    branches: [master]
`

// The published run examples carry run id 289782451; the job examples
// belong to another run, so the tests give them this run's id.
const exampleRunID = 289782451

func exampleRun(t *testing.T, runID int64, conclusion string) []delivery {
	t.Helper()
	return exampleRunWith(t, runID, conclusion, nil)
}

// exampleRunWith is exampleRun with more values set in both workflow_run
// payloads (a head_sha, a head_commit.timestamp).
func exampleRunWith(t *testing.T, runID int64, conclusion string, set map[string]any) []delivery {
	t.Helper()
	edit := func(values map[string]any) map[string]any {
		for k, v := range set {
			values[k] = v
		}
		return values
	}
	requested := fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/requested.json"), edit(map[string]any{"workflow_run.id": runID}))
	jobFile := "github/workflow_job/completed.success.with-organization.json"
	if conclusion == "failure" {
		jobFile = "github/workflow_job/completed.failure.with-organization.json"
	}
	job := fixtures.MustEdit(fixtures.MustLoad(jobFile), map[string]any{"workflow_job.run_id": runID, "workflow_job.id": runID + 1})
	completed := fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/completed.json"), edit(map[string]any{
		"workflow_run.id": runID,
		// GitHub publishes no failed workflow_run example: only the conclusion changes.
		"workflow_run.conclusion": conclusion,
	}))
	id := func(step string) string { return fmt.Sprintf("e2e-%d-%s", runID, step) }
	return []delivery{
		githubDelivery(githubSecret, "workflow_run", id("requested"), requested),
		githubDelivery(githubSecret, "workflow_job", id("job"), job),
		githubDelivery(githubSecret, "workflow_run", id("completed"), completed),
	}
}

func TestWebhooksToHistoryAndMetricsSurviveRestart(t *testing.T) {
	cfg := writeConfig(t, coreConfig)
	data := filepath.Join(t.TempDir(), "data") // created by the exporter
	// Retention counts from when the exporter saw a run, so the published
	// examples' 2020 dates do not matter; retention off keeps the test
	// about restarts alone.
	e := startExporter(t, cfg, data, "--storage.retention=0")

	e.mustPost(githubDelivery(githubSecret, "ping", "e2e-ping", fixtures.MustLoad("github/ping/payload.json")), http.StatusAccepted)
	for _, d := range exampleRun(t, exampleRunID, "success") {
		e.mustPost(d, http.StatusAccepted)
	}

	runs := e.allRuns("")
	if len(runs) != 1 {
		t.Fatalf("runs = %+v, want one", runs)
	}
	r := runs[0]
	if r.Pipeline != "site" || r.Status != "success" || r.GitHub == nil || r.GitHub.RunID != exampleRunID || r.Trigger.Source != "github" {
		t.Fatalf("run = %+v", r)
	}
	if got := stageNames(r); got != "trigger:success,linters:success" {
		t.Fatalf("stages = %s", got)
	}
	wantMetrics := map[string]string{
		`pipeline_last_run_status{pipeline="site",status="success"}`:                   "1",
		`pipeline_last_run_status{pipeline="site",status="failed"}`:                    "", // sparse: absent
		`pipeline_runs_total{pipeline="site",status="failed",trigger="github"}`:        "", // no failure yet
		`pipeline_runs_total{pipeline="site",status="success",trigger="github"}`:       "1",
		`pipeline_last_stage_status{pipeline="site",stage="linters",status="success"}`: "1",
		`pipeline_exporter_webhook_requests_total{outcome="accepted",source="github"}`: "3",
		`pipeline_exporter_store_runs`:                                                 "1",
	}
	for series, want := range wantMetrics {
		if got, ok := e.metric(series); ok != (want != "") || got != want {
			t.Errorf("%s = %q (present %v), want %q", series, got, ok, want)
		}
	}
	lastRun, ok := e.metric(`pipeline_last_run_timestamp_seconds{pipeline="site"}`)
	if !ok {
		t.Fatal("pipeline_last_run_timestamp_seconds missing")
	}

	// Bad input: each gets its status, nothing is counted twice, no crash.
	body := fixtures.MustLoad("github/workflow_run/completed.json")
	wrongSig := githubDelivery("not-the-secret", "workflow_run", "e2e-bad-sig", body)
	sha1Only := githubDelivery(githubSecret, "workflow_run", "e2e-sha1", body)
	delete(sha1Only.headers, "X-Hub-Signature-256")
	sha1Only.headers["X-Hub-Signature"] = "sha1=0000000000000000000000000000000000000000"
	malformed := githubDelivery(githubSecret, "workflow_run", "e2e-malformed", []byte(`{"workflow_run": {"id": "x"`))
	tooLarge := githubDelivery(githubSecret, "workflow_run", "e2e-large", append(append([]byte{}, body...), []byte(strings.Repeat(" ", 70000))...))
	otherWorkflow := githubDelivery(githubSecret, "workflow_run", "e2e-other", fixtures.MustEdit(body, map[string]any{
		"workflow_run.id": 1, "workflow_run.path": ".github/workflows/other.yml", "workflow_run.workflow_id": 1,
	}))
	duplicate := exampleRun(t, exampleRunID, "success")[2]
	for _, tc := range []struct {
		name string
		d    delivery
		code int
	}{
		{"wrong signature", wrongSig, http.StatusUnauthorized},
		{"sha1 only", sha1Only, http.StatusUnauthorized},
		{"malformed json", malformed, http.StatusBadRequest},
		{"too large", tooLarge, http.StatusRequestEntityTooLarge},
		{"workflow no pipeline names", otherWorkflow, http.StatusAccepted},
		{"duplicate delivery", duplicate, http.StatusOK},
	} {
		a := e.mustPost(tc.d, tc.code)
		if tc.code >= 400 && !strings.Contains(string(a.body), `"status":"error"`) {
			t.Errorf("%s: answer %s is not a JSON error", tc.name, a.body)
		}
	}
	if got, _ := e.metric(`pipeline_runs_total{pipeline="site",status="success",trigger="github"}`); got != "1" {
		t.Errorf("after the duplicate, pipeline_runs_total = %s, want 1", got)
	}
	for series, want := range map[string]string{
		`pipeline_exporter_webhook_requests_total{outcome="unauthorized",source="github"}`: "2",
		`pipeline_exporter_webhook_requests_total{outcome="invalid",source="github"}`:      "1",
		`pipeline_exporter_webhook_requests_total{outcome="too_large",source="github"}`:    "1",
		`pipeline_exporter_webhook_requests_total{outcome="duplicate",source="github"}`:    "1",
		`pipeline_exporter_webhook_requests_total{outcome="ignored",source="github"}`:      "2", // ping and the other workflow
	} {
		if got, _ := e.metric(series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}
	for path, code := range map[string]int{
		"/api/pipeline-runs/999999":                http.StatusNotFound,
		"/api/pipeline-runs/x":                     http.StatusBadRequest,
		"/api/pipeline-runs?limit=0":               http.StatusBadRequest,
		"/api/pipeline-runs?status=broken":         http.StatusBadRequest,
		"/api/pipeline-runs?cursor=not-a-cursor!":  http.StatusBadRequest,
		fmt.Sprintf("/api/pipeline-runs/%d", r.ID): http.StatusOK,
		"/health":     http.StatusOK,
		"/api/status": http.StatusOK,
		"/":           http.StatusOK,
	} {
		if a := e.get(path); a.code != code {
			t.Errorf("GET %s = %d %s, want %d", path, a.code, a.body, code)
		}
	}

	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d", code)
	}
	e = startExporter(t, cfg, data, "--storage.retention=0")
	if runs := e.allRuns(""); len(runs) != 1 || runs[0].Status != "success" || runs[0].ID != r.ID {
		t.Fatalf("after restart runs = %+v", runs)
	}
	if got, _ := e.metric(`pipeline_last_run_status{pipeline="site",status="success"}`); got != "1" {
		t.Errorf("after restart pipeline_last_run_status = %q, want 1", got)
	}
	if got, _ := e.metric(`pipeline_last_run_timestamp_seconds{pipeline="site"}`); got != lastRun {
		t.Errorf("after restart pipeline_last_run_timestamp_seconds = %q, want %s", got, lastRun)
	}
	// A redelivery after the restart is still a duplicate: dedup is on disk.
	e.mustPost(duplicate, http.StatusOK)
}
