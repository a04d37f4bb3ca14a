package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestWebhookDemoSite runs `make demo` as the example config expects it:
// the demo serves its own site, whose page names the commit built, and the
// run is verified live only once the exporter found that commit there.
func TestWebhookDemoSite(t *testing.T) {
	demo := demoBinary(t)
	siteAddr := freeAddr(t)
	cfg := writeConfig(t, demoConfig+`    verify:
      url: http://`+siteAddr+`/
      deadline: 1m
      build:
        body_contains: '<meta name="commit" content="{{ .Commit }}">'
`)
	e := startExporter(t, cfg, filepath.Join(t.TempDir(), "data"))
	out, err := exec.Command(demo, "--url="+e.url, "--secret="+githubSecret, "--supabase-secret=e2e-supabase-secret", "--site-address="+siteAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("webhook-demo: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`serves commit ([0-9a-f]{7})`).FindSubmatch(out)
	if m == nil || !strings.Contains(string(out), "success, the site serves its build "+string(m[1])) {
		t.Fatalf("the demo did not report its build live:\n%s", out)
	}
	runs := e.allRuns("")
	if len(runs) != 1 || runs[0].Status != "success" || stageNames(runs[0]) != "trigger:success,dispatch:success,linters:success,verify:success" {
		t.Fatalf("runs %+v", runs)
	}
	var l liveJSON
	e.get("/api/pipelines").decode(t, &l)
	if len(l.Data.Pipelines) != 1 || l.Data.Pipelines[0].Live == nil || !strings.HasPrefix(l.Data.Pipelines[0].Live.Commit, string(m[1])) {
		t.Fatalf("/api/pipelines %+v, want the demo's commit %s live", l.Data.Pipelines, m[1])
	}
	if v, _ := e.metric(`pipeline_lead_time_seconds_count{pipeline="site"}`); v != "1" {
		t.Errorf("pipeline_lead_time_seconds_count = %q, want the demo's run's lead time", v)
	}
}
