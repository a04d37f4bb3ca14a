package tracing

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func at(sec int) *time.Time {
	t := t0.Add(time.Duration(sec) * time.Second)
	return &t
}

func finishedRun(id int64, gh bool) *pipeline.Run {
	r := &pipeline.Run{
		ID: id, Pipeline: "site", Status: pipeline.StatusFailed, Error: "verify failed",
		Trigger:   pipeline.Trigger{Source: pipeline.SourceSupabase, Event: "INSERT", ReceivedAt: t0},
		CreatedAt: t0, FinishedAt: at(161), DurationSeconds: 161,
		Stages: []pipeline.Stage{
			{Name: "trigger", Status: pipeline.StatusSuccess, StartedAt: at(0), FinishedAt: at(0)},
			{Name: "dispatch", Status: pipeline.StatusSuccess, StartedAt: at(0), FinishedAt: at(20)},
			{Name: "build", Status: pipeline.StatusSuccess, StartedAt: at(25), FinishedAt: at(95), JobID: 399444496,
				URL: "https://github.com/acme/site/actions/runs/30433642/job/399444496"},
			{Name: "lint", Status: pipeline.StatusSkipped},
			{Name: "pages", Status: pipeline.StatusSuccess, StartedAt: at(100), FinishedAt: at(160)},
			{Name: "verify", Status: pipeline.StatusFailed, StartedAt: at(160), FinishedAt: at(161), Error: "status 503, want 200"},
		},
	}
	if gh {
		r.GitHub = &pipeline.GitHubRun{Repository: "acme/site", RunID: 30433642, RunAttempt: 1, HeadBranch: "main",
			HeadSHA: "acb5820ced9479c074f688cc328bf03f341a511d"}
	}
	return r
}

func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

func waitSpans(t *testing.T, mem *tracetest.InMemoryExporter, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if spans := mem.GetSpans().Snapshots(); len(spans) >= n {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spans exported, want %d", len(mem.GetSpans()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunTrace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		github  bool
		traceID string
	}{
		// OpenTelemetry's GitHub receiver: SHA-256 of "304336421t", first 16 bytes.
		{"github run", true, "33e6ff79db4104e978934caaa71135dc"},
		// SHA-256 of "pipeline_exporter run 7".
		{"no github run", false, "9beda87f35a25014cf1e60113ca89c4a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := tracetest.NewInMemoryExporter()
			e, err := newExporter(t.Context(), mem, Options{PageURL: func(id int64) string { return "https://ops.example.com/runs/7" }})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Shutdown(context.Background())
			e.Observe(pipeline.Update{Run: finishedRun(7, tc.github)}) // not finished: nothing
			e.Observe(pipeline.Update{Run: finishedRun(7, tc.github), Finished: true})
			spans := waitSpans(t, mem, 6)
			if len(spans) != 6 {
				t.Fatalf("%d spans, want the run and its 5 started stages", len(spans))
			}
			byName := map[string]sdktrace.ReadOnlySpan{}
			for _, s := range spans {
				if got := s.SpanContext().TraceID().String(); got != tc.traceID {
					t.Errorf("span %s trace id = %s, want %s", s.Name(), got, tc.traceID)
				}
				byName[s.Name()] = s
			}
			root := byName["site"]
			if root == nil || root.Parent().IsValid() {
				t.Fatalf("no root span named after the pipeline: %v", byName)
			}
			if !root.StartTime().Equal(t0) || !root.EndTime().Equal(*at(161)) || root.Status().Code != codes.Error {
				t.Errorf("root span %v..%v %v", root.StartTime(), root.EndTime(), root.Status())
			}
			ra := attrs(root)
			for k, v := range map[string]string{
				"cicd.pipeline.name": "site", "cicd.pipeline.run.id": "7", "cicd.pipeline.result": "failure",
				"cicd.pipeline.run.url.full": "https://ops.example.com/runs/7", "pipeline.trigger.source": "supabase",
			} {
				if ra[k] != v {
					t.Errorf("root %s = %q, want %q", k, ra[k], v)
				}
			}
			if _, ok := ra["vcs.repository.name"]; !tc.github && ok {
				t.Errorf("root has VCS attributes without a GitHub run: %v", ra)
			}
			if tc.github && (ra["vcs.ref.head.revision"] != "acb5820ced9479c074f688cc328bf03f341a511d" || ra["github.run.id"] != "30433642") {
				t.Errorf("root attributes = %v", ra)
			}
			for _, name := range []string{"trigger", "dispatch", "build", "pages", "verify"} {
				s := byName[name]
				if s == nil {
					t.Fatalf("no span for stage %s", name)
				}
				if s.Parent().SpanID() != root.SpanContext().SpanID() {
					t.Errorf("stage %s is not a child of the run", name)
				}
				if a := attrs(s); a["cicd.pipeline.task.name"] != name || a["cicd.pipeline.name"] != "site" {
					t.Errorf("stage %s attributes = %v", name, a)
				}
			}
			b := byName["build"]
			if !b.StartTime().Equal(*at(25)) || !b.EndTime().Equal(*at(95)) {
				t.Errorf("build span %v..%v", b.StartTime(), b.EndTime())
			}
			if a := attrs(b); a["cicd.pipeline.task.run.id"] != "399444496" || a["cicd.pipeline.task.run.result"] != "success" ||
				!strings.HasSuffix(a["cicd.pipeline.task.run.url.full"], "/job/399444496") {
				t.Errorf("build attributes = %v", a)
			}
			if v := byName["verify"]; v.Status().Code != codes.Error || v.Status().Description != "status 503, want 200" {
				t.Errorf("verify status = %v", v.Status())
			}
			if a := attrs(byName["pages"]); a["cicd.pipeline.task.type"] != "deploy" {
				t.Errorf("pages attributes = %v", a)
			}

			// Exporting the same run again gives the same ids.
			mem.Reset()
			e.Observe(pipeline.Update{Run: finishedRun(7, tc.github), Finished: true})
			again := waitSpans(t, mem, 6)
			for _, s := range again {
				if s.SpanContext().SpanID() != byName[s.Name()].SpanContext().SpanID() {
					t.Errorf("span %s changed id on re-export", s.Name())
				}
			}
			if e.exported == nil || testutil.ToFloat64(e.exported) != 12 {
				t.Errorf("exported = %v, want 12", testutil.ToFloat64(e.exported))
			}
		})
	}
}

