package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const root = "../../.."

// TestGeneratedFilesAreCurrent fails when a rule file or the config changed
// and the Kubernetes manifests were not regenerated.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	ms, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		got, err := os.ReadFile(filepath.Join(root, m.path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, m.content) {
			t.Errorf("%s is stale: run `go run ./deploy/kubernetes/gen` (make k8s-rules) and commit it", m.path)
		}
	}
}

// TestPrometheusRuleKeepsEveryRule decodes both sides: the generated
// resource must hold exactly the groups of the rule files, whatever
// re-encoding did to their layout.
func TestPrometheusRuleKeepsEveryRule(t *testing.T) {
	ms, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Groups []any `yaml:"groups"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(ms[0].content, &res); err != nil {
		t.Fatal(err)
	}
	if res.Kind != "PrometheusRule" {
		t.Fatalf("kind = %q", res.Kind)
	}
	files, _ := filepath.Glob(filepath.Join(root, "alerting-rules", "*.rules.yml"))
	var want []any
	for _, f := range files {
		var rf struct {
			Groups []any `yaml:"groups"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			t.Fatal(err)
		}
		want = append(want, rf.Groups...)
	}
	if len(want) == 0 || !reflect.DeepEqual(res.Spec.Groups, want) {
		t.Errorf("PrometheusRule groups differ from alerting-rules/*.rules.yml:\ngot  %v\nwant %v", res.Spec.Groups, want)
	}
}

// TestConfigMapHoldsTheConfig checks the config survives the block scalar
// byte for byte.
func TestConfigMapHoldsTheConfig(t *testing.T) {
	ms, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(ms[1].content, &cm); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(root, "deploy", "pipeline_exporter.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["pipeline_exporter.yml"]; got != string(want) {
		t.Errorf("ConfigMap data differs from deploy/pipeline_exporter.yml:\n%s", got)
	}
}

// TestChangelogNamesVersion: the newest CHANGELOG entry is the release
// VERSION names (released or not), so that the image, the chart and the
// release tag built from VERSION carry what the CHANGELOG lists.
func TestChangelogNamesVersion(t *testing.T) {
	v, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(filepath.Join(root, "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	heading, _, _ := strings.Cut(string(log), "\n")
	if want := "## " + strings.TrimSpace(string(v)) + " / "; !strings.HasPrefix(heading, want) {
		t.Errorf("CHANGELOG.md starts %q, VERSION says %q: bump VERSION with the CHANGELOG's new section, then make k8s-rules", heading, want)
	}
}
