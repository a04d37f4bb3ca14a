package e2e

import (
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestPendingRunTimesOutAfterRestart: a trigger nobody dispatches ends
// timed_out at the dispatch stage, measured on the exporter's clock from
// when it saw the trigger, even when the exporter restarted in between.
func TestPendingRunTimesOutAfterRestart(t *testing.T) {
	cfg := writeConfig(t, `
webhooks:
  github: { secret: `+githubSecret+` }
  supabase: { secret: e2e-supabase-secret }
pipelines:
  - name: site
    workflow: test.yml
    triggers:
      - { source: supabase, table: posts }
    dispatch_timeout: 3s
`)
	data := filepath.Join(t.TempDir(), "data")
	e := startExporter(t, cfg, data)
	body := []byte(`{"type":"UPDATE","table":"posts","schema":"public","record":{"id":1,"title":"Hello again"},"old_record":{"id":1,"title":"Hello"}}`)
	burst := []string{"msg_1", "msg_2", "msg_3"}
	var runID int64
	for _, id := range burst {
		// Standard Webhooks ids dedup; three distinct changes coalesce into one pending run.
		a := e.mustPost(delivery{path: "/webhooks/supabase", body: body, headers: map[string]string{
			"Authorization": "Bearer e2e-supabase-secret", "webhook-id": id,
		}}, http.StatusAccepted)
		var ans struct {
			Data struct {
				RunIDs []int64 `json:"run_ids"`
			} `json:"data"`
		}
		a.decode(t, &ans)
		if len(ans.Data.RunIDs) != 1 || (runID != 0 && ans.Data.RunIDs[0] != runID) {
			t.Fatalf("trigger %s answered %s, want the one pending run", id, a.body)
		}
		runID = ans.Data.RunIDs[0]
	}
	if r := e.run(runID); r.Status != "pending" || len(r.Triggers) != 3 {
		t.Fatalf("after the burst run = %+v, want pending with 3 triggers", r)
	}
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	e = startExporter(t, cfg, data)
	deadline := time.Now().Add(10 * time.Second)
	var r runJSON
	for time.Now().Before(deadline) {
		if r = e.run(runID); r.Status == "timed_out" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.Status != "timed_out" || stageNames(r) != "trigger:success,dispatch:timed_out" {
		t.Fatalf("after the restart run = %+v (stages %s), want timed_out at dispatch", r, stageNames(r))
	}
	if got, _ := e.metric(`pipeline_runs_total{pipeline="site",status="timed_out",trigger="supabase"}`); got != "1" {
		t.Errorf(`pipeline_runs_total{status="timed_out",trigger="supabase"} = %q, want 1`, got)
	}
	if got, _ := e.metric(`pipeline_last_stage_status{pipeline="site",stage="dispatch",status="timed_out"}`); got != "1" {
		t.Errorf(`pipeline_last_stage_status{stage="dispatch",status="timed_out"} = %q, want 1`, got)
	}
}
