package e2e

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	bad := writeConfig(t, "webhooks:\n  github: { secret: s }\npipelines:\n  - name: site\n    workflow: deploy.yml\n    verfy: { url: https://example.com/ }\n")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"valid", []string{"--config.file=" + writeConfig(t, coreConfig)}, 0, "configuration is valid"},
		{"example config", []string{"--config.file=../examples/pipeline_exporter.yml"}, 0, "configuration is valid"},
		{"unknown key names file, line and key", []string{"--config.file=" + bad}, 1, bad + ":6: pipelines[0].verfy: unknown key (did you mean verify?)"},
		{"missing file", []string{"--config.file=" + filepath.Join(t.TempDir(), "nope.yml")}, 1, "nope.yml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(exporterBinary(t), append(tt.args, "--config.check")...).CombinedOutput()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || !strings.Contains(string(out), tt.wantOut) {
				t.Fatalf("exit %d, output:\n%s\nwant exit %d and %q", code, out, tt.wantCode, tt.wantOut)
			}
		})
	}
}

// basicAuthWebConfig is an exporter-toolkit web config with one user,
// "admin" / "secret" (bcrypt).
const basicAuthWebConfig = "basic_auth_users:\n  admin: $2y$10$KWWf0nLHoIcnaNPFHZdDPusk0jvs2X2djbQNMZdG4ZGWalnc4QOW6\n"

func TestBasicAuthNeedsASeparateWebhookListener(t *testing.T) {
	webConfig := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(webConfig, []byte(basicAuthWebConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, coreConfig)

	out, err := exec.Command(exporterBinary(t), "--config.file="+cfg, "--storage.path="+t.TempDir(),
		"--web.listen-address="+freeAddr(t), "--web.config.file="+webConfig).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--webhook.listen-address") {
		t.Fatalf("basic auth with shared webhooks: err %v, output:\n%s\nwant a refusal naming --webhook.listen-address", err, out)
	}

	hookAddr := freeAddr(t)
	e := startExporter(t, cfg, filepath.Join(t.TempDir(), "data"), "--web.config.file="+webConfig, "--webhook.listen-address="+hookAddr)
	// Basic auth guards every route of the main listener; the webhooks
	// answer on their own listener with only their signatures.
	if a := e.get("/metrics"); a.code != http.StatusUnauthorized {
		t.Fatalf("/metrics without credentials = %d, want 401", a.code)
	}
	hooks := &exporter{t: t, url: "http://" + hookAddr}
	runs := exampleRun(t, 9001, "success")
	// The main listener answers 401 from its start, before the store is
	// open; the webhook listener answers 503 until then, and the first
	// delivery it takes is accepted.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, err := hooks.post(runs[0])
		if err != nil {
			t.Fatal(err)
		}
		if a.code == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if a.code != http.StatusAccepted {
			t.Fatalf("POST /webhooks/github on the webhook listener: %d %s, want 202", a.code, a.body)
		}
		break
	}
	if a := e.get("/webhooks/github"); a.code != http.StatusUnauthorized && a.code != http.StatusNotFound {
		t.Fatalf("/webhooks/github on the main listener = %d, want it absent or guarded", a.code)
	}
}

