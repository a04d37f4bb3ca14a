// Package collector projects pipeline state onto Prometheus metrics.
//
// The last_* and in-progress gauges are built at each scrape from the
// committed runs (History.Summaries), like node_exporter's loadavg collector
// reads /proc/loadavg: they survive restarts, show on every replica, and
// vanish with the state. The counters and histograms are fed by Observe on
// the replica that applies the log; they are in-process and start at zero,
// as Prometheus expects. They are kept in this package's series maps
// (series_map.go, histogram.go) rather than client_golang's vecs, which
// hold a thousand pipelines' series in several times the memory; they
// expose the same samples.
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
// pipeline_exporter_stage_labels_limited_total. Register it with a registry,
// or have package exposition stream it, once.
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

	// mu guards the fields below, and orders making series (Observe)
	// against deleting them (a pipeline removed, a stage evicted).
	mu            sync.Mutex
	runs          *counterVec
	stageRuns     *counterVec
	labelsLimited *counterVec
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

		runs: newCounterVec(prometheus.NewDesc("pipeline_runs_total",
			"Total number of finished runs, by trigger source and final status.",
			[]string{"pipeline", "trigger", "status"}, nil)),
		runDuration: newHistogramVec(prometheus.NewDesc("pipeline_run_duration_seconds",
			"Seconds from the first trigger to the finish of each run, by final status.",
			[]string{"pipeline", "status"}, nil), runBuckets),
		stageRuns: newCounterVec(prometheus.NewDesc("pipeline_stage_runs_total",
			"Total number of finished stages, by final status.",
			[]string{"pipeline", "stage", "status"}, nil)),
		stageDuration: newHistogramVec(prometheus.NewDesc("pipeline_stage_duration_seconds",
			"Duration in seconds of each finished stage that started.",
			[]string{"pipeline", "stage"}, nil), stageBuckets),
		stageQueued: newHistogramVec(prometheus.NewDesc("pipeline_stage_queued_seconds",
			"Seconds each job stage waited from job creation to job start.",
			[]string{"pipeline", "stage"}, nil), stageBuckets),
		verify: newHistogramVec(prometheus.NewDesc("pipeline_verify_response_seconds",
			"Response time in seconds of the last live-site check attempt of each finished verify stage that got an answer.",
			pl, nil), verifyBuckets),
		labelsLimited: newCounterVec(prometheus.NewDesc("pipeline_exporter_stage_labels_limited_total",
			"Total number of stage names cut to fit a label value, and of stages evicted from the metrics to keep a pipeline's stages bounded.",
			[]string{"reason"}, nil)),

		live: newLiveMetrics(),

		pipelines: map[string]*pipelineSeries{},
	}
	c.labelsLimited.with("truncated")
	c.labelsLimited.with("evicted")

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
	for _, v := range c.counters() {
		ch <- v.desc
	}
	for _, h := range c.histograms() {
		ch <- h.desc
	}
}

func (c *Collector) counters() []*counterVec {
	return []*counterVec{c.runs, c.stageRuns, c.labelsLimited}
}

func (c *Collector) histograms() []*histogramVec {
	return []*histogramVec{c.runDuration, c.stageDuration, c.stageQueued, c.verify, c.live.leadTime}
}

func (c *Collector) summaries() ([]pipeline.PipelineSummary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), summariesTimeout)
	defer cancel()
	return c.history.Summaries(ctx)
}

// Collect implements prometheus.Collector. It sends each metric family
// whole before the next, and builds each when its turn comes, so that a
// consumer that encodes a family as soon as it is complete (package
// exposition) holds one family's samples at a time, not the scrape's: at
// 1,000 pipelines that is the bench's "1,000 pipelines, … stored runs" RSS
// row. The last_* gauges of a pipeline with no finished run are absent
// rather than zero, so that no alert reads a run that never happened;
// pipeline_slow_threshold_seconds is absent when no threshold is
// configured.
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

	// Each family is copied under mu and sent after it, since sending
	// waits for the consumer, and Observe must not wait for a scrape.
	send := func(snapshot func([]prometheus.Metric) []prometheus.Metric) {
		c.mu.Lock()
		family := snapshot(nil)
		c.mu.Unlock()
		for _, m := range family {
			ch <- m
		}
	}
	for _, v := range c.counters() {
		send(v.snapshot)
	}
	for _, h := range c.histograms() {
		send(h.snapshot)
	}
	// The store is read after them, not meanwhile: a read overlapping a
	// histogram family held both in memory, 4 to 10 MiB more at the bench's
	// "1,000 pipelines, … stored runs" peak, for 50 ms of its "scrape at
	// 1000 pipelines" best. A series the gauges make at zero for a run seen
	// for the first time is then sent by the next scrape.
	sums, err := c.summaries()

	c.mu.Lock()
	if err != nil {
		c.readErrors++
		if !c.readFailing {
			c.logger.Error("Reading the runs for metrics failed; pipeline gauges are absent until it succeeds", "err", err)
		}
	} else if c.readFailing {
		c.logger.Info("Reading the runs for metrics succeeded again")
	}
	c.readFailing = err != nil
	readErrors := c.readErrors
	c.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(c.storeRuns, prometheus.GaugeValue, float64(c.stats.Runs()))
	ch <- prometheus.MustNewConstMetric(c.storeErrors, prometheus.CounterValue, c.stats.Errors()+readErrors)
	if err == nil {
		c.sendGauges(ch, specs, sums)
	}
}

