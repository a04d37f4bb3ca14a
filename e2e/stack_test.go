package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"go.yaml.in/yaml/v3"
)

// The real-stack test: the exporter, Prometheus and Alertmanager as
// processes on loopback ports, with the project's rules, Alertmanager
// config and dashboards. Prometheus scrapes and evaluates every second;
// Alertmanager groups and notifies within a second, to a webhook receiver
// and an SMTP server served by the test.

// stackTool finds a command-line tool. CI installs Prometheus and
// Alertmanager, so there a missing one fails the test; elsewhere it skips.
func stackTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found in PATH: %v", name, err)
		}
		t.Skipf("%s not found in PATH: %v", name, err)
	}
	return path
}

// stackStart starts a long-running tool, kills it at the end of the test
// (printing its logs if the test failed) and waits until GET readyURL
// answers 200.
func stackStart(t *testing.T, readyURL, name string, args ...string) {
	t.Helper()
	logs := &syncBuffer{}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s logs:\n%s", filepath.Base(name), logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("%s exited at start: %v\n%s", filepath.Base(name), cmd.ProcessState, logs.String())
		default:
		}
		if resp, err := http.Get(readyURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready after 20s:\n%s", filepath.Base(name), logs.String())
}

// stackAlert is one alert of an Alertmanager webhook notification.
type stackAlert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
}

// stackNotification is the body Alertmanager's webhook receiver posts.
type stackNotification struct {
	Receiver    string            `json:"receiver"`
	Status      string            `json:"status"`
	GroupLabels map[string]string `json:"groupLabels"`
	Alerts      []stackAlert      `json:"alerts"`
}

// stackReceiver collects Alertmanager's webhook notifications.
type stackReceiver struct {
	mu   sync.Mutex
	got  []stackNotification
	srv  *httptest.Server
	errs []error
}

