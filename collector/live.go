package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// leadBuckets are DORA's performance levels by lead time: a change live
// within a day, within a week. A Prometheus without native histograms gets
// from them the share of changes in each level and, from _sum and _count,
// the exact mean; one with them gets the whole distribution. More buckets
// would be a text series per pipeline each, and 1,000 verified pipelines
// must stay within the budget (TestCardinalityBudget).
var leadBuckets = []float64{86400, 7 * 86400}

// maxLeadTime bounds the lead time observed: a commit time is its author's
// clock, and no duration the exporter reports exceeds a year.
const maxLeadTime = 365 * 24 * 3600

// liveMetrics are the metrics of each pipeline's live build: gauges
// projected at each scrape from the pipeline's last success, and the lead
// time of each run verified live.
type liveMetrics struct {
	stale     *prometheus.Desc
	lastCheck *prometheus.Desc
	build     *prometheus.Desc
	leadTime  *histogramVec
}

func newLiveMetrics() *liveMetrics {
	pl := []string{"pipeline"}
	return &liveMetrics{
		stale: prometheus.NewDesc("pipeline_live_stale",
			"1 when the site stopped serving the pipeline's latest verified build (two rechecks in a row did not find it and no newer run started), else 0.", pl, nil),
		lastCheck: prometheus.NewDesc("pipeline_live_last_check_timestamp_seconds",
			"Unix time in seconds when the site was last checked for the pipeline's latest verified build.", pl, nil),
		build: prometheus.NewDesc("pipeline_live_build_timestamp_seconds",
			"Unix time in seconds when the pipeline's latest verified build was first seen live.", pl, nil),
		leadTime: newHistogramVec(prometheus.NewDesc("pipeline_lead_time_seconds",
			"Seconds from a commit's time to its build verified live on the site, for runs that verify a build (DORA's lead time for changes).",
			pl, nil), leadBuckets),
	}
}

func (m *liveMetrics) descs() []*prometheus.Desc {
	return []*prometheus.Desc{m.stale, m.lastCheck, m.build}
}

// appendGauges appends the live-build gauges of the pipeline to out: none
// until a build of it was verified live.
func (m *liveMetrics) appendGauges(out []prometheus.Metric, name string, sum *pipeline.PipelineSummary) []prometheus.Metric {
	r := sum.LastSuccess
	if r == nil || !r.Live() {
		return out
	}
	v := r.Verify
	stale := 0.0
	if v.Stale {
		stale = 1
	}
	out = append(out, prometheus.MustNewConstMetric(m.stale, prometheus.GaugeValue, stale, name))
	if unixTime(v.CheckedAt) {
		out = append(out, prometheus.MustNewConstMetric(m.lastCheck, prometheus.GaugeValue, unixSeconds(v.CheckedAt), name))
	}
	if unixTime(*v.VerifiedAt) {
		out = append(out, prometheus.MustNewConstMetric(m.build, prometheus.GaugeValue, unixSeconds(*v.VerifiedAt), name))
	}
	return out
}

// observe records the lead time of a run that just finished verified live.
func (m *liveMetrics) observe(name string, u pipeline.Update) {
	r := u.Run
	if !u.Finished || !r.Live() || r.GitHub == nil || r.GitHub.HeadCommitAt == nil {
		return
	}
	lead := r.Verify.VerifiedAt.Sub(*r.GitHub.HeadCommitAt).Seconds()
	if lead < 0 || lead > maxLeadTime {
		return
	}
	m.leadTime.observe(lead, name)
}
