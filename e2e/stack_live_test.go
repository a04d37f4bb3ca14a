package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fixtureSHA is head_sha of the published workflow_run examples.
const fixtureSHA = "3484a3fb816e0859fd6e1cea078d76385ff50625"

// liveJSON is the part of GET /api/pipelines the tests look at.
type liveJSON struct {
	Data struct {
		Pipelines []struct {
			Name string `json:"name"`
			Live *struct {
				RunID       int64  `json:"run_id"`
				Commit      string `json:"commit"`
				Stale       bool   `json:"stale"`
				Served      string `json:"served"`
				ServedRunID int64  `json:"served_run_id"`
			} `json:"live"`
		} `json:"pipelines"`
	} `json:"data"`
}

// TestStackSiteStale follows a site through its builds with the real
// exporter, Prometheus and Alertmanager: run 1's build verified live, run
// 2's build verified live after a propagation delay, a rollback to run 1's
// build (stale after two rechecks, PipelineSiteStale fires, naming what is
// live), the build back (resolved), and a run whose build never reaches the
// site (verify fails naming the run whose build the site serves).
func TestStackSiteStale(t *testing.T) {
	receiver := newStackReceiver(t)
	mails := newStackSMTPSink(t)
	amURL := stackAlertmanager(t, receiver.srv.URL, mails.addr)

	// The site shows its build in a meta tag written at build time.
	var serving atomic.Value
	serving.Store(fixtureSHA)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<html><head><meta name="commit" content="%s"></head><body>live</body></html>`, serving.Load())
	}))
	t.Cleanup(site.Close)
	cfg := writeConfig(t, `
webhooks:
  github: { secret: `+githubSecret+` }
pipelines:
  - name: site
    workflow: test.yml
    branches: [master]
    verify:
      url: `+site.URL+`/
      timeout: 1s
      deadline: 5s
      recheck_interval: 1s
      build: { body_contains: '<meta name="commit" content="{{ .Commit }}">' }
`)
	e := startExporter(t, cfg, filepath.Join(t.TempDir(), "data"))
	stackPrometheus(t, strings.TrimPrefix(e.url, "http://"), amURL, false)

	pipelines := func() liveJSON {
		var l liveJSON
		e.get("/api/pipelines").decode(t, &l)
		return l
	}
	waitLive := func(what string, ok func(liveJSON) bool) liveJSON {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			l := pipelines()
			if len(l.Data.Pipelines) == 1 && l.Data.Pipelines[0].Live != nil && ok(l) {
				return l
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /api/pipelines is %+v", what, l.Data.Pipelines)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	commitAt := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)

	// 1. Run 1's build is what the site serves: verified live.
	for _, d := range exampleRunWith(t, exampleRunID, "success", map[string]any{"workflow_run.head_commit.timestamp": commitAt}) {
		e.mustPost(d, http.StatusAccepted)
	}
	waitLive("run 1 live", func(l liveJSON) bool { return l.Data.Pipelines[0].Live.RunID == 1 })

	// 2. Run 2 builds another commit; the site serves it two seconds
	// later (CDN propagation), within the deadline.
	newSHA := "5d6e7f8a9b0c1d2e3f405162738495a6b7c8d9e0"
	time.AfterFunc(2*time.Second, func() { serving.Store(newSHA) })
	for _, d := range exampleRunWith(t, exampleRunID+1, "success", map[string]any{"workflow_run.head_sha": newSHA, "workflow_run.head_commit.timestamp": commitAt}) {
		e.mustPost(d, http.StatusAccepted)
	}
	waitLive("run 2 live", func(l liveJSON) bool {
		p := l.Data.Pipelines[0].Live
		return p.RunID == 2 && p.Commit == newSHA && !p.Stale
	})
	if v, ok := e.metric(`pipeline_lead_time_seconds_count{pipeline="site"}`); !ok || v != "2" {
		t.Errorf("pipeline_lead_time_seconds_count = %q (present %v), want 2", v, ok)
	}

	// The landing page, open in a browser, follows what comes next.
	landing := startChromium(t).newTab()
	landing.open(e.url + "/")
	landing.waitJS(`document.querySelector("table[data-live=open]") !== null`, "the event stream opened")
	siteRow := `document.querySelector("#pipelines tr[data-pipeline=site]")`
	if got := landing.text(siteRow + `.innerText`); !strings.Contains(got, "5d6e7f8 (#2)") {
		t.Fatalf("Pipelines row = %q, want run 2's build live", got)
	}

	// 3. A rollback to run 1's build: stale after two rechecks, the alert
	// fires, and the live build says what is served instead.
	serving.Store(fixtureSHA)
	l := waitLive("stale after the rollback", func(l liveJSON) bool { return l.Data.Pipelines[0].Live.Stale })
	if p := l.Data.Pipelines[0].Live; p.RunID != 2 || p.Served != fixtureSHA || p.ServedRunID != 1 {
		t.Errorf("stale live build %+v, want run 2 with run 1's commit served", p)
	}
	if v, _ := e.metric(`pipeline_live_stale{pipeline="site"}`); v != "1" {
		t.Errorf("pipeline_live_stale = %q, want 1", v)
	}
	landing.waitJS(siteRow+`.className === "stale" && `+siteRow+`.innerText.includes("stale: site serves 3484a3f")`, "the Pipelines row to turn stale")
	t.Logf("landing page with a stale site: %s", landing.screenshot("stale"))
	stale := func(status string) func(stackNotification, stackAlert) bool {
		return func(n stackNotification, a stackAlert) bool {
			return n.Receiver == "webhook" && a.Labels["alertname"] == "PipelineSiteStale" && a.Labels["pipeline"] == "site" && a.Status == status
		}
	}
	firing, next := receiver.wait(t, 0, 30*time.Second, "PipelineSiteStale firing", stale("firing"))
	if firing.Labels["alert_type"] != "site_stale" || !strings.HasSuffix(firing.Annotations["link"], "/api/pipeline-runs?pipeline=site&status=success&limit=1") {
		t.Errorf("PipelineSiteStale labels %v annotations %v", firing.Labels, firing.Annotations)
	}

	// 4. The build is back: fresh again, the alert resolves.
	serving.Store(newSHA)
	waitLive("fresh again", func(l liveJSON) bool { return !l.Data.Pipelines[0].Live.Stale })
	landing.waitJS(siteRow+`.className === ""`, "the Pipelines row to be fresh again")
	receiver.wait(t, next, 30*time.Second, "PipelineSiteStale resolved", stale("resolved"))

	// 5. Run 3's build never reaches the site, which keeps serving run 2's:
	// its verify stage fails at the deadline naming run 2, and run 2 stays
	// the live build.
	lastSHA := "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
	for _, d := range exampleRunWith(t, exampleRunID+2, "success", map[string]any{"workflow_run.head_sha": lastSHA}) {
		e.mustPost(d, http.StatusAccepted)
	}
	deadline := time.Now().Add(40 * time.Second)
	for {
		runs := e.allRuns("&status=failed")
		if len(runs) == 1 {
			if want := "stage verify failed: site serves 5d6e7f8 (run 2), not 9f8e7d6"; runs[0].Error != want {
				t.Errorf("run 3 error %q, want %q", runs[0].Error, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run 3 did not fail its verify stage: %+v", e.allRuns(""))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if p := pipelines().Data.Pipelines[0].Live; p == nil || p.RunID != 2 || p.Stale {
		t.Errorf("live build after run 3 failed: %+v, want run 2, fresh", p)
	}
}
