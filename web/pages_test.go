package web

import (
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	return resp.StatusCode, string(b)
}

var rowRE = regexp.MustCompile(`<tr id="run-(\d+)"`)

// TestLandingRecentRuns checks the table: the 20 newest runs and, below
// them, the 10 newest failed or timed-out ones, newest first, with the
// sequence the live events resume from.
func TestLandingRecentRuns(t *testing.T) {
	h := newMemHistory()
	// Runs 1-12 failed or timed out, 13-40 succeeded; run 35 failed.
	for id := int64(1); id <= 40; id++ {
		st := pipeline.StatusSuccess
		switch {
		case id <= 6 || id == 35:
			st = pipeline.StatusFailed
		case id <= 12:
			st = pipeline.StatusTimedOut
		}
		h.commit(testRun(id, st))
	}
	h.commit(testRun(3, pipeline.StatusFailed)) // change 41: an old run changes last
	_, srv := newTestWeb(t, h, Options{
		Name: "Pipeline Exporter", Description: "Follows a publish", Version: "(version=1.2.3)",
		Links: []Link{{Address: "metrics", Text: "Metrics"}, {Address: "api/status", Text: "Status", Description: "Pipelines and sources"}},
	})
	code, body := get(t, srv.URL+"/")
	if code != http.StatusOK {
		t.Fatalf("GET / = %d", code)
	}
	var ids []string
	for _, m := range rowRE.FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	// 40..21 are the newest; 35 is among them, so the failures add 12..4.
	want := "40 39 38 37 36 35 34 33 32 31 30 29 28 27 26 25 24 23 22 21 12 11 10 9 8 7 6 5 4"
	if got := strings.Join(ids, " "); got != want {
		t.Fatalf("rows = %s\nwant   %s", got, want)
	}
	for _, s := range []string{
		`<a href="metrics">Metrics</a>`,
		`<a href="api/status">Status</a>: Pipelines and sources`,
		`Version: (version=1.2.3)`,
		// The newest 20 saw changes up to 40.
		`data-events="api/events?last_event_id=40"`,
		`<td class="status st-failed">failed</td>`,
		`<span class="seg st-failed" title="verify: failed"`,
		`<a href="runs/35">#35</a>`,
		`<td class="num">2m 41s</td>`,
		`new EventSource(`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("landing page lacks %s", s)
		}
	}
	if strings.Contains(body, "pprof") {
		t.Error("landing page links to pprof, which the exporter does not serve")
	}
}

func TestLandingEmptyAndUnavailable(t *testing.T) {
	h := newMemHistory()
	_, srv := newTestWeb(t, h, Options{Name: "Pipeline Exporter"})
	code, body := get(t, srv.URL+"/")
	if code != http.StatusOK || !strings.Contains(body, "No runs yet.") || !strings.Contains(body, "last_event_id=0") {
		t.Fatalf("empty landing page = %d\n%s", code, body)
	}
	h.err = errors.New("disk I/O error")
	code, body = get(t, srv.URL+"/")
	if code != http.StatusOK || !strings.Contains(body, "The run history cannot be read right now.") {
		t.Fatalf("landing page with a failing store = %d\n%s", code, body)
	}
	if strings.Contains(body, "disk I/O") {
		t.Fatal("landing page shows the store's error")
	}
}

func TestRunPage(t *testing.T) {
	h := newMemHistory()
	h.commit(testRun(7, pipeline.StatusFailed))
	_, srv := newTestWeb(t, h, Options{Name: "Pipeline Exporter"})
	code, body := get(t, srv.URL+"/runs/7")
	if code != http.StatusOK {
		t.Fatalf("GET /runs/7 = %d", code)
	}
	for _, s := range []string{
		`<title>Run 7 of site: failed</title>`,
		`<a href="../">Pipeline Exporter</a>`,
		`<a href="https://github.com/acme/site/actions/runs/30433642">acme/site deploy.yml #30433642</a>`,
		`<a href="https://f64788e9.site.pages.dev">f64788e9</a>`,
		`<a href="../api/pipeline-runs/7">`,
		`Drawn to scale over 2m 41s, from the first trigger.`,
		// Stages on the 161 s scale: build from 25 s for 70 s.
		`<tr class="stage" data-stage="build">`,
		`style="left: 15.53%; width: 43.48%"`,
		`<a href="https://github.com/acme/site/actions/runs/30433642/job/1">GitHub job</a>`,
		// The Pages deployment's own stages under it, and its link.
		`<a href="https://f64788e9.site.pages.dev">Pages deployment</a>`,
		`<tr class="sub" data-stage="build">`,
		`style="left: 63.35%; width: 29.81%"`,
		`<td class="error">GET https://example.com/: status 503, want 200</td>`,
		`<a href="https://example.com/">live site</a>`,
		// Both coalesced triggers.
		`<td>supabase</td><td>INSERT</td><td><code>msg_1</code></td><td>2026-03-02 10:00:00Z</td>`,
		`<td>mailerlite</td><td>campaign.sent</td><td><code>ml-2</code></td><td>2026-03-02 10:00:05Z</td>`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("run page lacks %s", s)
		}
	}
	order := regexp.MustCompile(`data-stage="([^"]+)"`).FindAllStringSubmatch(body, -1)
	var names []string
	for _, m := range order {
		names = append(names, m[1])
	}
	if got := strings.Join(names, ","); got != "trigger,dispatch,build,pages,queued,build,deploy,verify" {
		t.Errorf("timeline rows = %s", got)
	}
}

