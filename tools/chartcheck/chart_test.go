package chartcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

const (
	root  = "../.."
	chart = root + "/deploy/helm/pipeline-exporter"
)

// tool returns the binary named by the environment variable (set by `make
// test-tools`). CI builds every tool, so there a missing one fails.
func tool(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set: run through `make test-tools`", env)
		}
		t.Skipf("%s is not set: run through `make test-tools`", env)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// objects are the rendered objects of one release, decoded strictly into
// their API types: an unknown or misplaced field fails the test, as the API
// server's strict field validation would reject it.
type objects struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	configMap      *corev1.ConfigMap
	pvc            *corev1.PersistentVolumeClaim
	pdb            *policyv1.PodDisruptionBudget
	serviceAccount *corev1.ServiceAccount
	serviceMonitor *monitoringv1.ServiceMonitor
	rule           *monitoringv1.PrometheusRule
	kinds          []string
}

// decodeAll splits a multi-document YAML stream and decodes each object
// strictly into the type of its kind.
func decodeAll(t *testing.T, stream string) objects {
	t.Helper()
	var o objects
	for _, doc := range strings.Split(stream, "\n---") {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue // a comment-only document
		}
		var target any
		switch meta.Kind {
		case "Deployment":
			o.deployment = &appsv1.Deployment{}
			target = o.deployment
		case "Service":
			o.service = &corev1.Service{}
			target = o.service
		case "ConfigMap":
			o.configMap = &corev1.ConfigMap{}
			target = o.configMap
		case "Secret":
			target = &corev1.Secret{}
		case "PersistentVolumeClaim":
			o.pvc = &corev1.PersistentVolumeClaim{}
			target = o.pvc
		case "PodDisruptionBudget":
			o.pdb = &policyv1.PodDisruptionBudget{}
			target = o.pdb
		case "ServiceAccount":
			o.serviceAccount = &corev1.ServiceAccount{}
			target = o.serviceAccount
		case "ServiceMonitor":
			o.serviceMonitor = &monitoringv1.ServiceMonitor{}
			target = o.serviceMonitor
		case "PrometheusRule":
			o.rule = &monitoringv1.PrometheusRule{}
			target = o.rule
		default:
			t.Fatalf("unexpected kind %q", meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			t.Fatalf("%s does not decode strictly: %v\n%s", meta.Kind, err, doc)
		}
		o.kinds = append(o.kinds, meta.Kind)
	}
	slices.Sort(o.kinds)
	return o
}

func version(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestChartLint runs helm lint --strict on the defaults and on the
// PostgreSQL variant.
func TestChartLint(t *testing.T) {
	helm := tool(t, "HELM")
	for _, args := range [][]string{
		nil,
		{"--set", "replicaCount=2", "--set", "storage.postgres.enabled=true", "--set", "storage.postgres.existingSecret=pg"},
	} {
		out := run(t, helm, append([]string{"lint", "--strict", chart}, args...)...)
		if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
			t.Errorf("helm lint %v:\n%s", args, out)
		}
	}
}

// TestChartRendersSQLite checks the default release: one pod at a time on
// a volume, the released image, probes, security context and scrape config.
func TestChartRendersSQLite(t *testing.T) {
	helm := tool(t, "HELM")
	o := decodeAll(t, run(t, helm, "template", "pe", chart, "--namespace", "monitoring"))
	if want := []string{"ConfigMap", "Deployment", "PersistentVolumeClaim", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"}; !slices.Equal(o.kinds, want) {
		t.Fatalf("kinds = %v, want %v", o.kinds, want)
	}
	d := o.deployment
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("replicas %d strategy %s, want 1 and Recreate", *d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	c := checkPod(t, d)
	if !slices.Contains(c.Args, "--storage.path=/data") {
		t.Errorf("args %v lack --storage.path=/data", c.Args)
	}
	vols := d.Spec.Template.Spec.Volumes
	if i := slices.IndexFunc(vols, func(v corev1.Volume) bool { return v.Name == "data" }); i < 0 ||
		vols[i].PersistentVolumeClaim == nil || vols[i].PersistentVolumeClaim.ClaimName != o.pvc.Name {
		t.Errorf("data volume %+v is not the chart's claim %s", vols, o.pvc.Name)
	}
	checkScrape(t, o)
	checkRules(t, o.rule)
	checkConfig(t, o.configMap)
}

// TestChartRendersPostgres checks the several-instance release: two
// replicas that roll one at a time, a disruption budget, the storage URL
// from a Secret, no volume.
func TestChartRendersPostgres(t *testing.T) {
	helm := tool(t, "HELM")
	o := decodeAll(t, run(t, helm, "template", "pe", chart, "--namespace", "monitoring",
		"--set", "replicaCount=2", "--set", "storage.postgres.enabled=true", "--set", "storage.postgres.existingSecret=pe-storage"))
	if want := []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"}; !slices.Equal(o.kinds, want) {
		t.Fatalf("kinds = %v, want %v", o.kinds, want)
	}
	d := o.deployment
	if *d.Spec.Replicas != 2 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType ||
		d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("replicas %d strategy %+v, want 2 rolling with maxUnavailable 0", *d.Spec.Replicas, d.Spec.Strategy)
	}
	c := checkPod(t, d)
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--storage.path") {
			t.Errorf("PostgreSQL release passes %s", a)
		}
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "PIPELINE_EXPORTER_STORAGE_URL" })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef == nil ||
		c.Env[i].ValueFrom.SecretKeyRef.Name != "pe-storage" || c.Env[i].ValueFrom.SecretKeyRef.Key != "url" {
		t.Errorf("env %+v: want PIPELINE_EXPORTER_STORAGE_URL from secret pe-storage key url", c.Env)
	}
	if o.pdb.Spec.MinAvailable.IntValue() != 1 || !reflect.DeepEqual(o.pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("pdb %+v does not keep one of the deployment's pods", o.pdb.Spec)
	}
	checkScrape(t, o)
}

