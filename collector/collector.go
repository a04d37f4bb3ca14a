// Package collector projects pipeline state onto Prometheus metrics. The
// last_* gauges are const metrics projected from the engine's Snapshot at
// each scrape, so they survive restarts and vanish with the state; the
// counters and histograms are in-process and start at zero, as Prometheus
// expects.
//
// Buckets: pipeline_run_duration_seconds has 13, from 1s to GitHub's 6h job
// limit. pipeline_stage_duration_seconds and pipeline_stage_queued_seconds
// have 10, from 1s to 1h: a stage is a part of a run, and one that takes
// longer than an hour lands in +Inf, where the run's own histogram and
// alerts still see it. pipeline_verify_response_seconds has 8, from 50ms to
// the default 10s check timeout.
package collector

import (
	"slices"
	"strings"
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
	// stageBuckets span an instant stage to an hour, with fewer buckets than
	// runBuckets: there are many stages per run, and every bucket is a
	// series of each.
	stageBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600}
	// verifyBuckets span a cached page to the default 10s check timeout.
	verifyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	// terminalStatuses are the values of pipeline_last_run_status: the
	// last finished run is never pending or running.
	terminalStatuses = sortedStatuses(pipeline.RunStatuses, true)
	// stageStatuses are the values of pipeline_last_stage_status.
	stageStatuses = sortedStatuses(pipeline.StageStatuses, false)
	// terminalStageStatuses are the statuses a finished stage is counted with.
	terminalStageStatuses = sortedStatuses(pipeline.StageStatuses, true)
)

// sortedStatuses returns a copy of statuses, only the terminal ones when
// terminal is set, sorted by value: the registry sorts each family's series
// by label values, which costs least when they come in that order.
func sortedStatuses(statuses []pipeline.Status, terminal bool) []pipeline.Status {
	out := slices.DeleteFunc(slices.Clone(statuses), func(s pipeline.Status) bool { return terminal && !s.Terminal() })
	slices.Sort(out)
	return out
}

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

// The families of counters and histograms, indexing Collector.vecs and
// pipelineMemory.series.
const (
	famRuns = iota
	famRunDuration
	famStageRuns
	famStageDuration
	famStageQueued
	famVerify
	numFamilies
)

// stageFamilies are the families with a stage label.
var stageFamilies = []int{famStageRuns, famStageDuration, famStageQueued}

// Collector is a prometheus.Collector for the pipeline_* metrics and the
// store's pipeline_exporter_store_* metrics. Its scrape cost depends on the
// number of pipelines and stages, never on the number of stored runs.
//
// The Prometheus registry checks and sorts every series at every scrape,
// which is most of the cost of one. So the collector rebuilds a pipeline's
// gauges only when what they show has changed, and sends every family's
// series in the order the registry sorts them into, where sorting costs
// least.
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

	// vecs make and find the counters and histograms, by family. Their
	// label names are in alphabetical order, as the exposition lists them,
	// so that label values joined in that order sort like the series.
	vecs [numFamilies]*prometheus.MetricVec

	// mu guards the fields below and orders series creation (Observe)
	// against series deletion (a pipeline or stage forgotten).
	mu sync.Mutex
	// pipelines holds the pipelines configured as of the last snapshot
	// seen; updates for others are dropped.
	pipelines map[string]*pipelineMemory
	// order is the values of pipelines sorted by name, the order in which
	// their series are sent.
	order []*pipelineMemory
	// gen numbers snapshots so that pipelines missing from the latest can
	// be found without a set per scrape.
	gen uint64
	// seq orders stage sightings, to forget the least recently seen.
	seq uint64
	// collected is how many metrics the last scrape sent.
	collected int
}

// pipelineMemory is what the collector keeps per configured pipeline.
type pipelineMemory struct {
	name string
	gen  uint64
	// index is the pipeline's position in the snapshot last synced.
	index int
	// sources is the bit set, over pipeline.Sources, of the trigger
	// sources whose pipeline_runs_total series exist.
	sources uint
	// stages holds each remembered stage name.
	stages map[string]*stageMemory
	// stageSet changes whenever a stage name is added to or removed from
	// stages, since the last-run gauges list every remembered stage.
	stageSet uint64
	// lastRunID is the last finished run whose stages were remembered.
	lastRunID int64
	// series holds the pipeline's counters and histograms, by family.
	series [numFamilies]children
	gauges gaugeCache
}

// stageMemory is what the collector keeps per remembered stage.
type stageMemory struct {
	// seq is the seq of the stage's last sighting.
	seq uint64
	// job is set once the stage was seen as a GitHub job, the only kind
	// of stage with a queue time.
	job bool
}

// children is one family's series of one pipeline, sorted by key: the
// series' label values after the pipeline's, in label name order, joined
// by a zero byte, which sorts before any character of a value.
type children struct {
	keys    []string
	metrics []prometheus.Metric
}

