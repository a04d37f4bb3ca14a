// Package collector projects pipeline state onto Prometheus metrics.
//
// The last_* and in-progress gauges are built at each scrape from the
// committed runs (History.Summaries), like node_exporter's loadavg collector
// reads /proc/loadavg: they survive restarts, show on every replica, and
// vanish with the state. The counters and histograms are fed by Observe on
// the replica that applies the log; they are in-process and start at zero,
// as Prometheus expects. The counters are client_golang's; the histograms
// are this package's (histogram.go), which hold a thousand pipelines'
// histograms in a fraction of the memory and expose the same samples.
//
// Series: every histogram is a native histogram (durationHistogram), which
// a Prometheus with native histograms on ingests as one series per label
// set. Classic buckets, one series each in the text exposition, are kept
// where the label set is small: pipeline_run_duration_seconds has 12, from
// 5s to GitHub's 6h job limit, and pipeline_lead_time_seconds has DORA's
// two (a day, a week). The per-stage histograms
// (pipeline_stage_duration_seconds, pipeline_stage_queued_seconds) and
// pipeline_verify_response_seconds have classic buckets only with
// Options.StageBuckets (--metrics.stage-buckets): 10 from 1s to 1h for a
// stage, where one that takes longer lands in +Inf and the run's own
// histogram and alerts still see it; 8 from 50ms to the default 10s check
// timeout for verify. The one-hot status gauges are sparse (only the current
// status has a series) and status counters exist for the statuses that
// happened. TestCardinalityBudget holds the resulting counts.
package collector

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	// maxStagesPerPipeline bounds the stage label values of one pipeline:
	// job names come from workflow files, which change over time and may
	// list thousands of jobs.
	maxStagesPerPipeline = 100
	// maxStageLabelBytes bounds one stage label value.
	maxStageLabelBytes = 128
	// summariesTimeout bounds the read of the committed runs at each
	// scrape, well inside Prometheus' default 10s scrape timeout, so a slow
	// store costs the scrape its pipeline gauges, not the whole scrape.
	summariesTimeout = 2 * time.Second
)

var (
	// runBuckets span a run that finished within seconds of its trigger to
	// GitHub's 6h job limit. None is below 5s: no run finishes within a
	// second of its trigger (GitHub queues it for a runner first), and every
	// bucket is a series per pipeline and status (TestCardinalityBudget).
	runBuckets = []float64{5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600}
	// stageBuckets span an instant stage to an hour, with fewer buckets than
	// runBuckets: there are many stages per run, and every bucket is a
	// series of each.
	stageBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600}
	// verifyBuckets span a cached page to the default 10s check timeout.
	verifyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	// nativeBucketFactor is the growth of one native bucket over the
	// previous: 1.1 gives schema 3 (2^(1/8) = 1.09), about 8 buckets per
	// doubling, so a quantile is within 5% of the truth.
	nativeBucketFactor = 1.1
	// nativeMaxBuckets bounds the native buckets of one series: past it
	// client_golang halves the resolution rather than grow. 1s to 6h at
	// schema 3 needs 115, so a run histogram over the whole range keeps
	// schema 2.
	nativeMaxBuckets uint32 = 100
)

// History is the read of the committed runs the collector projects;
// pipeline.History implements it. It is called at every scrape, so its
// cost must not grow with the number of stored runs.
type History interface {
	Summaries(ctx context.Context) ([]pipeline.PipelineSummary, error)
}

// StoreStats reports on the run store. Both are called at every scrape, so
// they must be cheap: a kept count, never a scan of the store.
type StoreStats interface {
	// Runs returns how many runs the store holds.
	Runs() int64
	// Errors returns how many store operations failed since start, not
	// counting the collector's own reads, which it counts itself.
	Errors() float64
}

// Options are the collector's dependencies.
type Options struct {
	// Specs returns the configured pipelines; it is called at every
	// scrape, so a reload shows at the next one.
	Specs   func() []pipeline.Spec
	History History
	Stats   StoreStats
	// StageBuckets gives the per-stage and verify histograms classic
	// buckets too (--metrics.stage-buckets): 11 or 9 more series each in
	// the text exposition, for a Prometheus without native histograms that
	// needs per-stage quantiles.
	StageBuckets bool
	// Logger defaults to a logger that discards everything.
	Logger *slog.Logger
}