func TestReloadBySIGHUPAndEndpoint(t *testing.T) {
	cfg := writeConfig(t, coreConfig)
	e := startExporter(t, cfg, filepath.Join(t.TempDir(), "data"))
	if got, _ := e.metric("pipeline_exporter_config_last_reload_successful"); got != "1" {
		t.Fatalf("reload gauge at start = %q", got)
	}
	// A second pipeline appears after a SIGHUP.
	if err := os.WriteFile(cfg, []byte(coreConfig+"  - name: docs\n    workflow: docs.yml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, ok := e.metric(`pipeline_slow_threshold_seconds{pipeline="docs"}`)
		return ok
	}, "pipeline docs after SIGHUP")

	// A broken config is refused and the old one kept.
	if err := os.WriteFile(cfg, []byte("pipelines: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.reload(http.StatusInternalServerError)
	if got, _ := e.metric("pipeline_exporter_config_last_reload_successful"); got != "0" {
		t.Fatalf("reload gauge after a failed reload = %q, want 0", got)
	}
	if _, ok := e.metric(`pipeline_slow_threshold_seconds{pipeline="docs"}`); !ok {
		t.Fatal("the previous config was not kept")
	}
}

func TestBackupWhileRunning(t *testing.T) {
	cfg := writeConfig(t, coreConfig)
	data := filepath.Join(t.TempDir(), "data")
	e := startExporter(t, cfg, data, "--storage.retention=0")
	for _, d := range exampleRun(t, exampleRunID, "success") {
		e.mustPost(d, http.StatusAccepted)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if err := os.MkdirAll(restored, 0o750); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(restored, "pipeline_exporter.db")
	if out, err := exec.Command(exporterBinary(t), "backup", "--storage.path="+data, "--to="+dst).CombinedOutput(); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file mode = %v (%v), want 0600: it holds raw deliveries", fi.Mode().Perm(), err)
	}
	if out, err := exec.Command(exporterBinary(t), "backup", "--storage.path="+data, "--to="+dst).CombinedOutput(); err == nil {
		t.Fatalf("a second backup over the first succeeded:\n%s", out)
	}
	r := startExporter(t, cfg, restored, "--storage.retention=0")
	if runs := r.allRuns(""); len(runs) != 1 || runs[0].GitHub.RunID != exampleRunID {
		t.Fatalf("restored history = %+v", runs)
	}
}

// TestStorageFlagMistakes: the two storage mistakes an operator makes say
// what to do instead, and change nothing.
func TestStorageFlagMistakes(t *testing.T) {
	cfg := writeConfig(t, coreConfig)
	// Nothing listens there: neither command may get as far as connecting.
	const url = "postgres://pipeline_exporter@127.0.0.1:1/pipeline_exporter"
	dst := filepath.Join(t.TempDir(), "backup.db")
	tests := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"both storage flags", []string{"--config.file=" + cfg, "--storage.path=" + t.TempDir(), "--storage.url=" + url}, "",
			"drop --storage.path to keep the history in PostgreSQL"},
		{"backup of PostgreSQL", []string{"backup", "--storage.url=" + url, "--to=" + dst}, "", "back it up with pg_dump"},
		{"backup with the URL in the environment", []string{"backup", "--to=" + dst}, "PIPELINE_EXPORTER_STORAGE_URL=" + url, "back it up with pg_dump"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(exporterBinary(t), tt.args...)
			cmd.Env = append(os.Environ(), tt.env)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), tt.want) {
				t.Fatalf("err %v, output:\n%s\nwant exit 1 and %q", err, out, tt.want)
			}
			if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists after the refusal (%v)", dst, err)
			}
		})
	}
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestSecretsNeverShown: the webhook secret appears in no answer and no
// log line, also at debug level and after a rejected delivery.
func TestSecretsNeverShown(t *testing.T) {
	e := startExporter(t, writeConfig(t, coreConfig), filepath.Join(t.TempDir(), "data"))
	e.mustPost(githubDelivery("wrong-secret", "ping", "e2e-secret-ping", []byte(`{"zen":"x"}`)), http.StatusUnauthorized)
	e.mustPost(exampleRun(t, 9100, "success")[0], http.StatusAccepted)
	for _, path := range []string{"/api/status", "/metrics", "/health", "/api/pipeline-runs", "/"} {
		if a := e.get(path); strings.Contains(string(a.body), githubSecret) {
			t.Errorf("GET %s shows the webhook secret", path)
		}
	}
	if strings.Contains(e.logs.String(), githubSecret) {
		t.Error("the log shows the webhook secret")
	}
}
