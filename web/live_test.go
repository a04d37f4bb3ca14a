package web

import (
	"net/http"
	"strings"
	"testing"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// TestLandingPipelines: the Pipelines table lists the configured pipelines
// then those only the history knows, with the last run and the live
// build; a stale one is marked, without JavaScript.
func TestLandingPipelines(t *testing.T) {
	h := newMemHistory()
	live := testRun(41, pipeline.StatusSuccess)
	live.GitHub.HeadSHA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
	live.Verify = &pipeline.VerifyCheck{URL: "https://example.com/", StatusCode: 200, Build: live.GitHub.HeadSHA,
		VerifiedAt: at(100), CheckedAt: *at(400), Served: "0f0f0f0", ServedRunID: 40, Stale: true, FailedRechecks: 2,
		Error: "site serves 0f0f0f0 (run 40), not 1a2b3c4"}
	h.commit(live)
	h.commit(testRun(42, pipeline.StatusFailed))
	other := testRun(5, pipeline.StatusCancelled)
	other.Pipeline = "old"
	h.commit(other)
	_, srv := newTestWeb(t, h, Options{Name: "Pipeline Exporter", Specs: func() []pipeline.Spec {
		return []pipeline.Spec{{Name: "site", Repository: "acme/site"}, {Name: "shop"}}
	}})

	code, body := get(t, srv.URL+"/")
	if code != http.StatusOK {
		t.Fatalf("GET / = %d", code)
	}
	pipes, runs := strings.Index(body, "<h2>Pipelines</h2>"), strings.Index(body, "<h2>Recent runs</h2>")
	if pipes < 0 || runs < pipes {
		t.Fatalf("the Pipelines table is not above the recent runs (%d, %d)", pipes, runs)
	}
	table := body[pipes:runs]
	for _, s := range []string{
		`<table id="pipelines" data-source="api/pipelines">`,
		`<tr data-pipeline="site" class="stale">`,
		`<td>acme/site</td>`,
		`<a href="runs/42">#42</a> <span class="status st-failed">failed</span>`,
		`<code>1a2b3c4</code> (<a href="runs/41">#41</a>) <span class="status st-failed">stale</span>: site serves <code>0f0f0f0</code>`,
		`<tr data-pipeline="shop">`,
		`<tr data-pipeline="old">`,
	} {
		if !strings.Contains(table, s) {
			t.Errorf("Pipelines table lacks %s\n%s", s, table)
		}
	}
	if strings.Index(table, `data-pipeline="shop"`) > strings.Index(table, `data-pipeline="old"`) {
		t.Error("a pipeline only the history knows is listed before a configured one")
	}

	code, body = get(t, srv.URL+"/runs/41")
	for _, s := range []string{
		`<dt>Live site</dt><dd><a href="https://example.com/">https://example.com/</a> answered 200, looking for <code>1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d</code>; it showed <code>0f0f0f0</code> (<a href="../runs/40">run 40</a>)`,
		`<span class="status st-failed">stale</span>: the site no longer serves this build (site serves 0f0f0f0 (run 40), not 1a2b3c4)`,
	} {
		if code != http.StatusOK || !strings.Contains(body, s) {
			t.Errorf("run page (%d) lacks %s", code, s)
		}
	}
}
