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
	staleDesc     *prometheus.Desc
	lastCheckDesc *prometheus.Desc
	buildDesc     *prometheus.Desc
	leadTime      *histogramVec
}

func newLiveMetrics() *liveMetrics {
	pl := []string{"pipeline"}
	return &liveMetrics{
		staleDesc: prometheus.NewDesc("pipeline_live_stale",
			"1 when the site stopped serving the pipeline's latest verified build (two rechecks in a row did not find it and no newer run started), else 0.", pl, nil),
		lastCheckDesc: prometheus.NewDesc("pipeline_live_last_check_timestamp_seconds",
			"Unix time in seconds when the site was last checked for the pipeline's latest verified build.", pl, nil),
		buildDesc: prometheus.NewDesc("pipeline_live_build_timestamp_seconds",
			"Unix time in seconds when the pipeline's latest verified build was first seen live.", pl, nil),
		leadTime: newHistogramVec(prometheus.NewDesc("pipeline_lead_time_seconds",
			"Seconds from a commit's time to its build verified live on the site, for runs that verify a build (DORA's lead time for changes).",
			pl, nil), leadBuckets),
	}
}

func (m *liveMetrics) descs() []*prometheus.Desc {
	return []*prometheus.Desc{m.staleDesc, m.lastCheckDesc, m.buildDesc}
}

// live returns the verified-live run of the pipeline: none until a build
// of it was verified live.
func live(sum *pipeline.PipelineSummary) *pipeline.Run {
	if r := sum.LastSuccess; r != nil && r.Live() {
		return r
	}
	return nil
}

// stale is the gaugeFamily of pipeline_live_stale.
func (m *liveMetrics) stale(out []prometheus.Metric, spec *pipeline.Spec, sum *pipeline.PipelineSummary, _ *pipelineSeries) []prometheus.Metric {
	r := live(sum)
	if r == nil {
		return out
	}
	v := 0.0
	if r.Verify.Stale {
		v = 1
	}
	return append(out, prometheus.MustNewConstMetric(m.staleDesc, prometheus.GaugeValue, v, spec.Name))
}

// lastCheck is the gaugeFamily of pipeline_live_last_check_timestamp_seconds.
func (m *liveMetrics) lastCheck(out []prometheus.Metric, spec *pipeline.Spec, sum *pipeline.PipelineSummary, _ *pipelineSeries) []prometheus.Metric {
	r := live(sum)
	if r == nil || !unixTime(r.Verify.CheckedAt) {
		return out
	}
	return append(out, prometheus.MustNewConstMetric(m.lastCheckDesc, prometheus.GaugeValue, unixSeconds(r.Verify.CheckedAt), spec.Name))
}

// build is the gaugeFamily of pipeline_live_build_timestamp_seconds.
func (m *liveMetrics) build(out []prometheus.Metric, spec *pipeline.Spec, sum *pipeline.PipelineSummary, _ *pipelineSeries) []prometheus.Metric {
	r := live(sum)
	if r == nil || !unixTime(*r.Verify.VerifiedAt) {
		return out
	}
	return append(out, prometheus.MustNewConstMetric(m.buildDesc, prometheus.GaugeValue, unixSeconds(*r.Verify.VerifiedAt), spec.Name))
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
