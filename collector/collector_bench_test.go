package collector

import (
	"fmt"
	"testing"
)

// BenchmarkCollect measures one scrape (Gather) of n pipelines whose last
// run had 10 job stages, each of which has also been observed once: the
// shape of TestCardinalityBudget. The history's summaries are ready-made,
// so this is the collector's own cost: reading them is the store's job,
// and is measured there. It reports the series and bytes of the text
// exposition and the series a Prometheus with native histograms ingests.
func BenchmarkCollect(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("pipelines=%d", n), func(b *testing.B) {
			reg := orgRegistry(b, n, false)
			mfs, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			text, proto := textExposition(b, mfs), protobufExposition(b, mfs)

			b.ReportAllocs()
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(text.series), "series/scrape")
			b.ReportMetric(float64(text.bytes), "bytes/scrape")
			b.ReportMetric(float64(proto.series), "native-series/scrape")
		})
	}
}