// Collector is a prometheus.Collector for the pipeline_* metrics, the
// store's pipeline_exporter_store_* metrics and
// pipeline_exporter_stage_labels_limited_total. Register it once.
type Collector struct {
	specs   func() []pipeline.Spec
	history History
	stats   StoreStats
	logger  *slog.Logger

	runsInProgress       *prometheus.Desc
	lastRunStatus        *prometheus.Desc
	lastRunDuration      *prometheus.Desc
	lastRunTimestamp     *prometheus.Desc
	lastSuccessTimestamp *prometheus.Desc
	slowThreshold        *prometheus.Desc
	lastStageStatus      *prometheus.Desc
	lastStageDuration    *prometheus.Desc
	storeRuns            *prometheus.Desc
	storeErrors          *prometheus.Desc

	runs          *prometheus.CounterVec
	stageRuns     *prometheus.CounterVec
	labelsLimited *prometheus.CounterVec

	// mu guards the fields below, and orders making series (Observe)
	// against deleting them (a pipeline removed, a stage evicted).
	mu            sync.Mutex
	runDuration   *histogramVec
	stageDuration *histogramVec
	stageQueued   *histogramVec
	verify        *histogramVec
	live          *liveMetrics
	// pipelines holds the configured pipelines as of the last look at
	// Specs; updates for others are dropped.
	pipelines map[string]*pipelineSeries
	// seq orders stage sightings, to evict the least recently seen.
	seq uint64
	// readErrors counts failed Summaries calls; readFailing says whether
	// the last one failed, so that a failing store is logged once per
	// change, not at every scrape.
	readErrors  float64
	readFailing bool
	// lastGauges and lastHistograms are how many gauges and histogram
	// series the last scrape sent.
	lastGauges, lastHistograms int
}

// New returns a Collector with the series of every configured pipeline and
// of every stage the history knows at zero, so that rate() and increase()
// see the first run after a restart. It fails when the history cannot be
// read.
func New(opts Options) (*Collector, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pl := []string{"pipeline"}
	stageBuckets, verifyBuckets := stageBuckets, verifyBuckets
	if !opts.StageBuckets {
		stageBuckets, verifyBuckets = nil, nil
	}
	c := &Collector{
		specs:   opts.Specs,
		history: opts.History,
		stats:   opts.Stats,
		logger:  logger,

		runsInProgress: prometheus.NewDesc("pipeline_runs_in_progress",
			"Number of runs of the pipeline that have not finished.", pl, nil),
		lastRunStatus: prometheus.NewDesc("pipeline_last_run_status",
			"Status of the pipeline's last finished run: one series, of value 1, labelled with its status.",
			[]string{"pipeline", "status"}, nil),
		lastRunDuration: prometheus.NewDesc("pipeline_last_run_duration_seconds",
			"Seconds from the first trigger to the finish of the pipeline's last finished run.", pl, nil),
		lastRunTimestamp: prometheus.NewDesc("pipeline_last_run_timestamp_seconds",
			"Unix time in seconds when the pipeline's last finished run finished.", pl, nil),
		lastSuccessTimestamp: prometheus.NewDesc("pipeline_last_success_timestamp_seconds",
			"Unix time in seconds when the pipeline's last successful run finished.", pl, nil),
		slowThreshold: prometheus.NewDesc("pipeline_slow_threshold_seconds",
			"Configured run duration in seconds above which the pipeline is slow.", pl, nil),
		lastStageStatus: prometheus.NewDesc("pipeline_last_stage_status",
			"Status of each stage of the pipeline's last finished run: one series per stage that run had, of value 1, labelled with its status.",
			[]string{"pipeline", "stage", "status"}, nil),
		lastStageDuration: prometheus.NewDesc("pipeline_last_stage_duration_seconds",
			"Duration in seconds of each stage of the pipeline's last finished run.",
			[]string{"pipeline", "stage"}, nil),
		storeRuns: prometheus.NewDesc("pipeline_exporter_store_runs",
			"Number of runs in the store.", nil, nil),
		storeErrors: prometheus.NewDesc("pipeline_exporter_store_errors_total",
			"Total number of failed store operations.", nil, nil),

		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_runs_total",
			Help: "Total number of finished runs, by trigger source and final status.",
		}, []string{"pipeline", "trigger", "status"}),
		runDuration: newHistogramVec(prometheus.NewDesc("pipeline_run_duration_seconds",
			"Seconds from the first trigger to the finish of each run, by final status.",
			[]string{"pipeline", "status"}, nil), runBuckets),
		stageRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_stage_runs_total",
			Help: "Total number of finished stages, by final status.",
		}, []string{"pipeline", "stage", "status"}),
		stageDuration: newHistogramVec(prometheus.NewDesc("pipeline_stage_duration_seconds",
			"Duration in seconds of each finished stage that started.",
			[]string{"pipeline", "stage"}, nil), stageBuckets),
		stageQueued: newHistogramVec(prometheus.NewDesc("pipeline_stage_queued_seconds",
			"Seconds each job stage waited from job creation to job start.",
			[]string{"pipeline", "stage"}, nil), stageBuckets),
		verify: newHistogramVec(prometheus.NewDesc("pipeline_verify_response_seconds",
			"Response time in seconds of the last live-site check attempt of each finished verify stage that got an answer.",
			pl, nil), verifyBuckets),
		labelsLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_exporter_stage_labels_limited_total",
			Help: "Total number of stage names cut to fit a label value, and of stages evicted from the metrics to keep a pipeline's stages bounded.",
		}, []string{"reason"}),

		live: newLiveMetrics(),

		pipelines: map[string]*pipelineSeries{},
	}
	c.labelsLimited.WithLabelValues("truncated")
	c.labelsLimited.WithLabelValues("evicted")

	sums, err := c.summaries()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncSpecs(c.specs())
	for _, s := range sums {
		if ps := c.pipelines[s.Pipeline]; ps != nil {
			c.rememberLastRuns(ps, &s)
		}
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.runsInProgress, c.lastRunStatus, c.lastRunDuration, c.lastRunTimestamp,
		c.lastSuccessTimestamp, c.slowThreshold, c.lastStageStatus, c.lastStageDuration,
		c.storeRuns, c.storeErrors,
	} {
		ch <- d
	}
	for _, d := range c.live.descs() {
		ch <- d
	}
	for _, h := range c.histograms() {
		ch <- h.desc
	}
	for _, v := range c.counters() {
		v.Describe(ch)
	}
}