func childKey(lvs []string) string { return strings.Join(lvs, "\x00") }

// deleteFunc removes the series whose key del reports.
func (cs *children) deleteFunc(del func(key string) bool) {
	kept := 0
	for i, k := range cs.keys {
		if !del(k) {
			cs.keys[kept], cs.metrics[kept] = k, cs.metrics[i]
			kept++
		}
	}
	clear(cs.keys[kept:])
	clear(cs.metrics[kept:])
	cs.keys, cs.metrics = cs.keys[:kept], cs.metrics[:kept]
}

// gaugeCache holds a pipeline's const metrics with what they were built
// from: the metrics of the last runs change a few times an hour, and a
// thousand pipelines' worth is too much garbage to make at every scrape.
type gaugeCache struct {
	inProgress      prometheus.Metric
	inProgressValue int
	// slowThreshold is nil when no threshold is configured.
	slowThreshold      prometheus.Metric
	slowThresholdValue time.Duration
	// lastSuccess is nil when no run succeeded; lastSuccessAt is then zero.
	lastSuccess   prometheus.Metric
	lastSuccessAt time.Time
	// lastRun holds the metrics of the last finished run, built from
	// lastRunView and the remembered stages as of lastRunStageSet.
	lastRun         []prometheus.Metric
	lastRunView     runView
	lastRunStageSet uint64
}

// runView is the part of a run that its gauges show. It is compared with
// the snapshot's run field by field, not by run ID: the tracker keeps a
// finished run for late events, which may change it under the same ID.
type runView struct {
	present  bool
	status   pipeline.Status
	duration float64
	finished time.Time
	stages   []stageView
}

type stageView struct {
	name     string
	status   pipeline.Status
	duration float64
}

func viewOf(r *pipeline.Run) runView {
	if r == nil {
		return runView{}
	}
	v := runView{present: true, status: r.Status, duration: r.DurationSeconds, finished: finishedAt(r), stages: make([]stageView, len(r.Stages))}
	for i, st := range r.Stages {
		v.stages[i] = stageView{name: st.Name, status: st.Status, duration: st.DurationSeconds}
	}
	return v
}

// shows reports whether v is the view of r.
func (v *runView) shows(r *pipeline.Run) bool {
	if r == nil || !v.present {
		return r == nil && !v.present
	}
	if r.Status != v.status || r.DurationSeconds != v.duration || !finishedAt(r).Equal(v.finished) || len(r.Stages) != len(v.stages) {
		return false
	}
	for i, st := range r.Stages {
		if (stageView{name: st.Name, status: st.Status, duration: st.DurationSeconds}) != v.stages[i] {
			return false
		}
	}
	return true
}

func finishedAt(r *pipeline.Run) time.Time {
	if r.FinishedAt == nil {
		return time.Time{}
	}
	return *r.FinishedAt
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

		vecs: [numFamilies]*prometheus.MetricVec{
			famRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pipeline_runs_total",
				Help: "Total number of finished runs, by trigger source and final status.",
			}, []string{"pipeline", "status", "trigger"}).MetricVec,
			famRunDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "pipeline_run_duration_seconds",
				Help:    "Seconds from the first trigger to the finish of each run, by final status.",
				Buckets: runBuckets,
			}, []string{"pipeline", "status"}).MetricVec,
			famStageRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pipeline_stage_runs_total",
				Help: "Total number of finished stages, by final status.",
			}, []string{"pipeline", "stage", "status"}).MetricVec,
			famStageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "pipeline_stage_duration_seconds",
				Help:    "Duration in seconds of each finished stage that started.",
				Buckets: stageBuckets,
			}, []string{"pipeline", "stage"}).MetricVec,
			famStageQueued: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "pipeline_stage_queued_seconds",
				Help:    "Seconds each job stage waited from job creation to job start.",
				Buckets: stageBuckets,
			}, []string{"pipeline", "stage"}).MetricVec,
			famVerify: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "pipeline_verify_response_seconds",
				Help:    "Response time in seconds of each live-site check attempt that got an answer.",
				Buckets: verifyBuckets,
			}, pl).MetricVec,
		},

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
	for _, v := range c.vecs {
		v.Describe(ch)
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

	// The metrics are listed under mu and sent after it, since sending
	// waits for the registry, and Observe must not wait for a scrape.
	c.mu.Lock()
	c.sync(snap)
	out := make([]prometheus.Metric, 0, c.collected)
	for _, mem := range c.order {
		out = c.appendGauges(out, mem, &snap.Pipelines[mem.index])
		for f := range mem.series {
			out = append(out, mem.series[f].metrics...)
		}
	}
	c.collected = len(out)
	c.mu.Unlock()

	for _, m := range out {
		ch <- m
	}
}

