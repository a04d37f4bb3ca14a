package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// pintBinary finds Cloudflare's pint: $PINT, then PATH, then a build under
// ~/.cache/pipeline_exporter/tools/pint-*/. The Go module proxy does not
// serve github.com/cloudflare/pint (it answers 403), so `make tools` cannot
// build it and the test skips without it, in CI too.
func pintBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PINT"); p != "" {
		return p
	}
	if p, err := exec.LookPath("pint"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	if found, _ := filepath.Glob(filepath.Join(home, ".cache/pipeline_exporter/tools/pint-*/pint")); len(found) > 0 {
		return found[len(found)-1]
	}
	t.Skip("pint not found: set PINT, put it in PATH or build it into ~/.cache/pipeline_exporter/tools/pint-<version>/")
	return ""
}

// pintProblem is one entry of pint's --json report.
type pintProblem struct {
	Path     string `json:"path"`
	Reporter string `json:"reporter"`
	Problem  string `json:"problem"`
	Severity string `json:"severity"`
	Lines    []int  `json:"lines"`
}

// pintLint runs `pint lint alerting-rules/` from the repository root with
// the given config and returns the problems it reports (warnings and up,
// as pint lint and pint ci show by default).
func pintLint(t *testing.T, pint, config, promURL string) ([]pintProblem, string) {
	t.Helper()
	report := filepath.Join(t.TempDir(), "pint.json")
	cmd := exec.Command(pint, "--no-color", "--config", config, "lint", "--json", report, "alerting-rules/")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "PINT_PROMETHEUS_URL="+promURL)
	out, err := cmd.CombinedOutput()
	b, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("pint wrote no report (%v): %v\n%s", err, rerr, out)
	}
	var all, problems []pintProblem
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatalf("pint report: %v\n%s", err, b)
	}
	// The report has information-level notes too, which pint's output
	// leaves out by default (--min-severity=warning).
	for _, p := range all {
		if p.Severity != "Information" {
			problems = append(problems, p)
		}
	}
	if err != nil && len(problems) == 0 {
		t.Fatalf("pint failed with no problem reported: %v\n%s", err, out)
	}
	return problems, string(out)
}

// TestPintQuietOnWebhookOnlySetup runs pint with the repository's .pint.hcl
// against a real Prometheus that scrapes a webhook-only exporter (no
// github: section, so no poll or rate-limit series) after a successful and
// a failed run, and evaluates the project's rules, keeping history as long
// as the compose stack does. pint must report nothing. Without the
// config's rule blocks, the same run reports the missing poller series:
// the config is what keeps pint quiet.
func TestPintQuietOnWebhookOnlySetup(t *testing.T) {
	pint := pintBinary(t)
	demo := demoBinary(t)
	e := startExporter(t, writeConfig(t, demoConfig), filepath.Join(t.TempDir(), "data"), "--storage.retention=0")
	// A publish as `make demo` posts it (Supabase trigger, dispatch, the
	// workflow run), then a failed run.
	if out, err := exec.Command(demo, "--url="+e.url, "--secret="+githubSecret, "--supabase-secret=e2e-supabase-secret").CombinedOutput(); err != nil {
		t.Fatalf("webhook-demo: %v\n%s", err, out)
	}
	for _, d := range exampleRun(t, exampleRunID+1, "failure") {
		e.mustPost(d, http.StatusAccepted)
	}
	exporterAddr := e.url[len("http://"):]
	rules, err := filepath.Abs("../alerting-rules")
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"global":     map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"},
		"rule_files": []string{filepath.Join(rules, "*.rules.yml")},
		"scrape_configs": []any{map[string]any{
			"job_name":       "pipeline_exporter",
			"static_configs": []any{map[string]any{"targets": []string{exporterAddr}}},
		}},
	}
	addr := freeAddr(t)
	stackStart(t, "http://"+addr+"/-/ready", stackTool(t, "prometheus"),
		"--config.file="+stackWriteYAML(t, "prometheus.yml", cfg),
		"--storage.tsdb.path="+t.TempDir(),
		"--web.listen-address="+addr,
		// As deploy/docker-compose.yml: the DORA rules look 30 days back.
		"--storage.tsdb.retention.time=400d",
	)
	promURL := "http://" + addr
	// pint looks for the series the rules read: wait for the runs'. (It
	// takes a recorded series it cannot find yet for one a rule will
	// record, and says nothing.)
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := stackQuery(promURL, `pipeline_last_stage_status{status="failed"}`)
		if err == nil && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus has not scraped the runs after 30s (%v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if problems, out := pintLint(t, pint, ".pint.hcl", promURL); len(problems) > 0 {
		t.Errorf("pint reports problems with .pint.hcl on a webhook-only setup: %+v\n%s", problems, out)
	}

	config, err := os.ReadFile("../.pint.hcl")
	if err != nil {
		t.Fatal(err)
	}
	control := regexp.MustCompile(`(?ms)^rule \{.*?^\}\n`).ReplaceAll(config, nil)
	controlPath := filepath.Join(t.TempDir(), "control.hcl")
	if err := os.WriteFile(controlPath, control, 0o644); err != nil {
		t.Fatal(err)
	}
	series := 0
	problems, _ := pintLint(t, pint, controlPath, promURL)
	for _, p := range problems {
		if p.Reporter == "promql/series" && p.Severity == "Bug" {
			series++
		}
	}
	if series == 0 {
		t.Errorf("without its rule blocks, .pint.hcl reports no missing series: the test shows nothing")
	}
}
