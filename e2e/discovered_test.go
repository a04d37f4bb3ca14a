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

// discoveredRun is the published completed run, of workflow test.yml, in
// repository repo with run id runID.
func discoveredRun(repo string, runID int64) delivery {
	body := fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/completed.json"), map[string]any{
		"workflow_run.id": runID, "repository.full_name": repo,
	})
	return githubDelivery(githubSecret, "workflow_run", fmt.Sprintf("e2e-discovered-%d", runID), body)
}

// TestDiscoveredPipelines follows one pipeline written as a repository
// pattern: the first run of each repository makes its pipeline, listed by
// /api/pipelines, /api/status and the metrics, kept across a restart; past
// max_pipelines runs of further repositories are ignored with a reason and
// counted.
func TestDiscoveredPipelines(t *testing.T) {
	cfg := writeConfig(t, `
webhooks:
  github: { secret: `+githubSecret+` }
max_pipelines: 2
pipelines:
  - repository: "Octo-Org/*"
    workflow: test.yml
`)
	data := filepath.Join(t.TempDir(), "data")
	e := startExporter(t, cfg, data, "--storage.retention=0")

	for i, repo := range []string{"octo-org/octo-repo", "octo-org/site", "octo-org/octo-repo"} {
		var a struct {
			Data struct {
				Outcome string `json:"outcome"`
			} `json:"data"`
		}
		e.mustPost(discoveredRun(repo, int64(100+i)), http.StatusAccepted).decode(t, &a)
		if a.Data.Outcome != "accepted" {
			t.Errorf("run %d of %s: outcome %q, want accepted", i, repo, a.Data.Outcome)
		}
	}
	check := func(when string) {
		t.Helper()
		byPipeline := map[string]int{}
		for _, r := range e.allRuns("") {
			byPipeline[r.Pipeline]++
		}
		if byPipeline["octo-repo"] != 2 || byPipeline["site"] != 1 || len(byPipeline) != 2 {
			t.Errorf("%s: runs by pipeline %v, want octo-repo 2, site 1", when, byPipeline)
		}
		var pl struct {
			Data struct {
				Pipelines []struct {
					Name       string `json:"name"`
					Repository string `json:"repository"`
				} `json:"pipelines"`
			} `json:"data"`
		}
		e.get("/api/pipelines").decode(t, &pl)
		var listed []string
		for _, p := range pl.Data.Pipelines {
			listed = append(listed, p.Name+" "+p.Repository)
		}
		if got := strings.Join(listed, ", "); got != "octo-repo octo-org/octo-repo, site octo-org/site" {
			t.Errorf("%s: /api/pipelines lists %s", when, got)
		}
		var st struct {
			Data struct {
				Pipelines []struct {
					Name       string `json:"name"`
					Repository string `json:"repository"`
				} `json:"pipelines"`
				Discovery struct {
					Discovered   int `json:"discovered"`
					MaxPipelines int `json:"max_pipelines"`
				} `json:"discovery"`
			} `json:"data"`
		}
		e.get("/api/status").decode(t, &st)
		if d := st.Data.Discovery; d.Discovered != 2 || d.MaxPipelines != 2 || len(st.Data.Pipelines) != 2 || st.Data.Pipelines[0].Repository == "" {
			t.Errorf("%s: /api/status %+v", when, st.Data)
		}
		for series, want := range map[string]string{
			`pipeline_last_run_status{pipeline="octo-repo",status="success"}`: "1",
			`pipeline_last_run_status{pipeline="site",status="success"}`:      "1",
			`pipeline_runs_in_progress{pipeline="site"}`:                      "0",
			`pipeline_runs_in_progress{pipeline="{{ .Repo }}"}`:               "",
		} {
			if got, ok := e.metric(series); ok != (want != "") || got != want {
				t.Errorf("%s: %s = %q (present %v), want %q", when, series, got, ok, want)
			}
		}
	}
	check("before the restart")

	// A third repository is one past max_pipelines: ignored, with the
	// reason, and counted.
	var a struct {
		Data struct {
			Outcome string `json:"outcome"`
			Reason  string `json:"reason"`
		} `json:"data"`
	}
	e.mustPost(discoveredRun("octo-org/docs", 200), http.StatusAccepted).decode(t, &a)
	if a.Data.Outcome != "ignored" || a.Data.Reason != "max_pipelines (2) reached: no pipeline made for repository octo-org/docs" {
		t.Errorf("run past max_pipelines: %+v", a.Data)
	}
	if got, _ := e.metric("pipeline_exporter_pipelines_limited_total"); got != "1" {
		t.Errorf("pipeline_exporter_pipelines_limited_total = %q, want 1", got)
	}

	// The discovered pipelines are committed state.
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d", code)
	}
	e = startExporter(t, cfg, data, "--storage.retention=0")
	check("after the restart")
	e.mustPost(discoveredRun("octo-org/site", 300), http.StatusAccepted)
	if got, _ := e.metric(`pipeline_runs_total{pipeline="site",status="success",trigger="github"}`); got != "1" {
		t.Errorf("after the restart, a run of site: pipeline_runs_total = %q, want 1", got)
	}
}