// appendGauges appends the gauges of one pipeline to out, rebuilding those
// whose inputs changed since the last scrape. Called with mu held.
func (c *Collector) appendGauges(out []prometheus.Metric, mem *pipelineMemory, ps *pipeline.PipelineState) []prometheus.Metric {
	name, g := mem.name, &mem.gauges
	if g.inProgress == nil || ps.InProgress != g.inProgressValue {
		g.inProgress = prometheus.MustNewConstMetric(c.runsInProgress, prometheus.GaugeValue, float64(ps.InProgress), name)
		g.inProgressValue = ps.InProgress
	}
	out = append(out, g.inProgress)

	if t := max(ps.Spec.SlowThreshold, 0); t != g.slowThresholdValue {
		g.slowThreshold = nil
		if t > 0 {
			g.slowThreshold = prometheus.MustNewConstMetric(c.slowThreshold, prometheus.GaugeValue, t.Seconds(), name)
		}
		g.slowThresholdValue = t
	}
	if g.slowThreshold != nil {
		out = append(out, g.slowThreshold)
	}

	var success time.Time
	if r := ps.LastSuccess; r != nil {
		success = finishedAt(r)
	}
	if !success.Equal(g.lastSuccessAt) {
		g.lastSuccess = nil
		if !success.IsZero() {
			g.lastSuccess = prometheus.MustNewConstMetric(c.lastSuccessTimestamp, prometheus.GaugeValue, unixSeconds(&success), name)
		}
		g.lastSuccessAt = success
	}
	if g.lastSuccess != nil {
		out = append(out, g.lastSuccess)
	}

	if !g.lastRunView.shows(ps.LastFinished) || g.lastRunStageSet != mem.stageSet {
		g.lastRun = c.lastRunMetrics(mem, ps.LastFinished)
		g.lastRunView = viewOf(ps.LastFinished)
		g.lastRunStageSet = mem.stageSet
	}
	return append(out, g.lastRun...)
}

// lastRunMetrics builds the gauges of the pipeline's last finished run r:
// none when there is none. Every remembered stage gets its one-hot series,
// all zero for a stage r did not have. Called with mu held.
func (c *Collector) lastRunMetrics(mem *pipelineMemory, r *pipeline.Run) []prometheus.Metric {
	if r == nil {
		return nil
	}
	name := mem.name
	stages := make([]string, 0, len(mem.stages)+len(r.Stages))
	for stage := range mem.stages {
		stages = append(stages, stage)
	}
	for _, st := range r.Stages {
		stages = append(stages, st.Name)
	}
	slices.Sort(stages)
	stages = slices.Compact(stages)

	out := make([]prometheus.Metric, 0, len(terminalStatuses)+2+len(stages)*(len(stageStatuses)+1))
	for _, s := range terminalStatuses {
		out = append(out, prometheus.MustNewConstMetric(c.lastRunStatus, prometheus.GaugeValue, oneHot(r.Status == s), name, string(s)))
	}
	out = append(out, prometheus.MustNewConstMetric(c.lastRunDuration, prometheus.GaugeValue, r.DurationSeconds, name))
	if r.FinishedAt != nil {
		out = append(out, prometheus.MustNewConstMetric(c.lastRunTimestamp, prometheus.GaugeValue, unixSeconds(r.FinishedAt), name))
	}
	for _, stage := range stages {
		// A run could repeat a job name; the first one counts, as for
		// Run.Stage, since a label set may be exported only once.
		st := r.Stage(stage)
		for _, s := range stageStatuses {
			out = append(out, prometheus.MustNewConstMetric(c.lastStageStatus, prometheus.GaugeValue, oneHot(st != nil && st.Status == s), name, stage, string(s)))
		}
		if st != nil {
			out = append(out, prometheus.MustNewConstMetric(c.lastStageDuration, prometheus.GaugeValue, st.DurationSeconds, name, stage))
		}
	}
	return out
}