// TestChartUserConfigReplacesDefault: a values file's config, as YAML or as
// text, is the whole config file: nothing of the chart's default (github:,
// cloudflare:, their tokens) comes back, so it passes the exporter's
// --config.check with only the secret it names.
func TestChartUserConfigReplacesDefault(t *testing.T) {
	helm := tool(t, "HELM")
	const mine = "webhooks:\n  github:\n    secret: ${GITHUB_WEBHOOK_SECRET}\npipelines:\n  - name: blog\n    workflow: publish.yml\n"
	indented := "  " + strings.ReplaceAll(strings.TrimSuffix(mine, "\n"), "\n", "\n  ") + "\n"
	bin := filepath.Join(t.TempDir(), "pipeline_exporter")
	build := exec.Command("go", "build", "-o", bin, "./cmd/pipeline_exporter")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for name, values := range map[string]string{
		"yaml": "config:\n" + indented,
		"text": "config: |\n" + indented,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			vf := filepath.Join(dir, "my-values.yaml")
			if err := os.WriteFile(vf, []byte(values), 0o600); err != nil {
				t.Fatal(err)
			}
			o := decodeAll(t, run(t, helm, "template", "pe", chart, "--namespace", "monitoring", "-f", vf))
			rendered := o.configMap.Data["pipeline_exporter.yml"]
			var got, want any
			if err := yaml.Unmarshal([]byte(rendered), &got); err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal([]byte(mine), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("rendered config:\n%s\nwant the values file's only:\n%s", rendered, mine)
			}
			cfg := filepath.Join(dir, "pipeline_exporter.yml")
			if err := os.WriteFile(cfg, []byte(rendered), 0o600); err != nil {
				t.Fatal(err)
			}
			check := exec.Command(bin, "--config.check", "--config.file="+cfg)
			check.Env = []string{"GITHUB_WEBHOOK_SECRET=s3cret"}
			if out, err := check.CombinedOutput(); err != nil {
				t.Errorf("--config.check of the rendered config: %v\n%s", err, out)
			}
		})
	}
}

// TestChartRefusesSeveralSQLiteWriters: replicaCount > 1 needs PostgreSQL.
func TestChartRefusesSeveralSQLiteWriters(t *testing.T) {
	helm := tool(t, "HELM")
	out, err := exec.Command(helm, "template", "pe", chart, "--set", "replicaCount=2").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "replicaCount > 1 needs storage.postgres.enabled") {
		t.Errorf("replicaCount=2 on SQLite: err %v\n%s", err, out)
	}
}

// checkPod checks what every release's pod must have and returns its
// container.
func checkPod(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	ps := d.Spec.Template.Spec
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers", len(ps.Containers))
	}
	c := ps.Containers[0]
	if want := "ghcr.io/pipeline-exporter/pipeline_exporter:" + version(t); c.Image != want {
		t.Errorf("image %q, want %q (VERSION)", c.Image, want)
	}
	if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil {
		t.Errorf("pod security context %+v: want runAsNonRoot and a seccomp profile", sc)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v", sc)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/-/ready" {
		t.Errorf("readiness probe %+v, want GET /-/ready", p)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want a memory request and limit", c.Resources)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != "pipeline-exporter" {
		t.Errorf("envFrom %+v: want the existing Secret pipeline-exporter", c.EnvFrom)
	}
	return c
}