// gaugeFamily appends the series of one gauge family for one pipeline.
// Called with mu held.
type gaugeFamily func(out []prometheus.Metric, spec *pipeline.Spec, sum *pipeline.PipelineSummary, ps *pipelineSeries) []prometheus.Metric

// sendGauges sends the gauges of every configured pipeline, built from its
// summary, one family at a time.
func (c *Collector) sendGauges(ch chan<- prometheus.Metric, specs []pipeline.Spec, sums []pipeline.PipelineSummary) {
	byName := make(map[string]*pipeline.PipelineSummary, len(sums))
	for i := range sums {
		byName[sums[i].Pipeline] = &sums[i]
	}
	summary := func(name string) *pipeline.PipelineSummary {
		if sum := byName[name]; sum != nil {
			return sum
		}
		return &pipeline.PipelineSummary{Pipeline: name}
	}
	// A scrape after a reload may have removed a pipeline of specs since
	// this one's syncSpecs.
	c.mu.Lock()
	for i := range specs {
		if ps := c.pipelines[specs[i].Name]; ps != nil {
			c.rememberLastRuns(ps, summary(specs[i].Name))
		}
	}
	c.mu.Unlock()

	var family []prometheus.Metric
	for _, add := range c.gaugeFamilies() {
		family = family[:0]
		c.mu.Lock()
		for i := range specs {
			if ps := c.pipelines[specs[i].Name]; ps != nil {
				family = add(family, &specs[i], summary(specs[i].Name), ps)
			}
		}
		c.mu.Unlock()
		for _, m := range family {
			ch <- m
		}
	}
}

// gaugeFamilies returns the builders of the gauge families, one each.
func (c *Collector) gaugeFamilies() []gaugeFamily {
	gauge := func(out []prometheus.Metric, d *prometheus.Desc, v float64, lvs ...string) []prometheus.Metric {
		return append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lvs...))
	}
	// lastRun builds a family of the pipeline's last finished run.
	lastRun := func(f func(out []prometheus.Metric, name string, r *pipeline.Run) []prometheus.Metric) gaugeFamily {
		return func(out []prometheus.Metric, spec *pipeline.Spec, sum *pipeline.PipelineSummary, _ *pipelineSeries) []prometheus.Metric {
			if sum.LastFinished == nil {
				return out
			}
			return f(out, spec.Name, sum.LastFinished)
		}
	}
	// lastStages builds a family of the stages of the pipeline's last
	// finished run that are in its metrics: a stage the run did not have,
	// or one evicted from the metrics, gets no series. A run could repeat
	// a job name: the first one counts, since a label set may be
	// exported only once.
	seen := map[string]bool{}
	lastStages := func(f func(out []prometheus.Metric, name, label string, st *pipeline.Stage) []prometheus.Metric) gaugeFamily {
		return func(out []prometheus.Metric, spec *pipeline.Spec, sum *pipeline.PipelineSummary, ps *pipelineSeries) []prometheus.Metric {
			r := sum.LastFinished
			if r == nil {
				return out
			}
			clear(seen)
			for i := range r.Stages {
				label, _ := stageLabel(r.Stages[i].Name)
				if seen[label] || ps.stages[label] == nil {
					continue
				}
				seen[label] = true
				out = f(out, spec.Name, label, &r.Stages[i])
			}
			return out
		}
	}
	return []gaugeFamily{
		func(out []prometheus.Metric, spec *pipeline.Spec, sum *pipeline.PipelineSummary, _ *pipelineSeries) []prometheus.Metric {
			return gauge(out, c.runsInProgress, float64(sum.InProgress), spec.Name)
		},
		func(out []prometheus.Metric, spec *pipeline.Spec, _ *pipeline.PipelineSummary, _ *pipelineSeries) []prometheus.Metric {
			if spec.SlowThreshold <= 0 {
				return out
			}
			return gauge(out, c.slowThreshold, spec.SlowThreshold.Seconds(), spec.Name)
		},
		func(out []prometheus.Metric, spec *pipeline.Spec, sum *pipeline.PipelineSummary, _ *pipelineSeries) []prometheus.Metric {
			if r := sum.LastSuccess; r != nil && r.FinishedAt != nil && unixTime(*r.FinishedAt) {
				return gauge(out, c.lastSuccessTimestamp, unixSeconds(*r.FinishedAt), spec.Name)
			}
			return out
		},
		c.live.stale, c.live.lastCheck, c.live.build,
		lastRun(func(out []prometheus.Metric, name string, r *pipeline.Run) []prometheus.Metric {
			return gauge(out, c.lastRunStatus, 1, name, string(r.Status))
		}),
		lastRun(func(out []prometheus.Metric, name string, r *pipeline.Run) []prometheus.Metric {
			return gauge(out, c.lastRunDuration, r.DurationSeconds, name)
		}),
		lastRun(func(out []prometheus.Metric, name string, r *pipeline.Run) []prometheus.Metric {
			if r.FinishedAt == nil || !unixTime(*r.FinishedAt) {
				return out
			}
			return gauge(out, c.lastRunTimestamp, unixSeconds(*r.FinishedAt), name)
		}),
		lastStages(func(out []prometheus.Metric, name, label string, st *pipeline.Stage) []prometheus.Metric {
			return gauge(out, c.lastStageStatus, 1, name, label, string(st.Status))
		}),
		lastStages(func(out []prometheus.Metric, name, label string, st *pipeline.Stage) []prometheus.Metric {
			return gauge(out, c.lastStageDuration, st.DurationSeconds, name, label)
		}),
	}
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
		c.stageRuns.with(name, stage, string(st.Status)).value++
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
		c.runs.with(name, string(u.Run.Trigger.Source), status).value++
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