func (c *Collector) counters() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{c.runs, c.stageRuns, c.labelsLimited}
}

func (c *Collector) histograms() []*histogramVec {
	return []*histogramVec{c.runDuration, c.stageDuration, c.stageQueued, c.verify, c.live.leadTime}
}

func (c *Collector) summaries() ([]pipeline.PipelineSummary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), summariesTimeout)
	defer cancel()
	return c.history.Summaries(ctx)
}

// Collect implements prometheus.Collector. The last_* gauges of a pipeline
// with no finished run are absent rather than zero, so that no alert reads
// a run that never happened; pipeline_slow_threshold_seconds is absent when
// no threshold is configured.
//
// When the history cannot be read, the scrape has no pipeline gauges, the
// failure counts in pipeline_exporter_store_errors_total, and it is logged
// once until a read succeeds again. This is node_exporter's habit for a
// failing collector (its metrics absent, the failure a metric and a log
// line) rather than prometheus.NewInvalidMetric, which fails the whole
// scrape: the webhook, poller and counter metrics would go with it, and
// `up` would blame the exporter for its store.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	specs := c.specs()
	c.mu.Lock()
	c.syncSpecs(specs)
	c.mu.Unlock()

	// The store is read while the counters and histograms go to the
	// registry, which encodes them meanwhile: at 1,000 pipelines both
	// take tens of milliseconds (the bench's "scrape at 1000 pipelines"
	// row, best and mean). A series the gauges make at zero for a run
	// seen for the first time is then sent by the next scrape.
	type read struct {
		sums []pipeline.PipelineSummary
		err  error
	}
	done := make(chan read, 1)
	go func() {
		sums, err := c.summaries()
		done <- read{sums, err}
	}()
	for _, v := range c.counters() {
		v.Collect(ch)
	}
	c.mu.Lock()
	histograms := make([]prometheus.Metric, 0, c.lastHistograms)
	for _, h := range c.histograms() {
		histograms = h.snapshot(histograms)
	}
	c.lastHistograms = len(histograms)
	c.mu.Unlock()
	for _, m := range histograms {
		ch <- m
	}
	r := <-done
	sums, err := r.sums, r.err

	// The gauges are built under mu and sent after it, since sending
	// waits for the registry, and Observe must not wait for a scrape.
	c.mu.Lock()
	var gauges []prometheus.Metric
	if err != nil {
		c.readErrors++
		if !c.readFailing {
			c.logger.Error("Reading the runs for metrics failed; pipeline gauges are absent until it succeeds", "err", err)
		}
	} else {
		if c.readFailing {
			c.logger.Info("Reading the runs for metrics succeeded again")
		}
		gauges = c.gauges(specs, sums)
	}
	c.readFailing = err != nil
	readErrors := c.readErrors
	c.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(c.storeRuns, prometheus.GaugeValue, float64(c.stats.Runs()))
	ch <- prometheus.MustNewConstMetric(c.storeErrors, prometheus.CounterValue, c.stats.Errors()+readErrors)
	for _, m := range gauges {
		ch <- m
	}
}

