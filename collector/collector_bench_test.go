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
// run had 10 stages, each of which has also been observed once. It reports
// the size of the text exposition as bytes/scrape.
func BenchmarkCollect(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("pipelines=%d", n), func(b *testing.B) {
			src := &fakeSource{}
			c := New(src, fakeStats{runs: 1_000_000})
			t0 := time.Date(2021, 8, 5, 10, 33, 40, 0, time.UTC)
			states := make([]pipeline.PipelineState, n)
			for i := range states {
				spec := siteSpec
				spec.Name = fmt.Sprintf("pipeline-%d", i)
				stages := make([]pipeline.Stage, 10)
				for j := range stages {
					stages[j] = stage(fmt.Sprintf("job-%d", j), pipeline.StatusSuccess, t0, t0.Add(time.Minute))
					stages[j].JobID = int64(j + 1)
				}
				run := finishedRun(int64(i+1), spec.Name, pipeline.StatusSuccess, pipeline.SourceSupabase, t0, stages...)
				states[i] = pipeline.PipelineState{Spec: spec, InProgress: 1, LastFinished: run, LastSuccess: run}
			}
			src.set(states...)
			for _, st := range states {
				c.Observe(pipeline.Update{Run: st.LastFinished, Finished: true, StagesFinished: st.LastFinished.Stages})
				c.ObserveVerify(st.Spec.Name, 0.2)
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
