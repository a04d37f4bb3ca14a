package collector

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// seriesMap holds the series of one metric by label values. The counters
// and histograms of the pipelines are kept in these rather than in
// client_golang's vecs, whose series cost several times the memory
// (histogram.go says how much), and are guarded by the Collector's mutex.
// A series' label values are its key, not dto label pairs: at 1,000
// pipelines of 10 jobs the pairs of 45,000 series were 10.7 MB of the heap
// between scrapes, and made when a scrape writes them they are a family's
// at a time (the bench's "1,000 pipelines, … stored runs" RSS row).
type seriesMap[S any] struct {
	desc   *prometheus.Desc
	series map[string]*S
}

func newSeriesMap[S any](desc *prometheus.Desc) seriesMap[S] {
	return seriesMap[S]{desc: desc, series: map[string]*S{}}
}

// seriesKey joins label values with a byte no valid UTF-8 label value has.
func seriesKey(lvs []string) string { return strings.Join(lvs, "\xff") }

// labelPairs returns the label pairs of the series of a key.
func labelPairs(desc *prometheus.Desc, key string) []*dto.LabelPair {
	return prometheus.MakeLabelPairs(desc, strings.Split(key, "\xff"))
}

// get returns the series of the label values, made by newSeries, with its
// creation time in Unix nanoseconds, if new.
func (m *seriesMap[S]) get(lvs []string, newSeries func(created int64) *S) *S {
	k := seriesKey(lvs)
	s := m.series[k]
	if s == nil {
		s = newSeries(time.Now().UnixNano())
		m.series[k] = s
	}
	return s
}

// delete removes the series of the label values.
func (m *seriesMap[S]) delete(lvs ...string) {
	delete(m.series, seriesKey(lvs))
}

// deletePrefix removes every series whose first label values are lvs.
func (m *seriesMap[S]) deletePrefix(lvs ...string) {
	prefix := seriesKey(lvs) + "\xff"
	for k := range m.series {
		if strings.HasPrefix(k+"\xff", prefix) {
			delete(m.series, k)
		}
	}
}

// counter is the state of one counter series.
type counter struct {
	value float64
	// created is when the series was made, in Unix nanoseconds.
	created int64
}

// counterVec is the counters of one metric, by label values.
type counterVec struct{ seriesMap[counter] }

func newCounterVec(desc *prometheus.Desc) *counterVec {
	return &counterVec{newSeriesMap[counter](desc)}
}

// with returns the series of the label values, made at zero if new.
func (v *counterVec) with(lvs ...string) *counter {
	return v.get(lvs, func(created int64) *counter {
		return &counter{created: created}
	})
}

// snapshot appends a metric of every series, as it is now, to out.
func (v *counterVec) snapshot(out []prometheus.Metric) []prometheus.Metric {
	for k, c := range v.series {
		out = append(out, counterMetric{desc: v.desc, key: k, c: *c})
	}
	return out
}

// counterMetric is a prometheus.Metric of one counter's snapshot.
type counterMetric struct {
	desc *prometheus.Desc
	key  string
	c    counter
}

func (m counterMetric) Desc() *prometheus.Desc { return m.desc }

func (m counterMetric) Write(out *dto.Metric) error {
	out.Counter = &dto.Counter{Value: &m.c.value, CreatedTimestamp: timestamppb.New(time.Unix(0, m.c.created))}
	out.Label = labelPairs(m.desc, m.key)
	return nil
}
