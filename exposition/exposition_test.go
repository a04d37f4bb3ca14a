package exposition

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// pipelines stands for a large collector: families of gauges, counters and
// native histograms with many series each, sent one family after another.
type pipelines struct {
	gauge, status *prometheus.Desc
	runs          *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	// interleave sends the two gauge families' series in turn, which the
	// handler refuses.
	interleave bool
}

func newPipelines(n int) *pipelines {
	p := &pipelines{
		gauge:  prometheus.NewDesc("pipeline_runs_in_progress", "Runs in progress.", []string{"pipeline"}, nil),
		status: prometheus.NewDesc("pipeline_last_run_status", "Last run's status.", []string{"pipeline", "status"}, nil),
		runs:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipeline_runs_total", Help: "Runs."}, []string{"pipeline"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pipeline_run_duration_seconds", Help: "Run durations.",
			Buckets: []float64{60, 600}, NativeHistogramBucketFactor: 1.1}, []string{"pipeline"}),
	}
	for i := range n {
		name := fmt.Sprintf("pipeline-%d", i)
		p.runs.WithLabelValues(name).Add(float64(i))
		p.duration.WithLabelValues(name).Observe(float64(30 * i))
	}
	return p
}

func (p *pipelines) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.gauge
	ch <- p.status
	p.runs.Describe(ch)
	p.duration.Describe(ch)
}

func (p *pipelines) Collect(ch chan<- prometheus.Metric) {
	p.runs.Collect(ch)
	p.duration.Collect(ch)
	n := 50
	for i := range n {
		ch <- prometheus.MustNewConstMetric(p.gauge, prometheus.GaugeValue, float64(i%3), fmt.Sprintf("pipeline-%d", i))
		if p.interleave {
			ch <- prometheus.MustNewConstMetric(p.status, prometheus.GaugeValue, 1, fmt.Sprintf("pipeline-%d", i), "success")
		}
	}
	if !p.interleave {
		for i := range n {
			ch <- prometheus.MustNewConstMetric(p.status, prometheus.GaugeValue, 1, fmt.Sprintf("pipeline-%d", i), "success")
		}
	}
}

