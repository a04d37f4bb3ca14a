package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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

	// A reload that raises max_pipelines makes room at once: the
	// repository turned away before gets its pipeline at its next run.
	raised, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raised = bytes.Replace(raised, []byte("max_pipelines: 2"), []byte("max_pipelines: 3"), 1)
	if err := os.WriteFile(cfg, raised, 0o600); err != nil {
		t.Fatal(err)
	}
	e.reload(http.StatusOK)
	e.mustPost(discoveredRun("octo-org/docs", 400), http.StatusAccepted).decode(t, &a)
	if a.Data.Outcome != "accepted" {
		t.Errorf("after max_pipelines was raised to 3, a run of octo-org/docs: %+v, want accepted", a.Data)
	}
	if got, _ := e.metric(`pipeline_runs_total{pipeline="docs",status="success",trigger="github"}`); got != "1" {
		t.Errorf("after max_pipelines was raised, a run of docs: pipeline_runs_total = %q, want 1", got)
	}
}

// TestDiscoveredNamedTrigger: a pattern's Supabase rule that names a
// pipeline opens a pending run in that discovered pipeline only, is ignored
// with the reason before it is discovered, and follows a reload; a rule
// without a name opens one in every pipeline of the pattern.
func TestDiscoveredNamedTrigger(t *testing.T) {
	config := func(named string) string {
		return `
webhooks:
  github: { secret: ` + githubSecret + ` }
  supabase: { secret: e2e-supabase-secret }
pipelines:
  - repository: "octo-org/*"
    workflow: test.yml
    triggers:
      - { source: supabase, table: posts, events: [INSERT], pipeline: ` + named + ` }
      - { source: supabase, table: comments }
`
	}
	cfg := writeConfig(t, config("site"))
	e := startExporter(t, cfg, filepath.Join(t.TempDir(), "data"))

	// Supabase publishes no example body, only the documented shape
	// {type, table, schema, record, old_record}; these are INSERTs of it.
	insert := func(table string, id int) delivery {
		return delivery{path: "/webhooks/supabase",
			body:    []byte(fmt.Sprintf(`{"type":"INSERT","table":%q,"schema":"public","record":{"id":%d,"title":"Hello"},"old_record":null}`, table, id)),
			headers: map[string]string{"Content-Type": "application/json", "Authorization": "Bearer e2e-supabase-secret"}}
	}
	type answerData struct {
		Data struct {
			Outcome string  `json:"outcome"`
			Reason  string  `json:"reason"`
			RunIDs  []int64 `json:"run_ids"`
		} `json:"data"`
	}
	post := func(d delivery) answerData {
		t.Helper()
		var a answerData
		e.mustPost(d, http.StatusAccepted).decode(t, &a)
		return a
	}
	// pending is the pending runs by pipeline, each a list of run ids.
	pending := func() map[string][]int64 {
		t.Helper()
		by := map[string][]int64{}
		for _, r := range e.allRuns("&status=pending") {
			by[r.Pipeline] = append(by[r.Pipeline], r.ID)
		}
		return by
	}

	a := post(insert("posts", 1))
	if want := "no pipeline for supabase trigger INSERT on table posts: pipeline site (octo-org/*) not discovered yet"; a.Data.Outcome != "ignored" || a.Data.Reason != want {
		t.Errorf("trigger before site is discovered: %+v, want ignored: %s", a.Data, want)
	}
	if got, _ := e.metric(`pipeline_exporter_webhook_requests_total{outcome="ignored",source="supabase"}`); got != "1" {
		t.Errorf("ignored supabase deliveries = %q, want 1", got)
	}

	for i, repo := range []string{"octo-org/octo-repo", "octo-org/site"} {
		if a := post(discoveredRun(repo, int64(500+i))); a.Data.Outcome != "accepted" {
			t.Fatalf("run of %s: %+v", repo, a.Data)
		}
	}
	a = post(insert("posts", 2))
	p := pending()
	if a.Data.Outcome != "accepted" || len(p) != 1 || len(p["site"]) != 1 || !slices.Equal(a.Data.RunIDs, p["site"]) {
		t.Fatalf("named trigger: answer %+v, pending runs %v; want one, of site", a.Data, p)
	}
	site := p["site"][0]

	// A reload names the other pipeline: the next insert opens its run.
	if err := os.WriteFile(cfg, []byte(config("octo-repo")), 0o600); err != nil {
		t.Fatal(err)
	}
	e.reload(http.StatusOK)
	a = post(insert("posts", 3))
	p = pending()
	if len(p["octo-repo"]) != 1 || !slices.Equal(p["site"], []int64{site}) || !slices.Equal(a.Data.RunIDs, p["octo-repo"]) {
		t.Fatalf("after the reload: answer %+v, pending runs %v; want a new one of octo-repo", a.Data, p)
	}

	// The rule without a name reaches both: it joins their pending runs.
	a = post(insert("comments", 4))
	ids := slices.Sorted(slices.Values(a.Data.RunIDs))
	if want := slices.Sorted(slices.Values([]int64{site, p["octo-repo"][0]})); !slices.Equal(ids, want) {
		t.Errorf("unnamed rule: answer %+v, want runs %v", a.Data, want)
	}
	for _, id := range ids {
		if r := e.run(id); len(r.Triggers) != 2 {
			t.Errorf("run %d of %s has %d triggers, want 2", id, r.Pipeline, len(r.Triggers))
		}
	}
}
