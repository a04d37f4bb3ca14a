// Package collector projects pipeline state onto Prometheus metrics. The
// last_* gauges are const metrics built from the engine's Snapshot at each
// scrape, so they survive restarts and vanish with the state; the counters
// and histograms are in-process and start at zero, as Prometheus expects.
package collector

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// maxStagesPerPipeline bounds the stage names remembered per pipeline, and
// with them the stage series: job names come from workflow files, which
// change over time.
const maxStagesPerPipeline = 100

var (
	// runBuckets span a trigger answered in a second to GitHub's 6h job limit.
	runBuckets = []float64{1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600}
	// verifyBuckets span a cached page to the default 10s check timeout.
	verifyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	// terminalStatuses are the values of pipeline_last_run_status: the
	// last finished run is never pending or running.
	terminalStatuses = func() []pipeline.Status {
		var out []pipeline.Status
		for _, s := range pipeline.RunStatuses {
			if s.Terminal() {
				out = append(out, s)
			}
		}
		return out
	}()
)

// Source is what the collector projects; pipeline.Engine implements it.
type Source interface {
	Snapshot() pipeline.Snapshot
}

// StoreStats reports on the run store. Both are called at every scrape, so
// they must be cheap: a kept count, never a scan of the store.
type StoreStats interface {
	// Runs returns how many runs the store holds.
	Runs() int64
	// Errors returns how many store operations failed since start.
	Errors() float64
}

// Collector is a prometheus.Collector for the pipeline_* metrics and the
// store's pipeline_exporter_store_* metrics. Its scrape cost depends on the
// number of pipelines and stages, never on the number of stored runs.
type Collector struct {
	src   Source
	stats StoreStats

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

	runsTotal      *prometheus.CounterVec
	runDuration    *prometheus.HistogramVec
	stageRuns      *prometheus.CounterVec
	stageDuration  *prometheus.HistogramVec
	stageQueued    *prometheus.HistogramVec
	verifyResponse *prometheus.HistogramVec

	// mu guards the fields below and orders series creation (Observe)
	// against series deletion (a pipeline or stage forgotten).
	mu sync.Mutex
	// pipelines holds the pipelines configured as of the last snapshot
	// seen; updates for others are dropped.
	pipelines map[string]*pipelineMemory
	// gen numbers snapshots so that pipelines missing from the latest can
	// be found without a set per scrape.
	gen uint64
	// seq orders stage sightings, to forget the least recently seen.
	seq uint64
}

// pipelineMemory is what the collector keeps per configured pipeline.
type pipelineMemory struct {
	gen uint64
	// sources is the bit set, over pipeline.Sources, of the trigger
	// sources whose pipeline_runs_total series exist.
	sources uint
	// stages maps each remembered stage name to the seq of its last sighting.
	stages map[string]uint64
	// lastRunID is the last finished run whose stages were remembered.
	lastRunID int64
}

// New returns a Collector reading src and stats. Register it once.
func New(src Source, stats StoreStats) *Collector {
	pl := []string{"pipeline"}
	return &Collector{
		src:   src,
		stats: stats,
		runsInProgress: prometheus.NewDesc("pipeline_runs_in_progress",
			"Number of runs of the pipeline that have not finished.", pl, nil),
		lastRunStatus: prometheus.NewDesc("pipeline_last_run_status",
			"Status of the pipeline's last finished run, 1 for its status and 0 for the others.",
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
			"Status of each stage of the pipeline's last finished run, 1 for its status and 0 for the others, or 0 for all when that run did not have the stage.",
			[]string{"pipeline", "stage", "status"}, nil),
		lastStageDuration: prometheus.NewDesc("pipeline_last_stage_duration_seconds",
			"Duration in seconds of each stage of the pipeline's last finished run.",
			[]string{"pipeline", "stage"}, nil),
		storeRuns: prometheus.NewDesc("pipeline_exporter_store_runs",
			"Number of runs in the store.", nil, nil),
		storeErrors: prometheus.NewDesc("pipeline_exporter_store_errors_total",
			"Total number of failed store operations.", nil, nil),

		runsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_runs_total",
			Help: "Total number of finished runs, by trigger source and final status.",
		}, []string{"pipeline", "trigger", "status"}),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pipeline_run_duration_seconds",
			Help:    "Seconds from the first trigger to the finish of each run, by final status.",
			Buckets: runBuckets,
		}, []string{"pipeline", "status"}),
		stageRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_stage_runs_total",
			Help: "Total number of finished stages, by final status.",
		}, []string{"pipeline", "stage", "status"}),
		stageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pipeline_stage_duration_seconds",
			Help:    "Duration in seconds of each finished stage that started.",
			Buckets: runBuckets,
		}, []string{"pipeline", "stage"}),
		stageQueued: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pipeline_stage_queued_seconds",
			Help:    "Seconds each job stage waited from job creation to job start.",
			Buckets: runBuckets,
		}, []string{"pipeline", "stage"}),
		verifyResponse: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pipeline_verify_response_seconds",
			Help:    "Response time in seconds of each live-site check attempt that got an answer.",
			Buckets: verifyBuckets,
		}, pl),

		pipelines: map[string]*pipelineMemory{},
	}
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
	for _, v := range c.vecs() {
		v.Describe(ch)
	}
}

