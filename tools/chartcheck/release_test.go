package chartcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const image = "ghcr.io/pipeline-exporter/pipeline_exporter"

// TestReleaseConfig runs `goreleaser check` on .goreleaser.yaml (which also
// fails on deprecated settings) and checks that the release publishes the
// image the chart, the manifests and compose name, tagged with VERSION.
func TestReleaseConfig(t *testing.T) {
	goreleaser := tool(t, "GORELEASER")
	cmd := exec.Command(goreleaser, "check")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "deprecat") {
		t.Fatalf("goreleaser check: %v\n%s", err, out)
	}

	b, err := os.ReadFile(filepath.Join(root, ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Builds []struct {
			Main    string   `json:"main"`
			GOARCH  []string `json:"goarch"`
			LDFlags []string `json:"ldflags"`
		} `json:"builds"`
		DockersV2 []struct {
			Images    []string `json:"images"`
			Tags      []string `json:"tags"`
			Platforms []string `json:"platforms"`
		} `json:"dockers_v2"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Builds) != 1 || cfg.Builds[0].Main != "./cmd/pipeline_exporter" ||
		!strings.Contains(strings.Join(cfg.Builds[0].LDFlags, " "), "github.com/prometheus/common/version.Version={{ .Version }}") {
		t.Errorf("builds %+v: want ./cmd/pipeline_exporter with the version in prometheus/common/version", cfg.Builds)
	}
	if len(cfg.DockersV2) != 1 || len(cfg.DockersV2[0].Images) != 1 || cfg.DockersV2[0].Images[0] != image ||
		!slices.Contains(cfg.DockersV2[0].Tags, "{{ .Version }}") || len(cfg.DockersV2[0].Platforms) < 2 {
		t.Errorf("dockers_v2 %+v: want a multi-platform %s tagged with the version", cfg.DockersV2, image)
	}

	// The chart's appVersion is VERSION (its default image tag), and the
	// plain manifests and compose run that tag.
	var ch struct {
		AppVersion string `json:"appVersion"`
	}
	b, err = os.ReadFile(filepath.Join(chart, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &ch); err != nil {
		t.Fatal(err)
	}
	v := version(t)
	if ch.AppVersion != v {
		t.Errorf("Chart.yaml appVersion %q, VERSION %q", ch.AppVersion, v)
	}
	for _, f := range []string{"deploy/kubernetes/deployment.yaml", "deploy/kubernetes/postgres/deployment.yaml", "deploy/docker-compose.yml"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "image: "+image+":"+v+"\n") {
			t.Errorf("%s does not run %s:%s", f, image, v)
		}
	}
}
