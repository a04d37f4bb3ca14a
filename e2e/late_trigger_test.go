package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/internal/fakehooks"
)

// TestLateTrigger: the push that started a workflow run comes after the
// run's workflow_run deliveries, delivered late by GitHub or read back from
// GitHub's record of the hook's deliveries. It joins the run: one run,
// successful, with the push among its triggers, and no pending run that
// ends timed_out after dispatch_timeout.
func TestLateTrigger(t *testing.T) {
	const runID = 8100
	// The published push example, moved to the workflow run's repository
	// and commit.
	pushBody := fixtures.MustEdit(fixtures.MustLoad("github/push/with-new-branch.json"), map[string]any{
		"repository.full_name": hookRepo,
		"after":                "3484a3fb816e0859fd6e1cea078d76385ff50625", // head_sha of the workflow_run examples
	})
	config := func(gh *fakehooks.Server) string {
		github := ""
		if gh != nil {
			github = `
github:
  owner: octo-org
  repo: octo-repo
  token: e2e-token
  api_url: ` + gh.URL + `
  poll_interval: 0
  hooks:
    - { repository: ` + hookRepo + `, id: ` + fmt.Sprint(hookID) + ` }
  reconcile_interval: 1s`
		}
		return github + `
webhooks:
  github: { secret: ` + githubSecret + ` }
pipelines:
  - name: site
    workflow: test.yml
    branches: [master]
    triggers:
      - { source: github, events: [push] }
    dispatch_timeout: 2s
`
	}
	// The workflow run a push started: the examples with event push.
	workflowRun := exampleRunWith(t, runID, "success", map[string]any{"workflow_run.event": "push"})

	check := func(t *testing.T, e *exporter, pushID string, recovered bool) {
		t.Helper()
		// Past dispatch_timeout, and the second the timeouts are enforced within.
		time.Sleep(3500 * time.Millisecond)
		runs := e.allRuns("")
		if len(runs) != 1 {
			var got []string
			for _, r := range runs {
				got = append(got, fmt.Sprintf("run %d %s %q", r.ID, r.Status, r.Error))
			}
			t.Fatalf("%d runs, want one: %s", len(runs), strings.Join(got, "; "))
		}
		r := runs[0]
		if r.Status != "success" || r.GitHub == nil || r.GitHub.RunID != runID {
			t.Fatalf("run %+v, want the workflow run's, successful", r)
		}
		type trigger struct {
			Event      string `json:"event"`
			DeliveryID string `json:"delivery_id"`
			Ref        string `json:"ref"`
			SHA        string `json:"sha"`
			Recovered  bool   `json:"recovered"`
		}
		var pushes []trigger
		for _, raw := range r.Triggers {
			var tr trigger
			if err := json.Unmarshal(raw, &tr); err != nil {
				t.Fatal(err)
			}
			if tr.DeliveryID == pushID {
				pushes = append(pushes, tr)
			}
		}
		if len(pushes) != 1 || pushes[0].Event != "push" || pushes[0].Ref != "refs/heads/master" ||
			pushes[0].SHA != "3484a3fb816e0859fd6e1cea078d76385ff50625" || pushes[0].Recovered != recovered {
			t.Errorf("the push among the run's triggers: %+v (recovered %v wanted), triggers %s", pushes, recovered, r.Triggers)
		}
		if v, ok := e.metric(`pipeline_runs_total{pipeline="site",status="timed_out",trigger="github"}`); ok {
			t.Errorf(`pipeline_runs_total{status="timed_out"} = %s, want absent`, v)
		}
		if v, _ := e.metric(`pipeline_runs_total{pipeline="site",status="success",trigger="github"}`); v != "1" {
			t.Errorf(`pipeline_runs_total{status="success"} = %q, want 1`, v)
		}
	}

	t.Run("delivered after the workflow run", func(t *testing.T) {
		e := startExporter(t, writeConfig(t, config(nil)), filepath.Join(t.TempDir(), "data"))
		for _, d := range workflowRun {
			e.mustPost(d, http.StatusAccepted)
		}
		a := e.mustPost(githubDelivery(githubSecret, "push", "e2e-late-push", pushBody), http.StatusAccepted)
		var ans struct {
			Data struct {
				Outcome string  `json:"outcome"`
				RunIDs  []int64 `json:"run_ids"`
			} `json:"data"`
		}
		a.decode(t, &ans)
		if ans.Data.Outcome != "accepted" || len(ans.Data.RunIDs) != 1 || ans.Data.RunIDs[0] != 1 {
			t.Errorf("the late push answered %s, want accepted into run 1", a.body)
		}
		// The same delivery again is a duplicate.
		a = e.mustPost(githubDelivery(githubSecret, "push", "e2e-late-push", pushBody), http.StatusOK)
		a.decode(t, &ans)
		if ans.Data.Outcome != "duplicate" {
			t.Errorf("the push delivered again answered %s, want duplicate", a.body)
		}
		check(t, e, "e2e-late-push", false)
	})

	t.Run("read back after the workflow run", func(t *testing.T) {
		gh := fakehooks.New()
		defer gh.Close()
		e := startExporter(t, writeConfig(t, config(gh)), filepath.Join(t.TempDir(), "data"))
		for _, d := range workflowRun {
			e.mustPost(d, http.StatusAccepted)
		}
		// GitHub could not deliver the push (StatusCode 0) a minute ago.
		gh.Add(fakehooks.RepoHook(hookRepo, hookID), fakehooks.Delivery{
			ID: 2001, GUID: "e2e-lost-push", Event: "push", DeliveredAt: time.Now().Add(-time.Minute).Truncate(time.Second), Payload: pushBody,
		})
		deadline := time.Now().Add(15 * time.Second)
		for {
			if v, _ := e.metric(`pipeline_exporter_github_deliveries_recovered_total{hook="octo-org/octo-repo#109948940"}`); v == "1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the push was not read back within 15s; status %s", e.get("/api/status").body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		check(t, e, "e2e-lost-push", true)
	})
}