func (c *Collector) vecs() []*prometheus.MetricVec {
	return []*prometheus.MetricVec{
		c.runsTotal.MetricVec, c.runDuration.MetricVec, c.stageRuns.MetricVec,
		c.stageDuration.MetricVec, c.stageQueued.MetricVec, c.verifyResponse.MetricVec,
	}
}

// Collect implements prometheus.Collector. The last_* gauges of a pipeline
// with no finished run are absent rather than zero, so that no alert reads
// a run that never happened; pipeline_slow_threshold_seconds is absent when
// no threshold is configured.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.src.Snapshot()
	ch <- prometheus.MustNewConstMetric(c.storeRuns, prometheus.GaugeValue, float64(c.stats.Runs()))
	ch <- prometheus.MustNewConstMetric(c.storeErrors, prometheus.CounterValue, c.stats.Errors())

	c.mu.Lock()
	c.sync(snap)
	for i := range snap.Pipelines {
		c.collectPipeline(ch, &snap.Pipelines[i])
	}
	c.mu.Unlock()

	for _, v := range c.vecs() {
		v.Collect(ch)
	}
}

func (c *Collector) collectPipeline(ch chan<- prometheus.Metric, ps *pipeline.PipelineState) {
	name := ps.Spec.Name
	ch <- prometheus.MustNewConstMetric(c.runsInProgress, prometheus.GaugeValue, float64(ps.InProgress), name)
	if t := ps.Spec.SlowThreshold; t > 0 {
		ch <- prometheus.MustNewConstMetric(c.slowThreshold, prometheus.GaugeValue, t.Seconds(), name)
	}
	if r := ps.LastSuccess; r != nil && r.FinishedAt != nil {
		ch <- prometheus.MustNewConstMetric(c.lastSuccessTimestamp, prometheus.GaugeValue, unixSeconds(r.FinishedAt), name)
	}
	r := ps.LastFinished
	if r == nil {
		return
	}
	for _, s := range terminalStatuses {
		ch <- prometheus.MustNewConstMetric(c.lastRunStatus, prometheus.GaugeValue, oneHot(r.Status == s), name, string(s))
	}
	ch <- prometheus.MustNewConstMetric(c.lastRunDuration, prometheus.GaugeValue, r.DurationSeconds, name)
	if r.FinishedAt != nil {
		ch <- prometheus.MustNewConstMetric(c.lastRunTimestamp, prometheus.GaugeValue, unixSeconds(r.FinishedAt), name)
	}

	for i, st := range r.Stages {
		// A run could repeat a job name; the first one counts, as for
		// Run.Stage, since a label set may be exported only once.
		if r.Stage(st.Name) != &r.Stages[i] {
			continue
		}
		for _, s := range pipeline.StageStatuses {
			ch <- prometheus.MustNewConstMetric(c.lastStageStatus, prometheus.GaugeValue, oneHot(st.Status == s), name, st.Name, string(s))
		}
		ch <- prometheus.MustNewConstMetric(c.lastStageDuration, prometheus.GaugeValue, st.DurationSeconds, name, st.Name)
	}
	for stage := range c.pipelines[name].stages {
		if r.Stage(stage) != nil {
			continue
		}
		for _, s := range pipeline.StageStatuses {
			ch <- prometheus.MustNewConstMetric(c.lastStageStatus, prometheus.GaugeValue, 0, name, stage, string(s))
		}
	}
}