// exporter returns the registry of the exporter's own metrics and the
// handler serving them with p streamed.
func exporter(t *testing.T, p prometheus.Collector) (*prometheus.Registry, http.Handler) {
	t.Helper()
	reg := prometheus.NewRegistry()
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pipeline_exporter_leader", Help: "Leads."})
	up.Set(1)
	reg.MustRegister(up)
	h := Handler(Options{Gatherer: reg, Streamed: []prometheus.Collector{p}, Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	return reg, h
}

func scrape(t *testing.T, h http.Handler, accept, encoding string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if encoding != "" {
		req.Header.Set("Accept-Encoding", encoding)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

// families decodes a response body in its format, by family name, and
// fails on a family that comes twice.
func families(t *testing.T, resp *http.Response) map[string]*dto.MetricFamily {
	t.Helper()
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = gz
	}
	dec := expfmt.NewDecoder(body, expfmt.ResponseFormat(resp.Header))
	out := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		if out[mf.GetName()] != nil {
			t.Fatalf("family %s written twice", mf.GetName())
		}
		out[mf.GetName()] = mf
	}
}

// TestHandlerServesWhatPromhttpServes compares the handler with promhttp's
// serving the same metrics from one registry, family by family, in each
// format a scraper asks for.
func TestHandlerServesWhatPromhttpServes(t *testing.T) {
	p := newPipelines(200)
	reg, h := exporter(t, p)
	whole := prometheus.NewRegistry()
	whole.MustRegister(p)
	want := promhttp.HandlerFor(prometheus.Gatherers{reg, whole}, promhttp.HandlerOpts{EnableOpenMetrics: true})
	for _, tc := range []struct{ name, accept, contentType string }{
		{"text", "text/plain;version=0.0.4", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"},
		{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=underscores"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := scrape(t, h, tc.accept, "")
			if ct := got.Header.Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type %q, want %q", ct, tc.contentType)
			}
			gotFamilies, wantFamilies := families(t, got), families(t, scrape(t, want, tc.accept, ""))
			if len(gotFamilies) != len(wantFamilies) {
				t.Errorf("%d families, want %d", len(gotFamilies), len(wantFamilies))
			}
			for name, w := range wantFamilies {
				for _, m := range w.GetMetric() {
					if hg := m.GetHistogram(); hg != nil {
						hg.CreatedTimestamp = nil
					}
					if c := m.GetCounter(); c != nil {
						c.CreatedTimestamp = nil
					}
				}
				g := gotFamilies[name]
				for _, m := range g.GetMetric() {
					if hg := m.GetHistogram(); hg != nil {
						hg.CreatedTimestamp = nil
					}
					if c := m.GetCounter(); c != nil {
						c.CreatedTimestamp = nil
					}
				}
				if !proto.Equal(g, w) {
					t.Errorf("family %s differs:\n got %v\nwant %v", name, g, w)
				}
			}
			if hist := gotFamilies["pipeline_run_duration_seconds"].GetMetric()[0].GetHistogram(); tc.name == "protobuf" && hist.GetSchema() != 3 {
				t.Errorf("protobuf: run durations have no native histogram: %v", hist)
			}
		})
	}
}

func TestHandlerOpenMetricsEndsWithEOF(t *testing.T) {
	_, h := exporter(t, newPipelines(3))
	resp := scrape(t, h, "application/openmetrics-text;version=1.0.0", "")
	body, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/openmetrics-text; version=1.0.0") {
		t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	if !bytes.HasSuffix(body, []byte("# EOF\n")) || bytes.Count(body, []byte("# EOF")) != 1 {
		t.Errorf("body does not end with one # EOF:\n%s", body)
	}
	if !bytes.Contains(body, []byte(`pipeline_last_run_status{pipeline="pipeline-2",status="success"} 1`)) {
		t.Errorf("streamed family missing:\n%s", body)
	}
}

func TestHandlerCompresses(t *testing.T) {
	_, h := exporter(t, newPipelines(3))
	for _, tc := range []struct {
		acceptEncoding string
		gzip           bool
	}{
		{"gzip", true},
		{"gzip, deflate, br", true},
		{"br;q=1.0, gzip;q=0.8", true},
		{"*", true},
		{"gzip;q=0", false},
		{"gzip; q=0.000", false},
		{"gzip ;q=0.5", true},
		{"*;q=0.5, gzip;q=0", false},
		{"gzip;q=0, *", false},
		{"identity, *;q=0", false},
		{"gzip;q=nonsense", false},
		{"deflate", false},
		{"", false},
	} {
		resp := scrape(t, h, "", tc.acceptEncoding)
		if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tc.gzip {
			t.Errorf("Accept-Encoding %q: gzip %v, want %v", tc.acceptEncoding, got, tc.gzip)
		}
		if len(families(t, resp)) < 4 {
			t.Errorf("Accept-Encoding %q: families missing", tc.acceptEncoding)
		}
	}
}

// TestHandlerRefusesAFamilySentTwice: a collector that interleaves two
// families would make an exposition with a family twice, which Prometheus
// refuses whole; the handler stops there and counts an encoding error.
func TestHandlerRefusesAFamilySentTwice(t *testing.T) {
	p := newPipelines(3)
	p.interleave = true
	reg, h := exporter(t, p)
	resp := scrape(t, h, "text/plain;version=0.0.4", "")
	body, _ := io.ReadAll(resp.Body)
	if n := bytes.Count(body, []byte("# TYPE pipeline_runs_in_progress gauge")); n != 1 {
		t.Errorf("pipeline_runs_in_progress written %d times:\n%s", n, body)
	}
	if got := errorsCounted(t, reg, "encoding"); got != 1 {
		t.Errorf("encoding errors %g, want 1", got)
	}
}

// errorsCounted returns promhttp_metric_handler_errors_total{cause}.
func errorsCounted(t *testing.T, reg *prometheus.Registry, cause string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "promhttp_metric_handler_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == cause {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no promhttp_metric_handler_errors_total{cause=%q}", cause)
	return 0
}
