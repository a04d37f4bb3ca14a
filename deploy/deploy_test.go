// Package deploy_test checks the deployment files of this directory with the
// tools that read them (amtool, promtool, systemd-analyze) where those run
// here, and otherwise for the references between them: every mounted file
// exists, every service the stack needs is there.
package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func decodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// rewrite copies src to dst with the in-container paths replaced by the
// paths of this checkout, so that the tools read the files compose mounts.
func rewrite(t *testing.T, src, dst string, replace ...string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(replace); i += 2 {
		if !strings.Contains(s, replace[i]) {
			t.Fatalf("%s does not contain %q", src, replace[i])
		}
		s = strings.ReplaceAll(s, replace[i], replace[i+1])
	}
	if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func abs(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// alertmanagerConfig is alertmanager.yml reading its templates from this
// checkout instead of /etc/alertmanager.
func alertmanagerConfig(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "alertmanager.yml")
	rewrite(t, "alertmanager/alertmanager.yml", cfg,
		"/etc/alertmanager/templates/", abs(t, "alertmanager/templates")+"/")
	return cfg
}

func TestAlertmanagerCheckConfig(t *testing.T) {
	amtool := lookTool(t, "amtool")
	out := run(t, amtool, "check-config", alertmanagerConfig(t))
	if !strings.Contains(out, "1 templates") {
		t.Errorf("amtool did not load the template file:\n%s", out)
	}
}

func TestAlertmanagerRoutes(t *testing.T) {
	amtool := lookTool(t, "amtool")
	cfg := alertmanagerConfig(t)
	tests := []struct {
		labels    []string
		receivers string
	}{
		{[]string{"alertname=PipelineFailure", "severity=critical", "pipeline=site"}, "webhook,email-oncall"},
		{[]string{"alertname=PipelineExporterDown", "severity=critical", "job=pipeline_exporter"}, "webhook,email-oncall"},
		{[]string{"alertname=SlowPipeline", "severity=warning", "pipeline=site"}, "webhook,email-team"},
		{[]string{"alertname=PipelineGitHubRateLimitLow", "severity=warning"}, "webhook,email-team"},
		// Alerts of other rule files without a severity still reach people.
		{[]string{"alertname=Watchdog"}, "webhook,email-team"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.labels, ","), func(t *testing.T) {
			args := append([]string{"config", "routes", "test", "--config.file=" + cfg, "--verify.receivers=" + tt.receivers}, tt.labels...)
			run(t, amtool, args...)
		})
	}
}

// TestAlertmanagerTemplates renders the email templates for a group with a
// firing and a resolved alert, as Alertmanager would.
func TestAlertmanagerTemplates(t *testing.T) {
	amtool := lookTool(t, "amtool")
	data := filepath.Join(t.TempDir(), "data.json")
	const group = `{
  "receiver": "email-oncall", "status": "firing", "externalURL": "http://alertmanager:9093",
  "groupLabels": {"pipeline": "site"}, "commonLabels": {"pipeline": "site"}, "commonAnnotations": {},
  "alerts": [
    {"status": "firing", "startsAt": "2026-11-26T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
     "labels": {"alertname": "PipelineFailure", "pipeline": "site", "severity": "critical", "status": "failed"},
     "annotations": {"summary": "Pipeline site: last run failed", "description": "The last run of pipeline site finished with status failed.",
                     "link": "http://exporter:8080/api/pipeline-runs?pipeline=site&status=failed,timed_out", "runbook_url": "https://example.com/runbook"}},
    {"status": "resolved", "startsAt": "2026-11-26T09:00:00Z", "endsAt": "2026-11-26T09:30:00Z",
     "labels": {"alertname": "SlowPipeline", "pipeline": "site", "severity": "warning"},
     "annotations": {"summary": "Pipeline site: last run took 20m 0s"}}
  ]
}`
	if err := os.WriteFile(data, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	glob := "--template.glob=" + filepath.Join("alertmanager", "templates", "*.tmpl")
	render := func(name string) string {
		return run(t, amtool, "template", "render", glob, "--template.data="+data, `--template.text={{ template "`+name+`" . }}`)
	}
	if got, want := strings.TrimSpace(render("pipeline.email.subject")), "[FIRING:1] pipeline site: PipelineFailure"; got != want {
		t.Errorf("subject = %q, want %q", got, want)
	}
	text := render("pipeline.email.text")
	for _, want := range []string{
		"FIRING\n\nPipeline site: last run failed\n",
		"Runs:    http://exporter:8080/api/pipeline-runs?pipeline=site&status=failed,timed_out\n",
		"RESOLVED\n\nPipeline site: last run took 20m 0s\n",
		"resolved 2026-11-26 09:30:00 UTC",
		"Alertmanager: http://alertmanager:9093",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("email text lacks %q:\n%s", want, text)
		}
	}
}