// Observe counts what one committed update finished. The engine calls it
// once per update, in commit order, and not under its own lock: an update
// for a pipeline the collector has not seen makes it read a fresh Snapshot.
func (c *Collector) Observe(u pipeline.Update) {
	if u.Run == nil || !c.configured(u.Run.Pipeline) {
		return
	}
	name := u.Run.Pipeline
	c.mu.Lock()
	defer c.mu.Unlock()
	mem := c.pipelines[name]
	if mem == nil {
		// A scrape saw the pipeline removed since configured() looked.
		return
	}
	for _, st := range u.StagesFinished {
		c.remember(name, mem, st.Name)
		c.stageRuns.WithLabelValues(name, st.Name, string(st.Status)).Inc()
		// A skipped or never-started stage has no duration worth a bucket.
		if st.StartedAt == nil || st.Status == pipeline.StatusSkipped {
			continue
		}
		c.stageDuration.WithLabelValues(name, st.Name).Observe(st.DurationSeconds)
		if st.JobID != 0 {
			c.stageQueued.WithLabelValues(name, st.Name).Observe(st.QueuedSeconds)
		}
	}
	if u.Finished {
		status := string(u.Run.Status)
		c.runsTotal.WithLabelValues(name, string(u.Run.Trigger.Source), status).Inc()
		c.runDuration.WithLabelValues(name, status).Observe(u.Run.DurationSeconds)
	}
}

// ObserveVerify records the response time of one live-site check attempt
// of the named pipeline.
func (c *Collector) ObserveVerify(pipeline string, seconds float64) {
	if !c.configured(pipeline) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pipelines[pipeline] != nil {
		c.verifyResponse.WithLabelValues(pipeline).Observe(seconds)
	}
}

// configured reports whether name is a configured pipeline. A name not
// seen yet may have been added by a reload since the last scrape, so it
// is looked up in a fresh snapshot, taken without holding mu.
func (c *Collector) configured(name string) bool {
	c.mu.Lock()
	_, ok := c.pipelines[name]
	c.mu.Unlock()
	if ok {
		return true
	}
	snap := c.src.Snapshot()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sync(snap)
	_, ok = c.pipelines[name]
	return ok
}

// sync makes the remembered pipelines those of snap: new ones get their
// pipeline_runs_total series at zero, so that rate() and increase() see
// the first failure; removed ones lose every series. Called with mu held.
func (c *Collector) sync(snap pipeline.Snapshot) {
	c.gen++
	for i := range snap.Pipelines {
		ps := &snap.Pipelines[i]
		name := ps.Spec.Name
		mem := c.pipelines[name]
		if mem == nil {
			mem = &pipelineMemory{stages: map[string]uint64{}}
			c.pipelines[name] = mem
		}
		mem.gen = c.gen
		if sources := triggerSources(ps.Spec); sources&^mem.sources != 0 {
			for bit, src := range pipeline.Sources {
				if sources&(1<<bit) == 0 {
					continue
				}
				for _, s := range terminalStatuses {
					c.runsTotal.WithLabelValues(name, string(src), string(s))
				}
			}
			mem.sources |= sources
		}
		if r := ps.LastFinished; r != nil && r.ID != mem.lastRunID {
			mem.lastRunID = r.ID
			for _, st := range r.Stages {
				c.remember(name, mem, st.Name)
			}
		}
	}
	for name, mem := range c.pipelines {
		if mem.gen != c.gen {
			delete(c.pipelines, name)
			for _, v := range c.vecs() {
				v.DeletePartialMatch(prometheus.Labels{"pipeline": name})
			}
		}
	}
}

// remember marks stage as just seen in pipeline name, and forgets the
// least recently seen stage, with its series, beyond the bound. Called
// with mu held.
func (c *Collector) remember(name string, mem *pipelineMemory, stage string) {
	c.seq++
	mem.stages[stage] = c.seq
	if len(mem.stages) <= maxStagesPerPipeline {
		return
	}
	oldest, oldestSeq := "", c.seq
	for s, seq := range mem.stages {
		if seq < oldestSeq {
			oldest, oldestSeq = s, seq
		}
	}
	delete(mem.stages, oldest)
	match := prometheus.Labels{"pipeline": name, "stage": oldest}
	c.stageRuns.DeletePartialMatch(match)
	c.stageDuration.DeletePartialMatch(match)
	c.stageQueued.DeletePartialMatch(match)
}

// triggerSources returns the bit set, over pipeline.Sources, of the
// sources that can start runs of spec: its rules' sources, and github,
// since GitHub can always start a run itself.
func triggerSources(spec pipeline.Spec) uint {
	var set uint
	for i, src := range pipeline.Sources {
		if src == pipeline.SourceGitHub {
			set |= 1 << i
			continue
		}
		for _, rule := range spec.Triggers {
			if rule.Source == src {
				set |= 1 << i
				break
			}
		}
	}
	return set
}

func oneHot(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t *time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}
