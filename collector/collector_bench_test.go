package collector

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// BenchmarkCollect measures one scrape (Gather) of n pipelines whose last
// run had 10 stages, each of which has also been observed once. The
// history's summaries are ready-made, so this is the collector's own cost:
// reading them is the store's job, and is measured there. It reports the
// size of the text exposition as bytes/scrape.
func BenchmarkCollect(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("pipelines=%d", n), func(b *testing.B) {
			cfg := &fakeConfig{}
			hist := &fakeHistory{}
			specs := make([]pipeline.Spec, n)
			sums := make([]pipeline.PipelineSummary, n)
			for i := range specs {
				specs[i] = siteSpec
				specs[i].Name = fmt.Sprintf("pipeline-%d", i)
				stages := make([]pipeline.Stage, 10)
				for j := range stages {
					stages[j] = stage(fmt.Sprintf("job-%d", j), pipeline.StatusSuccess, t0, t0.Add(time.Minute))
					stages[j].JobID = int64(j + 1)
				}
				run := finishedRun(int64(i+1), specs[i].Name, pipeline.StatusSuccess, pipeline.SourceSupabase, t0, stages...)
				sums[i] = pipeline.PipelineSummary{Pipeline: specs[i].Name, InProgress: 1, LastFinished: run, LastSuccess: run}
			}
			cfg.set(specs...)
			hist.set(sums...)
			c := newCollector(b, cfg, hist, fakeStats{runs: 1_000_000})
			for _, s := range sums {
				c.Observe(pipeline.Update{Run: s.LastFinished, Finished: true, StagesFinished: s.LastFinished.Stages})
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)

			mfs, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			size := 0
			for _, mf := range mfs {
				n, err := expfmt.MetricFamilyToText(io.Discard, mf)
				if err != nil {
					b.Fatal(err)
				}
				size += n
			}

			b.ReportAllocs()
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
}