// TestPrometheusConfig checks prometheus.yml together with the rule files
// it loads in the compose stack.
func TestPrometheusConfig(t *testing.T) {
	promtool := lookTool(t, "promtool")
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	rewrite(t, "prometheus/prometheus.yml", cfg, "/etc/prometheus/rules/", abs(t, "../alerting-rules")+"/")
	out := run(t, promtool, "check", "config", cfg)
	if !strings.Contains(out, "pipeline_exporter.rules.yml") || !strings.Contains(out, "dora.rules.yml") {
		t.Errorf("promtool did not check the rule files:\n%s", out)
	}
	var c struct {
		ScrapeConfigs []struct {
			JobName string         `yaml:"job_name"`
			Params  map[string]any `yaml:"params"`
		} `yaml:"scrape_configs"`
	}
	decodeYAML(t, "prometheus/prometheus.yml", &c)
	var bb struct {
		Modules map[string]any `yaml:"modules"`
	}
	decodeYAML(t, "blackbox/blackbox.yml", &bb)
	jobs := map[string]bool{}
	for _, sc := range c.ScrapeConfigs {
		jobs[sc.JobName] = true
		if sc.JobName == "blackbox" {
			if m, _ := sc.Params["module"].([]any); len(m) != 1 || bb.Modules[m[0].(string)] == nil {
				t.Errorf("blackbox job's module %v is not in blackbox/blackbox.yml", sc.Params["module"])
			}
		}
	}
	// The alerts and the inhibition match job="pipeline_exporter".
	if !jobs["pipeline_exporter"] || !jobs["blackbox"] {
		t.Errorf("scrape jobs %v lack pipeline_exporter or blackbox", jobs)
	}
}

