package collector

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// orgRegistry returns a registry holding a collector of n pipelines whose
// last run, successful and observed once, had 10 job stages and verified
// its build live (a lead time observed, the live-build gauges present),
// with a run in progress each: the shape of the cardinality budget
// (README, "Many repositories") for a team that uses verify.build.
func orgRegistry(tb testing.TB, n int, stageBuckets bool) *prometheus.Registry {
	tb.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(orgCollector(tb, n, stageBuckets))
	return reg
}

// orgCollector returns the collector of orgRegistry.
func orgCollector(tb testing.TB, n int, stageBuckets bool) *Collector {
	tb.Helper()
	cfg := &fakeConfig{}
	hist := &fakeHistory{}
	specs := make([]pipeline.Spec, n)
	sums := make([]pipeline.PipelineSummary, n)
	for i := range specs {
		specs[i] = siteSpec
		specs[i].Name = fmt.Sprintf("pipeline-%d", i)
		stages := make([]pipeline.Stage, 10)
		for j := range stages {
			stages[j] = stage(fmt.Sprintf("job-%d", j), pipeline.StatusSuccess, t0, t0.Add(time.Duration(j+1)*time.Minute))
			stages[j].JobID = int64(j + 1)
			stages[j].QueuedSeconds = float64(j + 3)
		}
		run := finishedRun(int64(i+1), specs[i].Name, pipeline.StatusSuccess, pipeline.SourceSupabase, t0, stages...)
		commitAt, verifiedAt := t0.Add(-time.Hour), run.FinishedAt.Add(time.Minute)
		run.GitHub = &pipeline.GitHubRun{RunID: int64(i + 1), RunAttempt: 1, HeadSHA: "5d6e7f8a9b0c1d2e3f405162738495a6b7c8d9e0", HeadCommitAt: &commitAt}
		run.Verify = &pipeline.VerifyCheck{URL: "https://example.com/", Build: run.GitHub.HeadSHA, VerifiedAt: &verifiedAt, CheckedAt: verifiedAt.Add(5 * time.Minute)}
		sums[i] = pipeline.PipelineSummary{Pipeline: specs[i].Name, InProgress: 1, LastFinished: run, LastSuccess: run}
	}
	cfg.set(specs...)
	hist.set(sums...)
	c, err := New(Options{Specs: cfg.Specs, History: hist, Stats: fakeStats{runs: 1_000_000}, StageBuckets: stageBuckets})
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range sums {
		c.Observe(pipeline.Update{Run: s.LastFinished, Finished: true, StagesFinished: s.LastFinished.Stages})
	}
	return c
}

// exposition is what one scrape of a registry costs in one format.
type exposition struct {
	series, bytes int
}

// textExposition counts the series and bytes of the text format, what a
// Prometheus without native histograms scrapes: one series per sample line.
func textExposition(tb testing.TB, mfs []*dto.MetricFamily) exposition {
	tb.Helper()
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			tb.Fatal(err)
		}
	}
	series := 0
	for line := range bytes.Lines(buf.Bytes()) {
		if line[0] != '#' {
			series++
		}
	}
	return exposition{series: series, bytes: buf.Len()}
}

// protobufExposition counts the series a Prometheus with native histograms
// on makes of the protobuf format it negotiates: one per counter or gauge,
// one per native histogram (Prometheus 2.42 then ignores its classic
// buckets), and _sum, _count and one per bucket (+Inf included) of a
// histogram without native buckets. bytes is the size of the delimited
// protobuf exposition, before compression, with every created timestamp
// set to one of the longest encodings, since the real ones are the clock's
// and vary in length.
func protobufExposition(tb testing.TB, mfs []*dto.MetricFamily) exposition {
	tb.Helper()
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
	created := timestamppb.New(t0.Add(999_999_999))
	series := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil && c.CreatedTimestamp != nil {
				c.CreatedTimestamp = created
			}
			h := m.GetHistogram()
			if h != nil && h.CreatedTimestamp != nil {
				h.CreatedTimestamp = created
			}
			switch {
			case h == nil:
				series++
			case h.Schema != nil:
				series++
			default:
				series += 2 + len(h.GetBucket()) + 1
			}
		}
		if err := enc.Encode(mf); err != nil {
			tb.Fatal(err)
		}
	}
	return exposition{series: series, bytes: buf.Len()}
}

// TestCardinalityBudget holds the cost of one scrape at 1,000 pipelines of
// 10 jobs each to the budget: at most 125,000 series and 10 MB of text for
// a Prometheus without native histograms, at most 70,000 series for one
// with them. The exact counts are kept so that any change shows here.
func TestCardinalityBudget(t *testing.T) {
	const (
		maxTextSeries   = 125_000
		maxTextBytes    = 10_000_000
		maxNativeSeries = 70_000
	)
	tests := []struct {
		name         string
		pipelines    int
		stageBuckets bool
		text, proto  exposition
		budget       bool
	}{
		{name: "1 pipeline", pipelines: 1,
			text: exposition{series: 127, bytes: 13399}, proto: exposition{series: 67, bytes: 7409}},
		{name: "1000 pipelines, default flags", pipelines: 1000, budget: true,
			text: exposition{series: 123004, bytes: 9930175}, proto: exposition{series: 63004, bytes: 4900719}},
		// Classic buckets per stage: 11 more text series for each stage
		// histogram, 9 for verify; nothing more for a Prometheus with
		// native histograms.
		{name: "100 pipelines, --metrics.stage-buckets", pipelines: 100, stageBuckets: true,
			text: exposition{series: 33104, bytes: 2771795}, proto: exposition{series: 6304, bytes: 760808}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mfs, err := orgRegistry(t, tc.pipelines, tc.stageBuckets).Gather()
			if err != nil {
				t.Fatal(err)
			}
			text, proto := textExposition(t, mfs), protobufExposition(t, mfs)
			if text != tc.text {
				t.Errorf("text exposition: %d series, %d bytes; want %d, %d", text.series, text.bytes, tc.text.series, tc.text.bytes)
			}
			if proto != tc.proto {
				t.Errorf("protobuf exposition: %d series, %d bytes; want %d, %d", proto.series, proto.bytes, tc.proto.series, tc.proto.bytes)
			}
			if tc.budget && (text.series > maxTextSeries || text.bytes > maxTextBytes || proto.series > maxNativeSeries) {
				t.Errorf("over budget: text %d series (max %d), %d bytes (max %d); native %d series (max %d)",
					text.series, maxTextSeries, text.bytes, maxTextBytes, proto.series, maxNativeSeries)
			}
			// Sparse one-hot gauges: one series of value 1 per pipeline
			// and per stage of its last run, none at 0.
			for _, mf := range mfs {
				name := mf.GetName()
				want := map[string]int{"pipeline_last_run_status": tc.pipelines, "pipeline_last_stage_status": 10 * tc.pipelines}[name]
				if want == 0 {
					continue
				}
				if len(mf.GetMetric()) != want {
					t.Errorf("%s: %d series, want %d", name, len(mf.GetMetric()), want)
				}
				for _, m := range mf.GetMetric() {
					if v := m.GetGauge().GetValue(); v != 1 {
						t.Errorf("%s %v = %g, want only series of value 1", name, m.GetLabel(), v)
						break
					}
				}
			}
		})
	}
}