// stuckExporter takes no spans until released, like a collector that
// hangs.
type stuckExporter struct {
	release chan struct{}
	once    sync.Once
}

func (s *stuckExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stuckExporter) Shutdown(context.Context) error {
	s.once.Do(func() { close(s.release) })
	return nil
}

// TestQueueFull checks that a collector that does not answer never slows
// the caller: runs past the queue are dropped and their spans counted.
func TestQueueFull(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	stuck := &stuckExporter{release: make(chan struct{})}
	e, err := newExporter(t.Context(), stuck, Options{QueueSize: 2, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.Observe(pipeline.Update{Run: finishedRun(1, true), Finished: true})
	// Let the export goroutine take the first run and hang on it.
	deadline := time.Now().Add(5 * time.Second)
	for len(e.queue) != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for id := int64(2); id <= 6; id++ {
		e.Observe(pipeline.Update{Run: finishedRun(id, true), Finished: true})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Observe took %v with the collector stuck", d)
	}
	// One run in flight, two queued, three dropped: 6 spans each.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP pipeline_exporter_trace_spans_dropped_total Spans of finished runs not sent, because the export queue was full or the collector did not take them.
# TYPE pipeline_exporter_trace_spans_dropped_total counter
pipeline_exporter_trace_spans_dropped_total{reason="export_failed"} 0
pipeline_exporter_trace_spans_dropped_total{reason="queue_full"} 18
`), "pipeline_exporter_trace_spans_dropped_total"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stuck.Shutdown(ctx)
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.exported); got != 18 {
		t.Fatalf("exported after shutdown = %v, want the 3 runs taken in (18 spans)", got)
	}
}

// TestCollectorDown checks the real OTLP exporter against a port nobody
// listens on: Observe stays fast and the failed export is counted.
func TestCollectorDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
	e, err := New(t.Context(), Options{Endpoint: addr, Insecure: true, QueueSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for id := int64(1); id <= 1000; id++ {
		e.Observe(pipeline.Update{Run: finishedRun(id, false), Finished: true})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("1000 Observe calls took %v with the collector down", d)
	}
	if got := testutil.ToFloat64(e.dropped.WithLabelValues("queue_full")); got < 900*6 {
		t.Fatalf("queue_full drops = %v, want most of 6000 spans", got)
	}
	deadline := time.Now().Add(20 * time.Second)
	for testutil.ToFloat64(e.dropped.WithLabelValues("export_failed")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no failed export counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = e.Shutdown(ctx)
}

func TestEnabled(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	if Enabled("") {
		t.Error("enabled with nothing configured")
	}
	if !Enabled("localhost:4317") {
		t.Error("not enabled by an endpoint")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://localhost:4317")
	if !Enabled("") {
		t.Error("not enabled by OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	}
}
