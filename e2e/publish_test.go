package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

// TestSupabaseTriggerToLiveSite follows one publish across services: a
// Supabase database webhook opens a pending run, the next workflow run of
// the pipeline's workflow claims it, its job runs, and the verify stage
// checks a live site served by the test.
func TestSupabaseTriggerToLiveSite(t *testing.T) {
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "<h1>Hello from the published post</h1>")
	}))
	defer site.Close()
	cfg := writeConfig(t, `
webhooks:
  github: { secret: `+githubSecret+` }
  supabase: { secret: e2e-supabase-secret }
pipelines:
  - name: site
    workflow: test.yml
    branches: [master]
    triggers:
      - { source: supabase, table: posts, events: [INSERT, UPDATE] }
    verify: { url: `+site.URL+`/, expect_status: 200, timeout: 2s, body_contains: "published post" }
`)
	e := startExporter(t, cfg, filepath.Join(t.TempDir(), "data"))

	// Supabase publishes no example body, only the documented shape
	// {type, table, schema, record, old_record}; this is an INSERT of it.
	insert := delivery{path: "/webhooks/supabase", body: []byte(`{"type":"INSERT","table":"posts","schema":"public","record":{"id":1,"title":"Hello"},"old_record":null}`),
		headers: map[string]string{"Content-Type": "application/json", "Authorization": "Bearer e2e-supabase-secret"}}
	a := e.mustPost(insert, http.StatusAccepted)
	var accepted struct {
		Data struct {
			Outcome string  `json:"outcome"`
			RunIDs  []int64 `json:"run_ids"`
		} `json:"data"`
	}
	a.decode(t, &accepted)
	if accepted.Data.Outcome != "accepted" || len(accepted.Data.RunIDs) != 1 {
		t.Fatalf("supabase answer = %s", a.body)
	}
	runID := accepted.Data.RunIDs[0]
	if r := e.run(runID); r.Status != "pending" || r.Trigger.Source != "supabase" {
		t.Fatalf("after the trigger run = %+v", r)
	}

	// The workflow run GitHub creates after the trigger claims it. Its
	// timestamps are moved to now: the published example is from 2020.
	now := time.Now().UTC().Format(time.RFC3339)
	times := map[string]any{"workflow_run.created_at": now, "workflow_run.updated_at": now, "workflow_run.run_started_at": now}
	for _, d := range exampleRun(t, 4242, "success") {
		d.body = fixtures.MustEdit(d.body, onlyWorkflowRun(d, times))
		d.headers["X-Hub-Signature-256"] = fixtures.SignGitHub(githubSecret, d.body)
		e.mustPost(d, http.StatusAccepted)
	}

	deadline := time.Now().Add(15 * time.Second)
	var r runJSON
	for time.Now().Before(deadline) {
		if r = e.run(runID); r.Status != "running" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.Status != "success" {
		t.Fatalf("run = %+v (stages %s), want success", r, stageNames(r))
	}
	if got := stageNames(r); got != "trigger:success,dispatch:success,linters:success,verify:success" {
		t.Fatalf("stages = %s", got)
	}
	if r.Trigger.Source != "supabase" || r.GitHub == nil || r.GitHub.RunID != 4242 {
		t.Fatalf("run = %+v", r)
	}
	if got, _ := e.metric(`pipeline_runs_total{pipeline="site",status="success",trigger="supabase"}`); got != "1" {
		t.Errorf(`pipeline_runs_total{trigger="supabase",status="success"} = %q, want 1`, got)
	}
	if got, _ := e.metric(`pipeline_verify_response_seconds_count{pipeline="site"}`); got != "1" {
		t.Errorf("pipeline_verify_response_seconds_count = %q, want 1", got)
	}
}

// onlyWorkflowRun keeps the workflow_run edits for workflow_run deliveries.
func onlyWorkflowRun(d delivery, set map[string]any) map[string]any {
	if d.headers["X-GitHub-Event"] != "workflow_run" {
		return map[string]any{}
	}
	return set
}

func (e *exporter) run(id int64) runJSON {
	e.t.Helper()
	a := e.get(fmt.Sprintf("/api/pipeline-runs/%d", id))
	if a.code != http.StatusOK {
		e.t.Fatalf("GET run %d: %d %s", id, a.code, a.body)
	}
	var one struct {
		Data runJSON `json:"data"`
	}
	a.decode(e.t, &one)
	return one.Data
}
