package collector

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The pipeline histograms are kept here rather than in client_golang's
// HistogramVec. A client_golang native histogram is built for millions of
// lock-free observations a second: two sets of counts, each with its
// buckets in sync.Maps, about 1.6 KB before its first observation. The
// exporter observes a few durations a minute per pipeline, and at 1,000
// pipelines of 10 jobs holds 23,000 histogram series: with its counters,
// the collector held 34 MB in client_golang's vecs and holds 6.6 MB in
// these, against the README's 64 MiB for the whole process (the bench's
// "1,000 pipelines, … stored runs" rows). A histogram here is its
// counts and a sorted slice of the native buckets it has, guarded by the
// Collector's mutex. It produces the samples client_golang's would for the
// same options and observations: TestHistogramMatchesClientGolang compares
// them for every shape the exporter uses.

const (
	// nativeSchema is the schema client_golang picks for
	// nativeBucketFactor: 2^(2^-3) = 1.09 is the largest growth within 1.1.
	nativeSchema = 3
	// minNativeSchema is the coarsest schema: client_golang stops widening
	// buckets there.
	minNativeSchema = -4
)

// nativeBounds[s] are the fractions (in [0.5, 1)) at which the buckets of
// schema s > 0 start, as math.Frexp gives them: 2^(i/2^s) / 2. They are
// client_golang's decimal constants, not math.Exp2's results, which differ
// in the last bit for some and would put a value on a boundary in the
// other bucket. Schemas 2 and 1 take every second and fourth of schema 3's.
var nativeBounds = func() [][]float64 {
	schema3 := []float64{
		0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
		0.7071067811865475, 0.7711054127039704, 0.8408964152537144, 0.9170040432046711,
	}
	b := make([][]float64, nativeSchema+1)
	for s := 1; s <= nativeSchema; s++ {
		step := 1 << (nativeSchema - s)
		for i := 0; i < len(schema3); i += step {
			b[s] = append(b[s], schema3[i])
		}
	}
	return b
}()

// nativeBucket is one populated native bucket: its index in the schema,
// and how many observations it holds.
type nativeBucket struct {
	key   int32
	count int64
}

// histogram is one histogram series: when it was made, in Unix
// nanoseconds, and its counts, nil until its first observation. Most series
// are at zero after a start (every stage of every pipeline's last runs) and
// in an organization whose repositories deploy now and then, so a series
// at zero costs 16 bytes, not the counts' 112: 2 MB at 1,000 pipelines of
// 10 jobs, twice that in the heap Go keeps (the bench's "1,000 pipelines,
// … stored runs" peak).
type histogram struct {
	created int64
	counts  *histogramCounts
}

// histogramCounts are the counts of a histogram that has observations. They
// are never changed once published, only replaced, so a copy of a
// histogram is a snapshot a scrape can read after the Collector's mutex is
// released.
type histogramCounts struct {
	count, zero uint64
	sum         float64
	schema      int32
	// positive and negative hold the populated native buckets, by key.
	positive, negative []nativeBucket
	// classic holds the count of each classic bucket (not cumulative);
	// nil when the histogram has none.
	classic []uint64
}

// observe adds v as client_golang's histogram.Observe does with
// NativeHistogramBucketFactor nativeBucketFactor, the default zero
// threshold and NativeHistogramMaxBucketNumber nativeMaxBuckets.
func (hist *histogram) observe(v float64, bounds []float64) {
	h := histogramCounts{schema: nativeSchema}
	if hist.counts != nil {
		h = *hist.counts
	} else if bounds != nil {
		h.classic = make([]uint64, len(bounds))
	}
	defer func() { hist.counts = &h }()
	h.count++
	h.sum += v
	if h.classic != nil {
		if i := sort.SearchFloat64s(bounds, v); i < len(h.classic) {
			h.classic = slices.Clone(h.classic)
			h.classic[i]++
		}
	}
	if math.IsNaN(v) {
		return
	}
	key := nativeKey(v, h.schema)
	switch {
	case v > prometheus.DefNativeHistogramZeroThreshold:
		h.positive = addToBucket(h.positive, key)
	case v < -prometheus.DefNativeHistogramZeroThreshold:
		h.negative = addToBucket(h.negative, key)
	default:
		h.zero++
	}
	// Past the bucket limit client_golang halves the resolution, one step
	// per observation that finds it exceeded.
	if len(h.positive)+len(h.negative) > int(nativeMaxBuckets) && h.schema > minNativeSchema {
		h.schema--
		h.positive, h.negative = widen(h.positive), widen(h.negative)
	}
}