// checkScrape: the Service selects the pods, the ServiceMonitor scrapes the
// Service's port and sets the job label the alerts match.
func checkScrape(t *testing.T, o objects) {
	t.Helper()
	pod := o.deployment.Spec.Template.Labels
	for k, v := range o.service.Spec.Selector {
		if pod[k] != v {
			t.Errorf("service selector %v does not select pod labels %v", o.service.Spec.Selector, pod)
		}
	}
	for k, v := range o.serviceMonitor.Spec.Selector.MatchLabels {
		if o.service.Labels[k] != v {
			t.Errorf("servicemonitor selector %v does not select service labels %v", o.serviceMonitor.Spec.Selector.MatchLabels, o.service.Labels)
		}
	}
	eps := o.serviceMonitor.Spec.Endpoints
	if len(eps) != 1 || eps[0].Port != o.service.Spec.Ports[0].Name {
		t.Fatalf("servicemonitor endpoints %+v do not scrape port %s", eps, o.service.Spec.Ports[0].Name)
	}
	job := ""
	for _, r := range eps[0].RelabelConfigs {
		if r.TargetLabel == "job" && r.Replacement != nil {
			job = *r.Replacement
		}
	}
	if job != "pipeline_exporter" {
		t.Errorf("servicemonitor sets job=%q, the alerts match job=\"pipeline_exporter\"", job)
	}
}

// checkRules: the PrometheusRule holds exactly the groups of
// alerting-rules/*.rules.yml, the files promtool tests.
func checkRules(t *testing.T, rule *monitoringv1.PrometheusRule) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "alerting-rules", "*.rules.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files: %v", err)
	}
	var want []monitoringv1.RuleGroup
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf struct {
			Groups []monitoringv1.RuleGroup `json:"groups"`
		}
		if err := yaml.UnmarshalStrict(b, &rf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want = append(want, rf.Groups...)
	}
	if !reflect.DeepEqual(rule.Spec.Groups, want) {
		g, _ := json.MarshalIndent(rule.Spec.Groups, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("chart's PrometheusRule differs from alerting-rules/ (run make k8s-rules):\n%s\nwant\n%s", g, w)
	}
}

// checkConfig: the chart's default config is the one deploy/ ships.
func checkConfig(t *testing.T, cm *corev1.ConfigMap) {
	t.Helper()
	var got, want any
	if err := yaml.Unmarshal([]byte(cm.Data["pipeline_exporter.yml"]), &got); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "pipeline_exporter.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("chart's default config differs from deploy/pipeline_exporter.yml:\n%v\nwant\n%v", got, want)
	}
}

// TestKubernetesManifests decodes every object of both kustomizations
// strictly, and checks the variants: one SQLite pod, replaced (never two
// on its ReadWriteOnce volume, even in a rollout), or two PostgreSQL
// replicas rolled one at a time with a disruption budget.
func TestKubernetesManifests(t *testing.T) {
	for _, tc := range []struct {
		dir      string
		replicas int32
		strategy appsv1.DeploymentStrategyType
		kinds    []string
	}{
		{"kubernetes", 1, appsv1.RecreateDeploymentStrategyType, []string{"ConfigMap", "Deployment", "PersistentVolumeClaim", "PrometheusRule", "Secret", "Service", "ServiceMonitor"}},
		{"kubernetes/postgres", 2, appsv1.RollingUpdateDeploymentStrategyType, []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "PrometheusRule", "Secret", "Service", "ServiceMonitor"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			var docs []string
			for _, f := range kustomization(t, filepath.Join(root, "deploy", tc.dir)) {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				docs = append(docs, string(b))
			}
			o := decodeAll(t, strings.Join(docs, "\n---\n"))
			if !slices.Equal(o.kinds, tc.kinds) {
				t.Fatalf("kinds = %v, want %v", o.kinds, tc.kinds)
			}
			if *o.deployment.Spec.Replicas != tc.replicas || o.deployment.Spec.Strategy.Type != tc.strategy {
				t.Errorf("replicas %d, strategy %q; want %d and %q", *o.deployment.Spec.Replicas, o.deployment.Spec.Strategy.Type, tc.replicas, tc.strategy)
			}
			checkPod(t, o.deployment)
			checkScrape(t, o)
			checkRules(t, o.rule)
			if o.pdb != nil && !reflect.DeepEqual(o.pdb.Spec.Selector.MatchLabels, o.deployment.Spec.Selector.MatchLabels) {
				t.Errorf("pdb selector %v, deployment's %v", o.pdb.Spec.Selector.MatchLabels, o.deployment.Spec.Selector.MatchLabels)
			}
		})
	}
}

// kustomization lists the files a kustomization's resources name,
// following directories as kustomize does.
func kustomization(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			out = append(out, kustomization(t, p)...)
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatal(fmt.Sprintf("%s lists no resources", dir))
	}
	return out
}
