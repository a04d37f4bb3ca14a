// Package alertingrules_test checks the Prometheus rule files of this
// directory with promtool and holds them to the alert contract of docs/alerts.md.
package alertingrules_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// lookTool finds a command-line tool. CI installs every tool the tests use,
// so there a missing one fails the test; elsewhere it skips.
func lookTool(t *testing.T, name string) string {
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

type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type testFile struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromQLExprTest []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

func ruleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.rules.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.rules.yml files: %v", err)
	}
	return files
}

func testFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("tests/*.test.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no tests/*.test.yml files: %v", err)
	}
	return files
}

func decode[T any](t *testing.T, path string) T {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func rules(t *testing.T) []rule {
	t.Helper()
	var all []rule
	for _, f := range ruleFiles(t) {
		for _, g := range decode[ruleFile](t, f).Groups {
			all = append(all, g.Rules...)
		}
	}
	return all
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool := lookTool(t, "promtool")
	out, err := exec.Command(promtool, append([]string{"check", "rules"}, ruleFiles(t)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestPromtoolTestRules(t *testing.T) {
	promtool := lookTool(t, "promtool")
	out, err := exec.Command(promtool, append([]string{"test", "rules"}, testFiles(t)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestAlertContract holds the alerts to their contract: the names and alert_type
// values operators route on, a severity Alertmanager routes by, and the
// annotations every notification shows.
func TestAlertContract(t *testing.T) {
	want := map[string]string{
		"PipelineFailure":             "pipeline_failure",
		"SlowPipeline":                "slow_pipeline",
		"PipelineStageFailure":        "stage_failure",
		"PipelineTriggerNotPickedUp":  "trigger_not_picked_up",
		"PipelineStuck":               "pipeline_stuck",
		"PipelineExporterDown":        "exporter_down",
		"PipelineWebhookAuthFailures": "webhook_auth_failures",
		"PipelineGitHubPollFailing":   "github_poll_failing",
		"PipelineGitHubRateLimitLow":  "github_rate_limit_low",
		"PipelineSiteStale":           "site_stale",
		"PipelineExporterNoLeader":    "exporter_no_leader",
		"PipelineExporterLogLag":      "exporter_log_lag",
	}
	readme, err := os.ReadFile("../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]rule{}
	for _, r := range rules(t) {
		if r.Alert == "" {
			continue
		}
		if _, dup := got[r.Alert]; dup {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		got[r.Alert] = r
	}
	for name, alertType := range want {
		r, ok := got[name]
		if !ok {
			t.Errorf("alert %s is missing", name)
			continue
		}
		if r.Labels["alert_type"] != alertType {
			t.Errorf("%s: alert_type = %q, want %q", name, r.Labels["alert_type"], alertType)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity = %q, want critical or warning", name, s)
		}
		for _, a := range []string{"summary", "description", "link", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: annotation %s is missing", name, a)
			}
		}
		// The runbook is a section of docs/runbook.md, named after the alert.
		const runbooks = "https://github.com/pipeline-exporter/pipeline_exporter/blob/main/docs/runbook.md#"
		if r.Annotations["runbook_url"] != runbooks+strings.ToLower(name) || !strings.Contains(string(readme), "\n### "+name+"\n") {
			t.Errorf("%s: runbook_url %q is not the docs/runbook.md section ### %s", name, r.Annotations["runbook_url"], name)
		}
		// Pipeline alerts name the pipeline, and link to its failed runs.
		if strings.Contains(r.Expr, "pipeline_last_") || strings.Contains(r.Expr, "pipeline_runs_") {
			if !strings.Contains(r.Annotations["summary"], "$labels.pipeline") {
				t.Errorf("%s: summary does not name the pipeline", name)
			}
			if !strings.Contains(r.Annotations["link"], "/api/pipeline-runs?pipeline={{ $labels.pipeline | urlquery }}&") {
				t.Errorf("%s: link does not point at the pipeline's runs: %s", name, r.Annotations["link"])
			}
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("alert %s is not in the contract above", name)
		}
	}
}

// TestEveryRuleIsTested makes sure no rule is added without a promtool case:
// every alert has a case where it fires and one where it does not (or no
// longer does), and every recording rule's value is asserted.
func TestEveryRuleIsTested(t *testing.T) {
	firing, quiet, exprs := map[string]bool{}, map[string]bool{}, []string{}
	for _, f := range testFiles(t) {
		for _, tc := range decode[testFile](t, f).Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					firing[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
			for _, e := range tc.PromQLExprTest {
				exprs = append(exprs, e.Expr)
			}
		}
	}
	for _, r := range rules(t) {
		switch {
		case r.Alert != "":
			if !firing[r.Alert] {
				t.Errorf("alert %s has no promtool case where it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("alert %s has no promtool case where it is not firing", r.Alert)
			}
		case !slices.ContainsFunc(exprs, func(e string) bool { return e == r.Record || strings.HasPrefix(e, r.Record+"{") }):
			t.Errorf("recording rule %s has no promql_expr_test", r.Record)
		}
	}
}
