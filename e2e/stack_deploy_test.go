package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var deployFlag = regexp.MustCompile(`--([a-z][a-z0-9.-]*)=`)

// TestStackDeployFilesMatchBinary runs the built binary against the
// deployment files: every flag the Dockerfile, the systemd unit and the
// Kubernetes Deployment pass must exist, and the shipped config must pass
// --config.check with the shipped environment file.
func TestStackDeployFilesMatchBinary(t *testing.T) {
	bin := exporterBinary(t)
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, help)
	}
	for _, f := range []string{"../deploy/Dockerfile", "../deploy/Dockerfile.release", "../deploy/systemd/pipeline_exporter.service", "../deploy/kubernetes/deployment.yaml", "../deploy/kubernetes/postgres/deployment.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if strings.Contains(filepath.Base(f), "Dockerfile") {
			// Only the command line of the image; COPY and RUN have flags of their own.
			var cmd []string
			for _, l := range strings.Split(text, "\n") {
				if strings.HasPrefix(l, "CMD ") || strings.HasPrefix(l, "ENTRYPOINT ") {
					cmd = append(cmd, l)
				}
			}
			text = strings.Join(cmd, "\n")
		}
		flags := deployFlag.FindAllStringSubmatch(text, -1)
		if len(flags) == 0 {
			t.Errorf("%s passes no flags", f)
		}
		for _, m := range flags {
			if !strings.Contains(string(help), "--"+m[1]+"=") && !strings.Contains(string(help), "--"+m[1]+" ") {
				t.Errorf("%s passes --%s, which pipeline_exporter --help does not list", f, m[1])
			}
		}
	}

	env, err := os.ReadFile("../deploy/pipeline_exporter.env.example")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.check", "--config.file=../deploy/pipeline_exporter.yml")
	cmd.Env = os.Environ()
	for _, l := range strings.Split(string(env), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			cmd.Env = append(cmd.Env, l)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("deploy/pipeline_exporter.yml fails --config.check: %v\n%s", err, out)
	}
}