// nativeKey returns the index of the native bucket of v in the schema, as
// client_golang computes it.
func nativeKey(v float64, schema int32) int32 {
	inf := math.IsInf(v, 0)
	if inf {
		v = math.MaxFloat64
	}
	frac, exp := math.Frexp(math.Abs(v))
	var key int
	if schema > 0 {
		bounds := nativeBounds[schema]
		key = sort.SearchFloat64s(bounds, frac) + (exp-1)*len(bounds)
	} else {
		key = exp
		if frac == 0.5 {
			key--
		}
		offset := (1 << -schema) - 1
		key = (key + offset) >> -schema
	}
	if inf {
		key++
	}
	return int32(key)
}

// addToBucket returns a copy of buckets with one more observation in the
// bucket of key.
func addToBucket(buckets []nativeBucket, key int32) []nativeBucket {
	i, found := slices.BinarySearchFunc(buckets, key, func(b nativeBucket, k int32) int { return int(b.key - k) })
	out := make([]nativeBucket, len(buckets), len(buckets)+1)
	copy(out, buckets)
	if !found {
		out = slices.Insert(out, i, nativeBucket{key: key})
	}
	out[i].count++
	return out
}

// widen returns the buckets of the next coarser schema: two neighbours
// become one, with client_golang's mapping of keys.
func widen(buckets []nativeBucket) []nativeBucket {
	var out []nativeBucket
	for _, b := range buckets {
		key := b.key
		if key > 0 {
			key++
		}
		key /= 2
		if n := len(out); n > 0 && out[n-1].key == key {
			out[n-1].count += b.count
			continue
		}
		out = append(out, nativeBucket{key: key, count: b.count})
	}
	return out
}

// write fills out as client_golang's histogram.Write does, but for the
// labels.
func (hist *histogram) write(out *dto.Metric, bounds []float64) {
	h := hist.counts
	if h == nil {
		h = &histogramCounts{schema: nativeSchema}
	}
	his := &dto.Histogram{
		SampleCount:      &h.count,
		SampleSum:        &h.sum,
		CreatedTimestamp: timestamppb.New(time.Unix(0, hist.created)),
		Schema:           &h.schema,
		ZeroThreshold:    new(prometheus.DefNativeHistogramZeroThreshold),
		ZeroCount:        &h.zero,
	}
	if bounds != nil {
		his.Bucket = make([]*dto.Bucket, len(bounds))
		var cum uint64
		for i := range bounds {
			if h.classic != nil {
				cum += h.classic[i]
			}
			his.Bucket[i] = &dto.Bucket{CumulativeCount: new(cum), UpperBound: &bounds[i]}
		}
	}
	his.NegativeSpan, his.NegativeDelta = spans(h.negative)
	his.PositiveSpan, his.PositiveDelta = spans(h.positive)
	out.Histogram = his
}

// spans encodes buckets as client_golang does: a gap of up to two empty
// buckets stays inside a span.
func spans(buckets []nativeBucket) ([]*dto.BucketSpan, []int64) {
	if len(buckets) == 0 {
		return nil, nil
	}
	var (
		out    []*dto.BucketSpan
		deltas []int64
		prev   int64
		next   int32
	)
	for n, b := range buckets {
		gap := b.key - next
		if n == 0 || gap > 2 {
			out = append(out, &dto.BucketSpan{Offset: new(gap), Length: new(uint32(0))})
		} else {
			for range gap {
				*out[len(out)-1].Length++
				deltas = append(deltas, -prev)
				prev = 0
			}
		}
		*out[len(out)-1].Length++
		deltas = append(deltas, b.count-prev)
		prev = b.count
		next = b.key + 1
	}
	return out, deltas
}

// histogramVec is the histograms of one metric, by label values. It is not
// safe for concurrent use: the Collector's mutex guards it.
type histogramVec struct {
	seriesMap[histogram]
	// bounds are the classic bucket bounds; nil for a native histogram
	// only.
	bounds []float64
}

func newHistogramVec(desc *prometheus.Desc, bounds []float64) *histogramVec {
	return &histogramVec{seriesMap: newSeriesMap[histogram](desc), bounds: bounds}
}

// with returns the series of the label values, made at zero if new.
func (v *histogramVec) with(lvs ...string) *histogram {
	return v.get(lvs, func(created int64) *histogram {
		return &histogram{created: created}
	})
}

// observe adds x to the series of the label values.
func (v *histogramVec) observe(x float64, lvs ...string) {
	v.with(lvs...).observe(x, v.bounds)
}

// snapshot appends a metric of every series, as it is now, to out.
func (v *histogramVec) snapshot(out []prometheus.Metric) []prometheus.Metric {
	for k, h := range v.series {
		out = append(out, histogramMetric{vec: v, key: k, h: *h})
	}
	return out
}

// histogramMetric is a prometheus.Metric of one histogram's snapshot.
type histogramMetric struct {
	vec *histogramVec
	key string
	h   histogram
}

func (m histogramMetric) Desc() *prometheus.Desc { return m.vec.desc }

func (m histogramMetric) Write(out *dto.Metric) error {
	m.h.write(out, m.vec.bounds)
	out.Label = labelPairs(m.vec.desc, m.key)
	return nil
}