type composeService struct {
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Image    string   `yaml:"image"`
	EnvFile  string   `yaml:"env_file"`
	Volumes  []string `yaml:"volumes"`
	Command  []string `yaml:"command"`
	Ports    []string `yaml:"ports"`
	Profiles []string `yaml:"profiles"`
	Secrets  []string `yaml:"secrets"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

// TestCompose checks docker-compose.yml's references: what it builds and
// mounts must exist, and each service reads its config where it is mounted.
// It also holds the file to its safe defaults: only the exporter listens on
// every interface, no lifecycle API, secrets from git-ignored files, the
// exporter image named as the release names it.
func TestCompose(t *testing.T) {
	var c composeFile
	decodeYAML(t, "docker-compose.yml", &c)
	var names []string
	for name := range c.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"alertmanager", "blackbox", "exporter", "exporter-2", "grafana", "postgres", "prometheus"}; !slices.Equal(names, want) {
		t.Errorf("services = %v, want %v", names, want)
	}
	for _, name := range []string{"exporter-2", "postgres"} {
		if p := c.Services[name].Profiles; !slices.Equal(p, []string{"postgres"}) {
			t.Errorf("%s: profiles %v, want [postgres]", name, p)
		}
	}
	ignored := gitIgnored(t)
	mounts := map[string]bool{}
	for name, s := range c.Services {
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", name, err)
			}
		}
		if s.EnvFile != "" {
			// The real file holds secrets: git ignores it, and the
			// repository ships an example to copy.
			if _, err := os.Stat(s.EnvFile + ".example"); err != nil {
				t.Errorf("%s: env_file example: %v", name, err)
			}
			if !ignored("deploy/" + s.EnvFile) {
				t.Errorf("%s: env_file deploy/%s is not git-ignored", name, s.EnvFile)
			}
		}
		for _, p := range s.Ports {
			if name != "exporter" && !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %q on every interface; bind it to 127.0.0.1", name, p)
			}
		}
		for _, arg := range s.Command {
			if arg == "--web.enable-lifecycle" {
				t.Errorf("%s: --web.enable-lifecycle lets anyone who reaches it shut it down", name)
			}
		}
		for _, sec := range s.Secrets {
			f := c.Secrets[sec].File
			if f == "" {
				t.Errorf("%s: secret %q is not declared with a file", name, sec)
			} else if !ignored(filepath.Join("deploy", f)) {
				t.Errorf("%s: secret file deploy/%s is not git-ignored", name, f)
			}
		}
		for _, v := range s.Volumes {
			src, target, _ := strings.Cut(v, ":")
			target, _, _ = strings.Cut(target, ":")
			mounts[target] = true
			if !strings.HasPrefix(src, ".") {
				if c.Volumes == nil || !hasKey(c.Volumes, src) {
					t.Errorf("%s: named volume %q is not declared", name, src)
				}
				continue
			}
			if _, err := os.Stat(src); err != nil {
				t.Errorf("%s: mount source: %v", name, err)
			}
		}
		for _, arg := range s.Command {
			if p, ok := strings.CutPrefix(arg, "--config.file="); ok && !mounts[p] && !mounts[filepath.Dir(p)] {
				t.Errorf("%s: --config.file=%s is not a mounted file", name, p)
			}
		}
	}
	if img, want := c.Services["exporter"].Image, releaseImage(t); img != want {
		t.Errorf("exporter image = %q, want %q (the release's name and VERSION)", img, want)
	}
	// Grafana's dashboard provider reads the directory compose mounts.
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeYAML(t, "grafana/provisioning/dashboards/pipeline_exporter.yml", &prov)
	if len(prov.Providers) != 1 || !mounts[prov.Providers[0].Options.Path] {
		t.Errorf("grafana dashboard provider path is not a mounted directory: %+v", prov)
	}
}

// TestComposeVersions pins Prometheus and Alertmanager in compose to the
// versions the end-to-end tests run, where those are installed.
func TestComposeVersions(t *testing.T) {
	var c composeFile
	decodeYAML(t, "docker-compose.yml", &c)
	for _, tc := range []struct{ service, tool, image string }{
		{"prometheus", "prometheus", "prom/prometheus"},
		{"alertmanager", "prometheus-alertmanager", "prom/alertmanager"},
	} {
		bin := lookTool(t, tc.tool)
		out := run(t, bin, "--version")
		m := toolVersion.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s --version: no version in %q", tc.tool, out)
		}
		if got, want := c.Services[tc.service].Image, tc.image+":v"+m[1]; got != want {
			t.Errorf("%s image = %q, the tests run %s", tc.service, got, want)
		}
	}
}

var toolVersion = regexp.MustCompile(`version (\d+\.\d+\.\d+)`)

// gitIgnored reports whether git ignores a path (relative to the
// repository root). Outside a git checkout, .gitignore is read directly.
func gitIgnored(t *testing.T) func(string) bool {
	t.Helper()
	return func(path string) bool {
		cmd := exec.Command("git", "check-ignore", "-q", "--no-index", path)
		cmd.Dir = ".."
		return cmd.Run() == nil
	}
}

// releaseImage is the image the release builds: the registry name of
// .promu.yml's repository and the tag in VERSION.
func releaseImage(t *testing.T) string {
	t.Helper()
	v, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	return "ghcr.io/pipeline-exporter/pipeline_exporter:" + strings.TrimSpace(string(v))
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}

// TestDockerfile checks the image builds the static binary and runs it as a
// non-root user.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms, users []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "FROM":
			froms = append(froms, f[1])
		case "USER":
			users = append(users, f[1])
		}
	}
	if len(froms) < 2 {
		t.Errorf("FROM lines %v: want a multi-stage build", froms)
	}
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1], "0") || strings.HasPrefix(users[len(users)-1], "root") {
		t.Errorf("USER lines %v: the final stage must run as a non-root user", users)
	}
	// The image builds with `make build`, which is where CGO_ENABLED=0 is set.
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "make build") || !strings.Contains(string(mk), "CGO_ENABLED=0 $(GO) build") {
		t.Error("the image must be built by `make build` with CGO_ENABLED=0")
	}
}

// TestSystemdUnit runs systemd-analyze verify, which reports unknown keys
// and bad values as warnings, so any output fails the test.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: not a systemd machine")
	}
	unit := filepath.Join(t.TempDir(), "pipeline_exporter.service")
	// verify wants the binary to exist; any executable stands in for it.
	rewrite(t, "systemd/pipeline_exporter.service", unit, "/usr/local/bin/pipeline_exporter", "/bin/true")
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The environment file the unit reads is the one this directory ships.
	env := lines(t, "pipeline_exporter.env.example")
	if len(env) == 0 {
		t.Fatal("pipeline_exporter.env.example sets no variable")
	}
	for _, l := range env {
		if k, _, ok := strings.Cut(l, "="); !ok || k == "" || strings.ContainsAny(k, " \t") {
			t.Errorf("pipeline_exporter.env.example: %q is not VAR=value", l)
		}
	}
}

// lines returns the non-comment, non-empty lines of a file.
func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestEnvironmentCoversConfig makes sure every ${VAR} of the config is set
// by the environment file and by the Kubernetes Secret.
func TestEnvironmentCoversConfig(t *testing.T) {
	cfg, err := os.ReadFile("pipeline_exporter.yml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]bool{}
	for _, l := range lines(t, "pipeline_exporter.env.example") {
		k, _, _ := strings.Cut(l, "=")
		env[k] = true
	}
	var secret struct {
		StringData map[string]string `yaml:"stringData"`
	}
	decodeYAML(t, "kubernetes/common/secret.yaml", &secret)
	vars := 0
	for _, part := range strings.Split(string(cfg), "${")[1:] {
		name, _, _ := strings.Cut(part, "}")
		vars++
		if !env[name] {
			t.Errorf("${%s} is not set in pipeline_exporter.env.example", name)
		}
		if _, ok := secret.StringData[name]; !ok {
			t.Errorf("${%s} is not set in kubernetes/common/secret.yaml", name)
		}
	}
	if vars == 0 {
		t.Error("pipeline_exporter.yml uses no ${VAR}: where do its secrets come from?")
	}
}