// Observe counts what one committed update finished. The engine calls it
// once per update, in commit order, and not under its own lock: an update
// for a pipeline the collector has not seen makes it read a fresh Snapshot.
func (c *Collector) Observe(u pipeline.Update) {
	if u.Run == nil || !c.configured(u.Run.Pipeline) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	mem := c.pipelines[u.Run.Pipeline]
	if mem == nil {
		// A scrape saw the pipeline removed since configured() looked.
		return
	}
	for _, st := range u.StagesFinished {
		c.remember(mem, st.Name, st.JobID != 0)
		c.child(mem, famStageRuns, st.Name, string(st.Status)).(prometheus.Counter).Inc()
		// A skipped or never-started stage has no duration worth a bucket.
		if st.StartedAt == nil || st.Status == pipeline.StatusSkipped {
			continue
		}
		c.child(mem, famStageDuration, st.Name).(prometheus.Histogram).Observe(st.DurationSeconds)
		if st.JobID != 0 {
			c.child(mem, famStageQueued, st.Name).(prometheus.Histogram).Observe(st.QueuedSeconds)
		}
	}
	if u.Finished {
		status := string(u.Run.Status)
		c.child(mem, famRuns, status, string(u.Run.Trigger.Source)).(prometheus.Counter).Inc()
		c.child(mem, famRunDuration, status).(prometheus.Histogram).Observe(u.Run.DurationSeconds)
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
	if mem := c.pipelines[pipeline]; mem != nil {
		c.child(mem, famVerify).(prometheus.Histogram).Observe(seconds)
	}
}

// child returns the series of family f of the pipeline with the label
// values lvs after the pipeline's, in label name order, making it at zero
// if it does not exist. Called with mu held.
func (c *Collector) child(mem *pipelineMemory, f int, lvs ...string) prometheus.Metric {
	cs := &mem.series[f]
	key := childKey(lvs)
	i, found := slices.BinarySearch(cs.keys, key)
	if found {
		return cs.metrics[i]
	}
	m, err := c.vecs[f].GetMetricWithLabelValues(append([]string{mem.name}, lvs...)...)
	if err != nil {
		// The label count is fixed here, and values come from decoded
		// JSON and YAML, which are valid UTF-8; WithLabelValues panics
		// alike.
		panic(err)
	}
	cs.keys = slices.Insert(cs.keys, i, key)
	cs.metrics = slices.Insert(cs.metrics, i, m)
	return m
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
// pipeline_runs_total and pipeline_run_duration_seconds series at zero, so
// that rate() and increase() see the first failure; removed ones lose every
// series. Called with mu held.
func (c *Collector) sync(snap pipeline.Snapshot) {
	c.gen++
	changed := false
	for i := range snap.Pipelines {
		ps := &snap.Pipelines[i]
		name := ps.Spec.Name
		mem := c.pipelines[name]
		if mem == nil {
			mem = &pipelineMemory{name: name, stages: map[string]*stageMemory{}}
			c.pipelines[name] = mem
			changed = true
			for _, s := range terminalStatuses {
				c.child(mem, famRunDuration, string(s))
			}
		}
		mem.gen = c.gen
		mem.index = i
		if sources := triggerSources(ps.Spec); sources&^mem.sources != 0 {
			for bit, src := range pipeline.Sources {
				if sources&(1<<bit) == 0 {
					continue
				}
				for _, s := range terminalStatuses {
					c.child(mem, famRuns, string(s), string(src))
				}
			}
			mem.sources |= sources
		}
		if r := ps.LastFinished; r != nil && r.ID != mem.lastRunID {
			mem.lastRunID = r.ID
			for _, st := range r.Stages {
				c.remember(mem, st.Name, st.JobID != 0)
			}
		}
	}
	for name, mem := range c.pipelines {
		if mem.gen != c.gen {
			delete(c.pipelines, name)
			changed = true
			for _, v := range c.vecs {
				v.DeletePartialMatch(prometheus.Labels{"pipeline": name})
			}
		}
	}
	if changed {
		c.order = c.order[:0]
		for _, mem := range c.pipelines {
			c.order = append(c.order, mem)
		}
		slices.SortFunc(c.order, func(a, b *pipelineMemory) int { return strings.Compare(a.name, b.name) })
	}
}

// remember marks stage as just seen in the pipeline, and forgets the least
// recently seen stage, with its series, beyond the bound. A stage seen for
// the first time gets its counters and histograms at zero, so that rate()
// and increase() see its first failure; job says whether it was seen as a
// GitHub job, which also has a queue time. Called with mu held.
func (c *Collector) remember(mem *pipelineMemory, stage string, job bool) {
	c.seq++
	sm := mem.stages[stage]
	if sm == nil {
		sm = &stageMemory{}
		mem.stages[stage] = sm
		mem.stageSet++
		for _, s := range terminalStageStatuses {
			c.child(mem, famStageRuns, stage, string(s))
		}
		c.child(mem, famStageDuration, stage)
	}
	sm.seq = c.seq
	if job && !sm.job {
		sm.job = true
		c.child(mem, famStageQueued, stage)
	}
	if len(mem.stages) <= maxStagesPerPipeline {
		return
	}
	oldest, oldestSeq := "", c.seq
	for s, sm := range mem.stages {
		if sm.seq < oldestSeq {
			oldest, oldestSeq = s, sm.seq
		}
	}
	delete(mem.stages, oldest)
	mem.stageSet++
	match := prometheus.Labels{"pipeline": mem.name, "stage": oldest}
	prefix := oldest + "\x00"
	for _, f := range stageFamilies {
		c.vecs[f].DeletePartialMatch(match)
		mem.series[f].deleteFunc(func(key string) bool { return key == oldest || strings.HasPrefix(key, prefix) })
	}
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
