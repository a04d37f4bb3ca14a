package e2e

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWebhookDemo runs `make demo`'s command twice against the built
// exporter: each call is a new live publish (a Supabase trigger, then the
// workflow run it dispatched), answered accepted, and its run survives the
// exporter's pruning pass: it is dated now, not 2020.
func TestWebhookDemo(t *testing.T) {
	demo := demoBinary(t)
	cfg := writeConfig(t, demoConfig)
	data := filepath.Join(t.TempDir(), "data")
	// One run kept: the pruning pass deletes the first demo's run and must
	// keep the second's.
	args := []string{"--storage.max-records=1"}
	e := startExporter(t, cfg, data, args...)

	runDemo := func() string {
		t.Helper()
		out, err := exec.Command(demo, "--url="+e.url, "--secret="+githubSecret, "--supabase-secret=e2e-supabase-secret", "--site-address=").CombinedOutput()
		if err != nil {
			t.Fatalf("webhook-demo: %v\n%s", err, out)
		}
		if strings.Contains(string(out), `"ignored"`) || strings.Contains(string(out), `"duplicate"`) {
			t.Fatalf("a demo delivery was not accepted:\n%s", out)
		}
		return string(out)
	}
	var ids []int64
	for i := range 2 {
		out := runDemo()
		runs := e.allRuns("")
		if len(runs) != i+1 {
			t.Fatalf("after demo %d: %d runs, want %d\n%s", i+1, len(runs), i+1, out)
		}
		r := runs[0]
		if r.Status != "success" || r.Trigger.Source != "supabase" || stageNames(r) != "trigger:success,dispatch:success,linters:success" {
			t.Fatalf("after demo %d: run %+v, stages %s", i+1, r, stageNames(r))
		}
		if !strings.Contains(out, fmt.Sprintf("/runs/%d", r.ID)) {
			t.Errorf("demo %d does not point at its run's page:\n%s", i+1, out)
		}
		checkRunPageLinks(t, e, r.ID)
		ids = append(ids, r.ID)
	}
	if ids[0] == ids[1] {
		t.Fatalf("both demos made run %d", ids[0])
	}

	// A restart runs the pruning pass at once (else it comes within a
	// minute): it removes the first run and keeps the second.
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exporter exited %d", code)
	}
	e = startExporter(t, cfg, data, args...)
	deadline := time.Now().Add(90 * time.Second)
	for e.get(fmt.Sprintf("/api/pipeline-runs/%d", ids[0])).code != http.StatusNotFound {
		if time.Now().After(deadline) {
			t.Fatalf("run %d not pruned after 90s", ids[0])
		}
		time.Sleep(200 * time.Millisecond)
	}
	runs := e.allRuns("")
	if len(runs) != 1 || runs[0].ID != ids[1] || runs[0].Status != "success" {
		t.Fatalf("after the pruning pass: runs %+v, want run %d", runs, ids[1])
	}
	if e.run(ids[1]).Status != "success" {
		t.Fatalf("run %d changed after the pruning pass", ids[1])
	}
}

// demoConfig has the example config's shape: webhooks only, a Supabase
// trigger, and the pipeline webhook-demo's deliveries belong to.
const demoConfig = `
webhooks:
  github: { secret: ` + githubSecret + ` }
  supabase: { secret: e2e-supabase-secret }
pipelines:
  - name: site
    workflow: test.yml
    branches: [master]
    triggers:
      - { source: supabase, table: posts, events: [INSERT] }
`

// demoBinary builds cmd/webhook-demo for the test.
func demoBinary(t *testing.T) string {
	t.Helper()
	demo := filepath.Join(t.TempDir(), "webhook-demo")
	if out, err := exec.Command("go", "build", "-o", demo, "../cmd/webhook-demo").CombinedOutput(); err != nil {
		t.Fatalf("go build webhook-demo: %v\n%s", err, out)
	}
	return demo
}

var href = regexp.MustCompile(`href="([^"]*)"`)

// checkRunPageLinks follows every link of a run's page: the demo's run
// exists only in the exporter, so each must be a page of the exporter that
// answers 200, not GitHub's page of the example the demo was made from.
func checkRunPageLinks(t *testing.T, e *exporter, id int64) {
	t.Helper()
	page, err := url.Parse(fmt.Sprintf("%s/runs/%d", e.url, id))
	if err != nil {
		t.Fatal(err)
	}
	a := e.get(page.Path)
	if a.code != http.StatusOK {
		t.Fatalf("GET %s = %d", page.Path, a.code)
	}
	links := href.FindAllStringSubmatch(string(a.body), -1)
	if len(links) == 0 {
		t.Fatalf("run %d's page has no links", id)
	}
	for _, m := range links {
		u, err := page.Parse(html.UnescapeString(m[1]))
		if err != nil {
			t.Errorf("run %d's page links to %q: %v", id, m[1], err)
			continue
		}
		if u.Host != page.Host {
			t.Errorf("run %d's page links to %s, which is not the demo run's", id, u)
			continue
		}
		if got := e.get(u.RequestURI()); got.code != http.StatusOK {
			t.Errorf("run %d's page links to %s, which answers %d", id, u.RequestURI(), got.code)
		}
	}
}