// TestRunPageRecovered: what was read back from GitHub's record of a
// hook's deliveries says so, on the trigger and on the GitHub run.
func TestRunPageRecovered(t *testing.T) {
	h := newMemHistory()
	r := testRun(7, pipeline.StatusFailed)
	r.Triggers[1].Recovered = true
	r.GitHub.Recovered = true
	h.commit(r)
	h.commit(testRun(8, pipeline.StatusFailed))
	_, srv := newTestWeb(t, h, Options{Name: "Pipeline Exporter"})
	_, body := get(t, srv.URL+"/runs/7")
	for _, s := range []string{
		`<td>mailerlite</td><td>campaign.sent</td><td><code>ml-2</code></td><td>2026-03-02 10:00:05Z <span class="recovered"`,
		`<td>supabase</td><td>INSERT</td><td><code>msg_1</code></td><td>2026-03-02 10:00:00Z</td>`,
		`<code>acb5820ced9479c074f688cc328bf03f341a511d</code> <span class="recovered" title="GitHub did not deliver some of its events; read back from the hook's record of its deliveries">recovered</span></dd>`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("run page lacks %s", s)
		}
	}
	if n := strings.Count(body, `class="recovered"`); n != 2 {
		t.Errorf("%d recovered marks, want 2 (the first trigger was received)", n)
	}
	if _, body := get(t, srv.URL+"/runs/8"); strings.Contains(body, `class="recovered"`) {
		t.Error("a run received whole is marked recovered")
	}
}

// TestRunPageRunning checks a run in progress: the scale ends now and the
// running stage reaches it.
func TestRunPageRunning(t *testing.T) {
	r := testRun(9, pipeline.StatusRunning)
	r.CreatedAt = time.Now().Add(-100 * time.Second)
	started := r.CreatedAt.Add(50 * time.Second)
	r.Stages = []pipeline.Stage{{Name: "build", Status: pipeline.StatusRunning, StartedAt: &started}}
	r.Pages = nil
	w := New(Options{History: newMemHistory()})
	defer w.Close()
	p := w.runPage(r, r.CreatedAt.Add(100*time.Second))
	if !p.Live || p.Span != "1m 40s" || len(p.Stages) != 1 {
		t.Fatalf("page = %+v", p)
	}
	if s := p.Stages[0]; s.Left != "50.00" || s.Width != "50.00" || s.Duration != "50s so far" {
		t.Fatalf("running stage = %+v", s)
	}
}

func TestNotFoundPages(t *testing.T) {
	h := newMemHistory()
	h.commit(testRun(1, pipeline.StatusSuccess))
	_, srv := newTestWeb(t, h, Options{Name: "Pipeline Exporter"})
	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"/runs/2", "There is no run 2: it was never recorded, or it was pruned from the history.", http.StatusNotFound},
		{"/runs/abc", "&#34;abc&#34; is not a run id", http.StatusNotFound},
		{"/runs/0", "&#34;0&#34; is not a run id", http.StatusNotFound},
		{"/runs/-1", "&#34;-1&#34; is not a run id", http.StatusNotFound},
		{"/runs/99999999999999999999", "is not a run id", http.StatusNotFound},
		{"/runs/%3Cscript%3E", "&#34;&lt;script&gt;&#34; is not a run id", http.StatusNotFound},
		{"/nowhere", "There is no page at this address.", http.StatusNotFound},
	} {
		code, body := get(t, srv.URL+tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) || !strings.Contains(body, `<a href="/">Recent runs</a>`) {
			t.Errorf("GET %s = %d, want %d with %q:\n%s", tc.path, code, tc.code, tc.want, body)
		}
	}
	h.err = errors.New("database is locked")
	if code, body := get(t, srv.URL+"/runs/1"); code != http.StatusServiceUnavailable || strings.Contains(body, "locked") {
		t.Errorf("GET /runs/1 with a failing store = %d\n%s", code, body)
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		s    float64
		want string
	}{
		{0.0424, "42ms"}, {1, "1s"}, {59.4, "59s"}, {161, "2m 41s"}, {3600, "1h 0m"}, {7322, "2h 2m"}, {90000, "1d 1h"},
	} {
		if got := duration(tc.s); got != tc.want {
			t.Errorf("duration(%v) = %q, want %q", tc.s, got, tc.want)
		}
	}
	if got := age(150 * time.Second); got != "2m ago" {
		t.Errorf("age = %q", got)
	}
}
