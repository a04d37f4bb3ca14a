package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// jaegerVersion is the Jaeger all-in-one the tracing test exports to,
// pinned in tools/jaeger/go.mod (a module of its own, so the exporter's
// dependencies stay lean).
const jaegerVersion = "v1.76.0"

// jaegerBinary returns Jaeger built once per machine under the user's cache
// dir, building it when it is missing: that took 525 s on two busy cores
// with a cold build cache (30 s more to download its modules), so CI
// builds it before the tests. CI must have it; elsewhere a failed build
// skips.
func jaegerBinary(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(cache, "pipeline_exporter", "jaeger", "jaeger-"+jaegerVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	start := time.Now()
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/jaegertracing/jaeger/cmd/jaeger")
	cmd.Dir = filepath.Join("..", "tools", "jaeger")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("building Jaeger: %v\n%s", err, out)
		}
		t.Skipf("building Jaeger: %v\n%s", err, out)
	}
	t.Logf("built Jaeger %s in %v", jaegerVersion, time.Since(start).Round(time.Second))
	return bin
}

// startJaeger runs Jaeger on loopback with free ports, traces in memory,
// and returns its OTLP/gRPC address and its query API's URL.
func startJaeger(t *testing.T) (otlp, query string) {
	t.Helper()
	bin := jaegerBinary(t)
	otlp, otlpHTTP, query, queryGRPC := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	config := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics: { level: none }
extensions:
  jaeger_query:
    storage: { traces: memstore }
    http: { endpoint: %q }
    grpc: { endpoint: %q }
  jaeger_storage:
    backends:
      memstore:
        memory: { max_traces: 1000 }
receivers:
  otlp:
    protocols:
      grpc: { endpoint: %q }
      http: { endpoint: %q }
processors:
  batch: { timeout: 100ms }
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, query, queryGRPC, otlp, otlpHTTP), 0o600); err != nil {
		t.Fatal(err)
	}
	stackStart(t, "http://"+query+"/api/services", bin, "--config="+config)
	return otlp, "http://" + query
}

// jaegerTrace is the part of Jaeger's query API answer the test reads.
type jaegerTrace struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			StartTime     int64  `json:"startTime"` // microseconds
			Duration      int64  `json:"duration"`
			References    []struct {
				RefType string `json:"refType"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			Tags []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"tags"`
		} `json:"spans"`
	} `json:"data"`
}

// TestRunTraceInJaeger exports a finished run to a real Jaeger and finds
// it through Jaeger's query API: the trace id GitHub's receiver would give
// the workflow run, the run's span, and one child span per stage with the
// stage's times and the CI/CD attributes.
func TestRunTraceInJaeger(t *testing.T) {
	otlp, query := startJaeger(t)
	cfg := writeConfig(t, coreConfig+`
tracing:
  endpoint: `+otlp+`
  insecure: true
`)
	e := startExporter(t, cfg, filepath.Join(t.TempDir(), "data"), "--storage.retention=0")
	for _, d := range exampleRun(t, exampleRunID, "success") {
		e.mustPost(d, http.StatusAccepted)
	}
	runs := e.allRuns("")
	if len(runs) != 1 || runs[0].Status != "success" {
		t.Fatalf("runs = %+v", runs)
	}
	var api struct {
		Data struct {
			ID     int64 `json:"id"`
			Stages []struct {
				Name       string    `json:"name"`
				StartedAt  time.Time `json:"started_at"`
				FinishedAt time.Time `json:"finished_at"`
			} `json:"stages"`
		} `json:"data"`
	}
	e.get(fmt.Sprintf("/api/pipeline-runs/%d", runs[0].ID)).decode(t, &api)

	// OpenTelemetry's GitHub receiver: the first 16 bytes of SHA-256 over
	// run id, attempt and "t".
	sum := sha256.Sum256(fmt.Appendf(nil, "%d%dt", exampleRunID, 1))
	traceID := hex.EncodeToString(sum[:16])

	var tr jaegerTrace
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(query + "/api/traces/" + traceID)
		if err == nil {
			if resp.StatusCode == http.StatusOK {
				err = json.NewDecoder(resp.Body).Decode(&tr)
			}
			resp.Body.Close()
		}
		if err == nil && len(tr.Data) == 1 && len(tr.Data[0].Spans) == len(api.Data.Stages)+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s not in Jaeger after 20s (last: %+v, err %v)", traceID, tr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	spans := tr.Data[0].Spans
	tags := func(i int) map[string]any {
		m := map[string]any{}
		for _, kv := range spans[i].Tags {
			m[kv.Key] = kv.Value
		}
		return m
	}
	rootID := ""
	byName := map[string]int{}
	for i, s := range spans {
		byName[s.OperationName] = i
		if len(s.References) == 0 {
			rootID = s.SpanID
		}
	}
	root, ok := byName["site"]
	if !ok || spans[root].SpanID != rootID {
		t.Fatalf("no root span for the pipeline: %+v", spans)
	}
	runIDTag := fmt.Sprint(api.Data.ID)
	if m := tags(root); m["cicd.pipeline.name"] != "site" || m["cicd.pipeline.run.id"] != runIDTag || m["cicd.pipeline.result"] != "success" {
		t.Errorf("run span tags = %v", m)
	}
	for _, st := range api.Data.Stages {
		i, ok := byName[st.Name]
		if !ok {
			t.Errorf("no span for stage %s", st.Name)
			continue
		}
		s := spans[i]
		if len(s.References) != 1 || s.References[0].RefType != "CHILD_OF" || s.References[0].SpanID != rootID {
			t.Errorf("stage %s span is not a child of the run: %+v", st.Name, s.References)
		}
		if s.StartTime != st.StartedAt.UnixMicro() || s.StartTime+s.Duration != st.FinishedAt.UnixMicro() {
			t.Errorf("stage %s span %d+%dµs, want %v..%v", st.Name, s.StartTime, s.Duration, st.StartedAt, st.FinishedAt)
		}
		if m := tags(i); m["cicd.pipeline.task.name"] != st.Name || m["cicd.pipeline.name"] != "site" || m["cicd.pipeline.run.id"] != runIDTag {
			t.Errorf("stage %s tags = %v", st.Name, m)
		}
	}
}
