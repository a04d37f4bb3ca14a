package collector

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// TestHistogramMatchesClientGolang feeds the same observations to a
// histogram of this package and to client_golang's histogram with the
// options DurationHistogramOpts gives, and wants the same samples from
// both: count, sum, classic buckets, schema, zero bucket, spans and deltas.
func TestHistogramMatchesClientGolang(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var boundaries []float64
	for s := 1; s <= nativeSchema; s++ {
		for _, b := range nativeBounds[s] {
			boundaries = append(boundaries, b, 2*b, 1024*b, b/8)
		}
	}
	tests := []struct {
		name   string
		bounds []float64
		values []float64
		// coarser says the values span more than nativeMaxBuckets
		// buckets of schema 3, so that the resolution must be halved.
		coarser bool
	}{
		{name: "no observation", bounds: nil},
		{name: "no observation, classic buckets", bounds: runBuckets},
		{name: "one stage", values: []float64{42}},
		{name: "run durations", bounds: runBuckets, values: []float64{4, 5, 5.000001, 59, 600, 21600, 21601, 1e6}},
		{name: "lead times", bounds: leadBuckets, values: []float64{1200, 1200, 172800, 172800, 172800, 86400, 604800}},
		{name: "powers of two", values: []float64{0.125, 0.25, 0.5, 1, 2, 4, 8, 1024, 1 << 20}},
		{name: "bucket boundaries", values: boundaries},
		{name: "zero, tiny, negative", bounds: stageBuckets, values: []float64{0, 1e-300, -1e-300, -1, -3.5, -1000, 0.5}},
		{name: "infinities and NaN", bounds: verifyBuckets, values: []float64{math.Inf(1), math.Inf(-1), math.NaN(), 1}},
		{name: "gaps of one, two and three buckets", values: []float64{1, 1.19, 1.42, 1.69, 2.4, 2.9}},
		{name: "wide range: resolution halved", bounds: runBuckets, values: spread(rng, 2000, 1e-3, 1e7), coarser: true},
		{name: "everything: lowest resolution", values: spread(rng, 5000, 1e-30, 1e30), coarser: true},
		{name: "negative wide range", values: negate(spread(rng, 1000, 1e-6, 1e9)), coarser: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			desc := prometheus.NewDesc("h", "h", []string{"pipeline"}, nil)
			lib := prometheus.NewHistogramVec(DurationHistogramOpts(prometheus.HistogramOpts{Name: "h", Help: "h", Buckets: tc.bounds}), []string{"pipeline"})
			ours := newHistogramVec(desc, tc.bounds)
			ours.with("p")
			after := time.Now()
			libSeries := lib.WithLabelValues("p")
			for _, v := range tc.values {
				libSeries.Observe(v)
				ours.observe(v, "p")
			}
			var want, got dto.Metric
			if err := libSeries.(prometheus.Metric).Write(&want); err != nil {
				t.Fatal(err)
			}
			if err := ours.snapshot(nil)[0].Write(&got); err != nil {
				t.Fatal(err)
			}
			want.Histogram.CreatedTimestamp = nil
			if created := got.Histogram.CreatedTimestamp.AsTime(); created.Before(before) || created.After(after) {
				t.Errorf("created %v, want when the series was made, between %v and %v", created, before, after)
			}
			got.Histogram.CreatedTimestamp = nil
			if schema := got.GetHistogram().GetSchema(); tc.coarser != (schema < nativeSchema) {
				t.Errorf("schema %d after the observations; want coarser than %d: %v", schema, nativeSchema, tc.coarser)
			}
			if !proto.Equal(&got, &want) {
				t.Errorf("samples differ from client_golang's\n got: %v\nwant: %v", &got, &want)
			}
		})
	}
}

// spread returns n values spread evenly, on a log scale, from lo to hi.
func spread(rng *rand.Rand, n int, lo, hi float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Exp(math.Log(lo) + rng.Float64()*(math.Log(hi)-math.Log(lo)))
	}
	return out
}

func negate(vs []float64) []float64 {
	for i := range vs {
		vs[i] = -vs[i]
	}
	return vs
}

// TestHistogramSnapshot checks that a metric taken from a series keeps
// the samples it had when taken, while the series goes on counting.
func TestHistogramSnapshot(t *testing.T) {
	vec := newHistogramVec(prometheus.NewDesc("h", "h", []string{"pipeline"}, nil), runBuckets)
	vec.observe(30, "p")
	snap := vec.snapshot(nil)
	for range 3 {
		vec.observe(30, "p")
	}
	vec.observe(1, "p")
	var m dto.Metric
	if err := snap[0].Write(&m); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 30 || h.GetPositiveDelta()[0] != 1 || h.GetBucket()[2].GetCumulativeCount() != 1 {
		t.Errorf("snapshot changed after it was taken: %v", h)
	}
}

func TestHistogramVecDelete(t *testing.T) {
	vec := newHistogramVec(prometheus.NewDesc("h", "h", []string{"pipeline", "stage"}, nil), nil)
	for _, lvs := range [][]string{{"a", "build"}, {"a", "test"}, {"ab", "build"}, {"b", "build"}} {
		vec.with(lvs...)
	}
	vec.delete("b", "build")
	vec.deletePrefix("a")
	var left []string
	for _, m := range vec.snapshot(nil) {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		left = append(left, d.GetLabel()[0].GetValue()+"/"+d.GetLabel()[1].GetValue())
	}
	if len(left) != 1 || left[0] != "ab/build" {
		t.Errorf("left %v, want [ab/build]", left)
	}
}