func newStackReceiver(t *testing.T) *stackReceiver {
	r := &stackReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var n stackNotification
		err := json.NewDecoder(req.Body).Decode(&n)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			r.errs = append(r.errs, err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.got = append(r.got, n)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// wait returns the first alert of a notification that match accepts,
// looking at notifications from the from-th on, and the index after it.
func (r *stackReceiver) wait(t *testing.T, from int, timeout time.Duration, what string, match func(stackNotification, stackAlert) bool) (stackAlert, int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		if len(r.errs) > 0 {
			r.mu.Unlock()
			t.Fatalf("undecodable notification: %v", r.errs)
		}
		for i := from; i < len(r.got); i++ {
			for _, a := range r.got[i].Alerts {
				if match(r.got[i], a) {
					r.mu.Unlock()
					return a, i + 1
				}
			}
		}
		r.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Fatalf("no notification with %s within %v; got %+v", what, timeout, r.got)
	return stackAlert{}, 0
}

// stackAlertmanagerConfig is deploy/alertmanager/alertmanager.yml with its
// webhook pointed at webhookURL, its mail relay at the SMTP sink smtpAddr
// (plain SMTP without authentication, as the sink speaks it), its templates
// read from this checkout and its timers cut to a second. Routing, grouping,
// inhibition and the email receivers stay the project's.
func stackAlertmanagerConfig(t *testing.T, webhookURL, smtpAddr string) string {
	t.Helper()
	var cfg map[string]any
	stackDecodeYAML(t, "../deploy/alertmanager/alertmanager.yml", &cfg)
	global := cfg["global"].(map[string]any)
	global["smtp_smarthost"], global["smtp_require_tls"] = smtpAddr, false
	delete(global, "smtp_auth_username")
	delete(global, "smtp_auth_password_file")
	route := cfg["route"].(map[string]any)
	route["group_wait"], route["group_interval"], route["repeat_interval"] = "1s", "1s", "1h"
	webhooks, emails := 0, 0
	for _, r := range cfg["receivers"].([]any) {
		rcv := r.(map[string]any)
		emails += len(asSlice(rcv["email_configs"]))
		for _, w := range asSlice(rcv["webhook_configs"]) {
			w.(map[string]any)["url"] = webhookURL
			webhooks++
		}
	}
	if webhooks == 0 || emails == 0 {
		t.Fatalf("alertmanager.yml has %d webhook and %d email receivers, want both", webhooks, emails)
	}
	templates, err := filepath.Abs("../deploy/alertmanager/templates")
	if err != nil {
		t.Fatal(err)
	}
	cfg["templates"] = []string{filepath.Join(templates, "*.tmpl")}
	return stackWriteYAML(t, "alertmanager.yml", cfg)
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func stackDecodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func stackWriteYAML(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// stackAlertmanager starts Alertmanager on a free port, notifying the
// webhook receiver at webhookURL and mailing through the SMTP sink at
// smtpAddr, and returns its URL.
func stackAlertmanager(t *testing.T, webhookURL, smtpAddr string) string {
	t.Helper()
	bin := stackTool(t, "prometheus-alertmanager")
	addr := freeAddr(t)
	stackStart(t, "http://"+addr+"/-/ready", bin,
		"--config.file="+stackAlertmanagerConfig(t, webhookURL, smtpAddr),
		"--storage.path="+t.TempDir(),
		"--web.listen-address="+addr,
		"--cluster.listen-address=",
	)
	return "http://" + addr
}

var (
	forClause      = regexp.MustCompile(`(?m)^(\s+for:\s*)\S+\s*$`)
	intervalClause = regexp.MustCompile(`(?m)^(\s+interval:\s*)\S+\s*$`)
)

// stackRules copies alerting-rules/*.rules.yml with every `for:` cut to 0s,
// except PipelineExporterDown's: a cold Prometheus has no `up` series until
// it first discovers its target (up to 5 s), and that alert would inhibit
// the ones under test meanwhile. Group intervals are cut to 1s, so that the
// recording rules have values within the test.
func stackRules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob("../alerting-rules/*.rules.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		inExporterDown := false
		for _, line := range strings.SplitAfter(string(b), "\n") {
			if strings.Contains(line, "- alert:") || strings.Contains(line, "- record:") {
				inExporterDown = strings.Contains(line, "alert: PipelineExporterDown")
			}
			if !inExporterDown {
				line = forClause.ReplaceAllString(line, "${1}0s\n")
			}
			line = intervalClause.ReplaceAllString(line, "${1}1s\n")
			out = append(out, line)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(strings.Join(out, "")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// stackPrometheus starts Prometheus scraping the exporter at exporterAddr
// and evaluating the project's rules every second, alerting amURL unless it
// is empty, with native histograms on when native is set, and returns its
// URL.
func stackPrometheus(t *testing.T, exporterAddr, amURL string, native bool) string {
	t.Helper()
	bin := stackTool(t, "prometheus")
	cfg := map[string]any{
		"global": map[string]any{
			"scrape_interval":     "1s",
			"evaluation_interval": "1s",
			// The documented way to give alert links the exporter's address.
			"external_labels": map[string]string{"pipeline_exporter_url": "http://" + exporterAddr},
		},
		"rule_files": []string{filepath.Join(stackRules(t), "*.rules.yml")},
		"scrape_configs": []any{map[string]any{
			"job_name":       "pipeline_exporter",
			"static_configs": []any{map[string]any{"targets": []string{exporterAddr}}},
		}},
	}
	if amURL != "" {
		am, err := url.Parse(amURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg["alerting"] = map[string]any{"alertmanagers": []any{
			map[string]any{"static_configs": []any{map[string]any{"targets": []string{am.Host}}}},
		}}
	}
	addr := freeAddr(t)
	args := []string{
		"--config.file=" + stackWriteYAML(t, "prometheus.yml", cfg),
		"--storage.tsdb.path=" + t.TempDir(),
		"--web.listen-address=" + addr,
		// Resend firing alerts every second, not every minute, so a
		// notification lost to a cold Alertmanager comes again quickly.
		"--rules.alert.resend-delay=1s",
	}
	if native {
		args = append(args, "--enable-feature=native-histograms")
	}
	stackStart(t, "http://"+addr+"/-/ready", bin, args...)
	return "http://" + addr
}

// stackGitHubAPI serves the published REST examples as GitHub would, with
// the rate-limit headers GitHub sends on every answer, so that the exporter
// polls successfully and exposes its poll and rate-limit metrics. The
// listed run is of another workflow (build.yml): no pipeline tracks it.
func stackGitHubAPI(t *testing.T) string {
	t.Helper()
	runs := fixtures.MustLoad("github/rest/actions/list-workflow-runs-for-repo.json")
	jobs := fixtures.MustLoad("github/rest/actions/list-jobs-for-workflow-run.json")
	reset := time.Now().Add(time.Hour).Unix()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "4999")
		w.Header().Set("X-RateLimit-Used", "1")
		w.Header().Set("X-RateLimit-Reset", fmt.Sprint(reset))
		switch {
		case strings.HasSuffix(r.URL.Path, "/actions/runs"):
			_, _ = w.Write(runs)
		case strings.HasSuffix(r.URL.Path, "/jobs"):
			_, _ = w.Write(jobs)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// stackQuery runs an instant PromQL query and returns the number of series
// it gave, or the error Prometheus reported.
func stackQuery(promURL, query string) (int, error) {
	resp, err := http.PostForm(promURL+"/api/v1/query", url.Values{"query": {query}})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s", r.Error)
	}
	if r.Data.ResultType == "vector" || r.Data.ResultType == "matrix" {
		return len(r.Data.Result), nil
	}
	return 1, nil // a scalar or a string
}

// TestStackAlertsAndDashboards replays a failing run, a successful one and a
// new failure into the real exporter and follows each to an Alertmanager
// notification (PipelineFailure by webhook and by email to a real SMTP
// server, and PipelineStageFailure naming the failed job), then runs every dashboard query against the Prometheus that
// evaluated the alerts.
func TestStackAlertsAndDashboards(t *testing.T) {
	start := time.Now()
	receiver := newStackReceiver(t)
	mails := newStackSMTPSink(t)
	amURL := stackAlertmanager(t, receiver.srv.URL, mails.addr)

	// The site says which build it serves in a header, as a host can.
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Commit", fixtureSHA)
		fmt.Fprintln(w, "<h1>live</h1>")
	}))
	t.Cleanup(site.Close)
	cfg := writeConfig(t, `
github:
  owner: octo-org
  repo: octo-repo
  token: e2e-github-token
  api_url: `+stackGitHubAPI(t)+`/
  poll_interval: 1s
webhooks:
  github: { secret: `+githubSecret+` }
pipelines:
  - name: site
    workflow: test.yml
    branches: [master]
    verify: { url: `+site.URL+`/, expect_status: 200, timeout: 2s, build: { header: X-Commit } }
`)
	e := startExporter(t, cfg, filepath.Join(t.TempDir(), "data"))
	exporterAddr := strings.TrimPrefix(e.url, "http://")
	promURL := stackPrometheus(t, exporterAddr, amURL, false)
	// A second Prometheus, with native histograms on, scrapes the same
	// exporter: the dashboards and rules must work on both.
	nativeURL := stackPrometheus(t, exporterAddr, "", true)

	failure := func(n stackNotification, a stackAlert) bool {
		return n.Receiver == "webhook" && a.Labels["alertname"] == "PipelineFailure" && a.Labels["pipeline"] == "site"
	}
	firing := func(n stackNotification, a stackAlert) bool { return failure(n, a) && a.Status == "firing" }
	resolved := func(n stackNotification, a stackAlert) bool { return failure(n, a) && a.Status == "resolved" }

	// 1. A run whose job fails: PipelineFailure fires, with the labels and
	// the link the rules promise: once across replicas, so without an
	// instance label, and linking to the replica that leads.
	for _, d := range exampleRun(t, exampleRunID, "failure") {
		e.mustPost(d, http.StatusAccepted)
	}
	first, next := receiver.wait(t, 0, 45*time.Second, "PipelineFailure firing", firing)
	for k, want := range map[string]string{
		"alert_type": "pipeline_failure", "severity": "critical", "status": "failed",
		"job": "pipeline_exporter", "instance": "",
	} {
		if first.Labels[k] != want {
			t.Errorf("PipelineFailure label %s = %q, want %q", k, first.Labels[k], want)
		}
	}
	if want := e.url + "/api/pipeline-runs?pipeline=site&status=failed,timed_out"; first.Annotations["link"] != want {
		t.Errorf("PipelineFailure link = %q, want %q", first.Annotations["link"], want)
	}
	t.Logf("PipelineFailure firing after %v", time.Since(start).Round(time.Millisecond))
	// The failed job is named as the failed stage, in the pipeline's group.
	stageFailure := func(status string) func(stackNotification, stackAlert) bool {
		return func(n stackNotification, a stackAlert) bool {
			return n.Receiver == "webhook" && n.GroupLabels["pipeline"] == "site" && a.Status == status &&
				a.Labels["alertname"] == "PipelineStageFailure" && a.Labels["stage"] == "linters"
		}
	}
	receiver.wait(t, 0, 10*time.Second, "PipelineStageFailure of stage linters firing", stageFailure("firing"))

	// 2. The same alert by email, naming the failed stage; a later run
	// succeeds (verify of the live site included): resolved, by webhook and
	// by email.
	stackCheckFailureEmails(t, mails, e.url, "linters", func() {
		// Committed ten minutes before it went live: the lead time.
		commitAt := time.Now().Add(-10 * time.Minute).UTC().Format(time.RFC3339)
		for _, d := range exampleRunWith(t, exampleRunID+1, "success", map[string]any{"workflow_run.head_commit.timestamp": commitAt}) {
			e.mustPost(d, http.StatusAccepted)
		}
		_, next = receiver.wait(t, next, 30*time.Second, "PipelineFailure resolved", resolved)
	})
	receiver.wait(t, 0, 10*time.Second, "PipelineStageFailure of stage linters resolved", stageFailure("resolved"))
	t.Logf("PipelineFailure resolved after %v", time.Since(start).Round(time.Millisecond))
	// A second build goes live, ten minutes after its commit too: the
	// lead-time histogram, which appears with its first observation, now
	// increases in both Prometheus servers, so the lead-time rules give
	// numbers, not NaN.
	commitAt := time.Now().Add(-10 * time.Minute).UTC().Format(time.RFC3339)
	for _, d := range exampleRunWith(t, exampleRunID+3, "success", map[string]any{"workflow_run.head_commit.timestamp": commitAt}) {
		e.mustPost(d, http.StatusAccepted)
	}

	// 3. A new failure after the recovery is a new alert, not the old one.
	for _, d := range exampleRun(t, exampleRunID+2, "failure") {
		e.mustPost(d, http.StatusAccepted)
	}
	again, _ := receiver.wait(t, next, 30*time.Second, "a new PipelineFailure firing", firing)
	if !again.StartsAt.After(first.StartsAt) {
		t.Errorf("second PipelineFailure starts at %v, not after the first (%v)", again.StartsAt, first.StartsAt)
	}
	t.Logf("new PipelineFailure firing after %v", time.Since(start).Round(time.Millisecond))

	// 4. Every dashboard query runs on both Prometheus servers, the rules
	// that read histograms and the sparse status gauges have values on
	// both, and every metric the dashboards and rules use is in the
	// exporter's exposition.
	panels := stackDashboardQueries(t)
	for _, prom := range []struct {
		name, url string
		native    bool
	}{{"classic histograms", promURL, false}, {"native histograms", nativeURL, true}} {
		stackCheckHistogramKind(t, prom.name, prom.url, prom.native)
		var empty []string
		for _, p := range panels {
			n, err := stackQuery(prom.url, p.query)
			if err != nil {
				t.Errorf("%s: %s: %v\nquery: %s", prom.name, p.name, err, p.query)
			}
			if n == 0 {
				empty = append(empty, p.name)
				if p.needsData {
					t.Errorf("%s: %s has no values: %s", prom.name, p.name, p.query)
				}
			}
		}
		t.Logf("%s: %d dashboard queries ran, %d with no data yet: %s", prom.name, len(panels), len(empty), strings.Join(empty, "; "))
	}
	stackCheckMetricsExist(t, e, panels)
	t.Logf("real-stack test took %v", time.Since(start).Round(time.Millisecond))
}

// stackCheckHistogramKind checks that the Prometheus at promURL ingested
// the kind of histogram it should (native ones only when native is set),
// and that the recording rules reading histograms, and the time-to-restore
// rule reading the sparse pipeline_last_run_status after a failure, a
// recovery and a new failure, give a value for pipeline site.
func stackCheckHistogramKind(t *testing.T, name, promURL string, native bool) {
	t.Helper()
	checks := []struct {
		query string
		want  bool
	}{
		{`histogram_count(pipeline_stage_duration_seconds{pipeline="site"})`, native},
		{`histogram_count(pipeline_run_duration_seconds{pipeline="site",status="success"})`, native},
		{`pipeline_run_duration_seconds_bucket{pipeline="site",status="success"}`, !native},
		{`pipeline_stage_duration_seconds_count{pipeline="site"}`, !native},
		{`pipeline:lead_time_seconds:p95_7d{pipeline="site"}`, true},
		{`pipeline:lead_time_seconds:mean7d{pipeline="site"}`, true},
		// The stack's lead times are minutes: under a day by either
		// histogram kind, the classic p95 interpolated within the one-day
		// bucket, the shares exact.
		{`pipeline:lead_time_seconds:p95_7d{pipeline="site"} < 86400`, true},
		{`pipeline:lead_time_under_1d:ratio7d{pipeline="site"} == 1`, true},
		{`pipeline:lead_time_under_1w:ratio7d{pipeline="site"} == 1`, true},
		{`pipeline:trigger_to_live_seconds:p95_7d{pipeline="site"}`, true},
		{`pipeline:trigger_to_live_seconds:mean7d{pipeline="site"}`, true},
		{`pipeline:last_run_failed:max{pipeline="site"}`, true},
		{`pipeline:time_to_restore_seconds:mean30d{pipeline="site"}`, true},
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range checks {
		for {
			n, err := stackQuery(promURL, c.query)
			if err != nil {
				t.Errorf("%s: %s: %v", name, c.query, err)
				break
			}
			if (n > 0) == c.want {
				break
			}
			// A wanted series may still come with the next evaluation;
			// an unwanted one is there for good.
			if !c.want || time.Now().After(deadline) {
				t.Errorf("%s: %s gave %d series, want any: %v", name, c.query, n, c.want)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// stackPanelQuery is one dashboard query with its variables substituted.
type stackPanelQuery struct {
	name  string // dashboard file, panel title and refId, for messages
	expr  string // as written in the dashboard
	query string // as Grafana would send it
	// needsData is set for the queries of template variables: a variable
	// without values leaves every panel of its dashboard empty.
	needsData bool
}

// labelValues is the form of Grafana's Prometheus variable queries:
// label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((\w+(?:\{[^}]*\})?),\s*(\w+)\)$`)

// stackDashboardQueries reads every PromQL target and query variable of
// every dashboard, substituting template variables the way Grafana does for
// this stack: its scrape job, the pipeline under test, any instance, and
// intervals fitting a 1 s scrape interval. The Infinity table reads the
// exporter's API, not Prometheus: e2e/dashboards_test.go checks it.
func stackDashboardQueries(t *testing.T) []stackPanelQuery {
	t.Helper()
	files, err := filepath.Glob("../dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	vars := strings.NewReplacer(
		`"$job"`, `"pipeline_exporter"`, `"$pipeline"`, `"site"`, `"$instance"`, `".+"`,
		"$__rate_interval", "4s", "$__interval", "1s", "$__range_s", "60", "$__range", "1m",
	)
	var out []stackPanelQuery
	for _, f := range files {
		var d struct {
			Templating struct {
				List []struct {
					Name       string `json:"name"`
					Type       string `json:"type"`
					Definition string `json:"definition"`
				} `json:"list"`
			} `json:"templating"`
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr       string `json:"expr"`
					RefID      string `json:"refId"`
					Datasource struct {
						Type string `json:"type"`
					} `json:"datasource"`
				} `json:"targets"`
			} `json:"panels"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			m := labelValues.FindStringSubmatch(v.Definition)
			if m == nil {
				t.Errorf("%s variable %s: %q is not label_values(metric, label)", filepath.Base(f), v.Name, v.Definition)
				continue
			}
			// What Grafana asks Prometheus for, as a PromQL query.
			expr := fmt.Sprintf("group by (%s) (%s)", m[2], m[1])
			out = append(out, stackPanelQuery{name: fmt.Sprintf("%s variable %s", filepath.Base(f), v.Name), expr: expr, query: vars.Replace(expr), needsData: true})
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				if tg.Datasource.Type != "prometheus" {
					continue
				}
				q := vars.Replace(tg.Expr)
				if strings.Contains(q, "$") {
					t.Errorf("%s panel %q: unsubstituted variable in %s", filepath.Base(f), p.Title, q)
				}
				out = append(out, stackPanelQuery{name: fmt.Sprintf("%s panel %q %s", filepath.Base(f), p.Title, tg.RefID), expr: tg.Expr, query: q})
			}
		}
	}
	return out
}

var (
	promqlString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promqlBraces   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlOffset   = regexp.MustCompile(`\boffset\s+-?\w+`)
	promqlNumber   = regexp.MustCompile(`\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promqlKeywords = []string{"and", "or", "unless", "bool", "inf", "nan", "Inf", "NaN"}
)

// stackMetricNames returns the metric names a PromQL expression selects.
// It strips what cannot be a metric name (strings, label matchers, ranges,
// grouping clauses, numbers); of the identifiers left, those followed by a
// parenthesis are functions or aggregations, the rest metric names.
func stackMetricNames(expr string) []string {
	s := promqlString.ReplaceAllString(expr, `""`)
	s = promqlBraces.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	s = promqlOffset.ReplaceAllString(s, " ")
	s = promqlNumber.ReplaceAllString(s, " ")
	var names []string
	for _, m := range promqlIdent.FindAllStringSubmatch(s, -1) {
		if m[1] != "" || slices.Contains(promqlKeywords, m[0]) || slices.Contains(names, m[0]) {
			continue
		}
		names = append(names, m[0])
	}
	return names
}

// stackCheckMetricsExist checks every metric the dashboards and the rules
// select: recorded ones must be recorded by a rule, the others must be in
// the exporter's exposition (histograms and summaries with their series
// suffixes) or be one of the series Prometheus adds to every scrape.
func stackCheckMetricsExist(t *testing.T, e *exporter, panels []stackPanelQuery) {
	t.Helper()
	exposed := map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}
	for _, line := range strings.Split(string(e.get("/metrics").body), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		exposed[f[2]] = true
		switch f[3] {
		case "histogram":
			exposed[f[2]+"_bucket"], exposed[f[2]+"_sum"], exposed[f[2]+"_count"] = true, true, true
		case "summary":
			exposed[f[2]+"_sum"], exposed[f[2]+"_count"] = true, true
		}
	}
	recorded := map[string]bool{}
	uses := map[string][]string{} // metric name -> where it is used
	files, _ := filepath.Glob("../alerting-rules/*.rules.yml")
	for _, f := range files {
		var rf struct {
			Groups []struct {
				Rules []struct {
					Alert  string `yaml:"alert"`
					Record string `yaml:"record"`
					Expr   string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		stackDecodeYAML(t, f, &rf)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					recorded[r.Record] = true
				}
				for _, m := range stackMetricNames(r.Expr) {
					uses[m] = append(uses[m], "rule "+r.Alert+r.Record)
				}
			}
		}
	}
	for _, p := range panels {
		for _, m := range stackMetricNames(p.expr) {
			uses[m] = append(uses[m], p.name)
		}
	}
	if len(uses) < 20 {
		t.Fatalf("found only %d metric names in the dashboards and rules: %v", len(uses), uses)
	}
	for m, where := range uses {
		if !exposed[m] && !recorded[m] {
			t.Errorf("%s is neither exposed by the exporter nor recorded by a rule; used by %v", m, where)
		}
	}
}