// gauges builds the gauges of every configured pipeline from its summary.
// Called with mu held.
func (c *Collector) gauges(specs []pipeline.Spec, sums []pipeline.PipelineSummary) []prometheus.Metric {
	byName := make(map[string]*pipeline.PipelineSummary, len(sums))
	for i := range sums {
		byName[sums[i].Pipeline] = &sums[i]
	}
	// One slice of the last scrape's size and one seen set for every
	// pipeline, not one per pipeline (BenchmarkCollect/pipelines=1000,
	// B/op).
	out := make([]prometheus.Metric, 0, c.lastGauges)
	seen := map[string]bool{}
	gauge := func(d *prometheus.Desc, v float64, lvs ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lvs...))
	}
	for _, spec := range specs {
		name := spec.Name
		ps := c.pipelines[name]
		sum := byName[name]
		if sum == nil {
			sum = &pipeline.PipelineSummary{Pipeline: name}
		}
		c.rememberLastRuns(ps, sum)

		gauge(c.runsInProgress, float64(sum.InProgress), name)
		if spec.SlowThreshold > 0 {
			gauge(c.slowThreshold, spec.SlowThreshold.Seconds(), name)
		}
		if r := sum.LastSuccess; r != nil && r.FinishedAt != nil && unixTime(*r.FinishedAt) {
			gauge(c.lastSuccessTimestamp, unixSeconds(*r.FinishedAt), name)
		}
		out = c.live.appendGauges(out, name, sum)
		r := sum.LastFinished
		if r == nil {
			continue
		}
		gauge(c.lastRunStatus, 1, name, string(r.Status))
		gauge(c.lastRunDuration, r.DurationSeconds, name)
		if r.FinishedAt != nil && unixTime(*r.FinishedAt) {
			gauge(c.lastRunTimestamp, unixSeconds(*r.FinishedAt), name)
		}
		// Every stage of r in the pipeline's metrics gets the series of
		// its status; a stage r did not have, or one evicted from the
		// metrics, gets none. A run could repeat a job name: the first
		// one counts, since a label set may be exported only once.
		clear(seen)
		for i := range r.Stages {
			st := &r.Stages[i]
			label, _ := stageLabel(st.Name)
			if seen[label] || ps.stages[label] == nil {
				continue
			}
			seen[label] = true
			gauge(c.lastStageStatus, 1, name, label, string(st.Status))
			gauge(c.lastStageDuration, st.DurationSeconds, name, label)
		}
	}
	c.lastGauges = len(out)
	return out
}

// Observe counts what one committed update finished. The applier calls it
// after each commit, in commit order, on the replica that applies the log
// only, so that the counters summed over replicas count each run once.
func (c *Collector) Observe(u pipeline.Update) {
	if u.Run == nil || (!u.Finished && len(u.StagesFinished) == 0) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := c.pipelines[u.Run.Pipeline]
	if ps == nil {
		// A reload may have added the pipeline since the last scrape.
		c.syncSpecs(c.specs())
		if ps = c.pipelines[u.Run.Pipeline]; ps == nil {
			return
		}
	}
	name := ps.name
	for _, st := range u.StagesFinished {
		stage := c.rememberStage(ps, st.Name, st.JobID != 0)
		c.stageRuns.WithLabelValues(name, stage, string(st.Status)).Inc()
		// A skipped or never-started stage has no duration worth a bucket.
		if st.StartedAt == nil || st.Status == pipeline.StatusSkipped {
			continue
		}
		c.stageDuration.observe(st.DurationSeconds, name, stage)
		if st.JobID != 0 {
			c.stageQueued.observe(st.QueuedSeconds, name, stage)
		}
		// A check that got no answer (refused, timed out) has no
		// response time.
		if st.Name == pipeline.StageVerify && st.ResponseSeconds > 0 {
			c.verify.observe(st.ResponseSeconds, name)
		}
	}
	c.live.observe(name, u)
	if u.Finished {
		status := string(u.Run.Status)
		c.runs.WithLabelValues(name, string(u.Run.Trigger.Source), status).Inc()
		c.runDuration.observe(u.Run.DurationSeconds, name, status)
	}
}

// DurationHistogramOpts returns opts with the native histogram settings
// every duration histogram of the exporter has (bucket factor 1.1, at
// most 100 buckets); opts.Buckets stay its classic buckets.
func DurationHistogramOpts(opts prometheus.HistogramOpts) prometheus.HistogramOpts {
	opts.NativeHistogramBucketFactor = nativeBucketFactor
	opts.NativeHistogramMaxBucketNumber = nativeMaxBuckets
	return opts
}

// unixTime reports whether t can be a _timestamp_seconds value: not before
// the Unix epoch, where the gauge would be negative.
func unixTime(t time.Time) bool {
	return t.Unix() >= 0
}

// unixSeconds returns t as Unix seconds. It does not go through
// UnixNano, which overflows outside the years 1678 to 2262.
func unixSeconds(t time.Time) float64 {
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}
