package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
)

// TestPostgresHostileInput sends signed GitHub webhooks whose strings hold
// \u0000 (valid JSON, which PostgreSQL's jsonb and text cannot hold) to an
// exporter on PostgreSQL: the run is applied and shown as on SQLite, an
// ignored delivery quoting one is answered, the leader never restores its
// state over it, and the next delivery is applied as usual. Then it reads
// the runs with filters a hostile client sends: a status given twice lists
// each run once in full pages, and a filter with a NUL, invalid UTF-8 or a
// bad escape is 400, never a database error.
func TestPostgresHostileInput(t *testing.T) {
	e := startReplica(t, writeConfig(t, coreConfig), pgtest.NewDatabase(t), freeAddr(t))
	waitOneLeader(t, 10*time.Second, e)

	const runID = 41_000_001
	const htmlURL = "https://github.com/octo-org/example-workflow/actions/runs/41000001\x00"
	// The run's link and its job's name hold a NUL in every delivery.
	edit := func(file string, set map[string]any) []byte {
		body := fixtures.MustEdit(fixtures.MustLoad(file), set)
		if !strings.Contains(string(body), `\u0000`) {
			t.Fatalf("the payload carries no \\u0000: %.200s", body)
		}
		return body
	}
	deliveries := []delivery{
		githubDelivery(githubSecret, "workflow_run", "nul-requested", edit("github/workflow_run/requested.json", map[string]any{
			"workflow_run.id": runID, "workflow_run.html_url": htmlURL,
		})),
		githubDelivery(githubSecret, "workflow_job", "nul-job", edit("github/workflow_job/completed.success.with-organization.json", map[string]any{
			"workflow_job.run_id": runID, "workflow_job.id": runID + 1, "workflow_job.name": "build\x00x",
		})),
		githubDelivery(githubSecret, "workflow_run", "nul-completed", edit("github/workflow_run/completed.json", map[string]any{
			"workflow_run.id": runID, "workflow_run.html_url": htmlURL,
		})),
	}
	for _, d := range deliveries {
		var a struct {
			Data struct {
				Outcome string `json:"outcome"`
			} `json:"data"`
		}
		e.mustPost(d, http.StatusAccepted).decode(t, &a)
		if a.Data.Outcome != "accepted" {
			t.Fatalf("outcome %q, want accepted", a.Data.Outcome)
		}
	}
	// A workflow no pipeline follows, named with a NUL: ignored, and the
	// reason that quotes the name is stored too.
	other := fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/requested.json"), map[string]any{
		"workflow_run.id": runID + 1, "workflow_run.path": ".github/workflows/other\x00.yml",
	})
	var ignored struct {
		Data struct {
			Outcome string `json:"outcome"`
			Reason  string `json:"reason"`
		} `json:"data"`
	}
	e.mustPost(githubDelivery(githubSecret, "workflow_run", "nul-other", other), http.StatusAccepted).decode(t, &ignored)
	if ignored.Data.Outcome != "ignored" || !strings.Contains(ignored.Data.Reason, "other") {
		t.Fatalf("other workflow: %+v, want ignored with its reason", ignored.Data)
	}

	runs := e.allRuns("")
	if len(runs) != 1 || runs[0].Status != "success" || runs[0].GitHub == nil || runs[0].GitHub.RunID != runID {
		t.Fatalf("runs = %+v, want run %d success", runs, runID)
	}
	if got := stageNames(runs[0]); !strings.Contains(got, "build\x00x") {
		t.Errorf("stages %q, want the job named with its NUL", got)
	}
	var one struct {
		Data struct {
			GitHub struct {
				HTMLURL string `json:"html_url"`
			} `json:"github"`
		} `json:"data"`
	}
	e.get(fmt.Sprintf("/api/pipeline-runs/%d", runs[0].ID)).decode(t, &one)
	if one.Data.GitHub.HTMLURL != htmlURL {
		t.Errorf("html_url %q, want %q with its NUL", one.Data.GitHub.HTMLURL, htmlURL)
	}

	// The next run is applied as usual, by the same leader.
	for _, d := range exampleRun(t, runID+2, "failure") {
		e.mustPost(d, http.StatusAccepted)
	}
	if runs := e.allRuns(""); len(runs) != 2 || runs[0].Status != "failed" {
		t.Fatalf("runs after the NUL payload = %+v", runs)
	}
	for _, q := range []string{"status=success,failed,success&limit=1", "status=failed&status=success,failed&limit=1"} {
		var pages [][]int64
		for cursor := ""; ; {
			var l listAnswer
			e.get("/api/pipeline-runs?"+q+cursor).decode(t, &l)
			var ids []int64
			for _, r := range l.Data.Runs {
				ids = append(ids, r.ID)
			}
			pages = append(pages, ids)
			if l.Data.NextCursor == "" {
				break
			}
			cursor = "&cursor=" + l.Data.NextCursor
		}
		if len(pages) != 2 || len(pages[0]) != 1 || len(pages[1]) != 1 || pages[0][0] <= pages[1][0] {
			t.Errorf("%s: pages %v, want the two runs one per page, newest first", q, pages)
		}
	}
	for q, want := range map[string]string{
		"pipeline=%00":       `invalid pipeline \"%00\": holds a NUL or invalid UTF-8`,
		"pipeline=site%FF":   `invalid pipeline \"site%FF\": holds a NUL or invalid UTF-8`,
		"pipeline=other%ZZ":  `invalid pipeline \"other%ZZ\": bad %-escape`,
		"trigger=github%00x": `invalid trigger \"github%00x\": holds a NUL or invalid UTF-8`,
	} {
		if a := e.get("/api/pipeline-runs?" + q); a.code != http.StatusBadRequest || !strings.Contains(string(a.body), want) {
			t.Errorf("GET /api/pipeline-runs?%s = %d %s, want 400 %s", q, a.code, a.body, want)
		}
	}
	if !leads(e) {
		t.Error("the replica no longer leads")
	}
	logs := e.logs.String()
	if strings.Contains(strings.ToLower(logs), "level=error") || strings.Count(logs, "Leading: this instance applies") != 1 {
		t.Errorf("errors, or not one leadership term, in the log:\n%s", logs)
	}
}
