package collector

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// pipelineSeries is what the collector keeps per configured pipeline: which
// of its series exist.
type pipelineSeries struct {
	name string
	// stages holds the pipeline's stage label values, at most
	// maxStagesPerPipeline.
	stages map[string]*stageSeries
	// lastRuns are the last finished and last successful runs whose stages
	// were made series, so that each is looked at once, not at every scrape.
	lastRuns [2]runKey
}

// runKey tells one committed version of a run from another: a finished run
// can still change under its ID (late events).
type runKey struct{ id, changeSeq int64 }

func keyOf(r *pipeline.Run) runKey {
	if r == nil {
		return runKey{}
	}
	return runKey{r.ID, r.ChangeSeq}
}

// stageSeries is what the collector keeps per stage label value.
type stageSeries struct {
	// seq is the seq of the stage's last sighting.
	seq uint64
	// job is set once the stage was seen as a GitHub job, the only kind
	// of stage with a queue time.
	job bool
}

// syncSpecs makes the pipelines' series follow the configuration: a new
// pipeline gets its verify histogram at zero; a removed one loses every
// series. The run counters and histograms are labelled by status and made
// by the first run of that status (or rememberLastRuns), like the stage
// counters: one series per status that happened, not one per status that
// could. Called with mu held.
func (c *Collector) syncSpecs(specs []pipeline.Spec) {
	configured := make(map[string]bool, len(specs))
	for _, spec := range specs {
		configured[spec.Name] = true
		if c.pipelines[spec.Name] == nil {
			c.pipelines[spec.Name] = &pipelineSeries{name: spec.Name, stages: map[string]*stageSeries{}}
		}
		if spec.Verify {
			c.verify.with(spec.Name)
		}
	}
	for name := range c.pipelines {
		if configured[name] {
			continue
		}
		delete(c.pipelines, name)
		c.runs.deletePrefix(name)
		c.stageRuns.deletePrefix(name)
		for _, h := range c.histograms() {
			h.deletePrefix(name)
		}
	}
}

// rememberLastRuns makes series of the stages of the summary's last runs
// the first time each version of them is seen, and the status counters of
// the statuses those runs and their stages had, at zero if not yet
// counted: after a restart, rate() and increase() then see the next run of
// a status the pipeline has had, such as the next failure of a pipeline
// whose last run failed. Called with mu held.
func (c *Collector) rememberLastRuns(ps *pipelineSeries, sum *pipeline.PipelineSummary) {
	for i, r := range []*pipeline.Run{sum.LastFinished, sum.LastSuccess} {
		if r == nil || keyOf(r) == ps.lastRuns[i] {
			continue
		}
		ps.lastRuns[i] = keyOf(r)
		if r.Status.Terminal() {
			c.runs.with(ps.name, string(r.Trigger.Source), string(r.Status))
		}
		for _, st := range r.Stages {
			stage := c.rememberStage(ps, st.Name, st.JobID != 0)
			if st.Status.Terminal() {
				c.stageRuns.with(ps.name, stage, string(st.Status))
			}
		}
	}
}

// rememberStage marks the stage as just seen in the pipeline and returns
// its label value. A stage seen for the first time gets its histograms at
// zero, so that rate() and increase() see its first observation (its
// counters come with the first status it finishes with), and evicts the
// least recently seen stage, with its series, when the
// pipeline has maxStagesPerPipeline already: evicting rather than refusing
// keeps the metrics on the jobs a workflow has now, after jobs were renamed
// or removed. job says whether it was seen as a GitHub job, which also has
// a queue time. Called with mu held.
func (c *Collector) rememberStage(ps *pipelineSeries, name string, job bool) string {
	stage, cut := stageLabel(name)
	c.seq++
	ss := ps.stages[stage]
	if ss == nil {
		if len(ps.stages) >= maxStagesPerPipeline {
			c.evictOldestStage(ps)
		}
		if cut {
			c.labelsLimited.with("truncated").value++
		}
		ss = &stageSeries{}
		ps.stages[stage] = ss
		c.stageDuration.with(ps.name, stage)
	}
	ss.seq = c.seq
	if job && !ss.job {
		ss.job = true
		c.stageQueued.with(ps.name, stage)
	}
	return stage
}

// evictOldestStage forgets the pipeline's least recently seen stage and
// deletes its series. Called with mu held.
func (c *Collector) evictOldestStage(ps *pipelineSeries) {
	oldest, oldestSeq := "", c.seq
	for stage, ss := range ps.stages {
		if ss.seq < oldestSeq {
			oldest, oldestSeq = stage, ss.seq
		}
	}
	delete(ps.stages, oldest)
	c.stageRuns.deletePrefix(ps.name, oldest)
	c.stageDuration.delete(ps.name, oldest)
	c.stageQueued.delete(ps.name, oldest)
	c.labelsLimited.with("evicted").value++
}

// stageLabel returns the label value of a stage name, and whether the name
// was cut to fit: a name longer than maxStageLabelBytes becomes its longest
// prefix that fits with "~" and 16 hex digits of its SHA-256, so that long
// names sharing a prefix stay different. Invalid UTF-8, which would make a
// label value the registry refuses, is replaced first: a name the store cut
// at a byte limit may end inside a character.
func stageLabel(name string) (string, bool) {
	if len(name) <= maxStageLabelBytes && utf8.ValidString(name) {
		return name, false
	}
	name = strings.ToValidUTF8(name, "\uFFFD")
	if len(name) <= maxStageLabelBytes {
		return name, false
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "~" + hex.EncodeToString(sum[:8])
	cut := maxStageLabelBytes - len(suffix)
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut] + suffix, true
}
