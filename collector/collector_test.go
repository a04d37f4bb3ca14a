package collector

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.prom from the collector's output")

const goldenFile = "testdata/golden.prom"

// fakeHistory is the store's read side as the collector sees it.
type fakeHistory struct {
	mu   sync.Mutex
	sums []pipeline.PipelineSummary
	err  error
}

func (f *fakeHistory) Summaries(context.Context) ([]pipeline.PipelineSummary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return slices.Clone(f.sums), nil
}

func (f *fakeHistory) set(sums ...pipeline.PipelineSummary) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sums = sums
}

func (f *fakeHistory) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// fakeConfig holds the configured pipelines, as a reload changes them.
type fakeConfig struct {
	mu    sync.Mutex
	specs []pipeline.Spec
}

func (f *fakeConfig) Specs() []pipeline.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.specs
}

func (f *fakeConfig) set(specs ...pipeline.Spec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs = specs
}

type fakeStats struct {
	runs   int64
	errors float64
}

func (f fakeStats) Runs() int64     { return f.runs }
func (f fakeStats) Errors() float64 { return f.errors }

// newCollector returns a collector of the pipelines specs over hist.
func newCollector(t testing.TB, cfg *fakeConfig, hist *fakeHistory, stats fakeStats) *Collector {
	t.Helper()
	c, err := New(Options{Specs: cfg.Specs, History: hist, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// jobStage turns a published workflow_job payload into the stage the
// tracker makes of it, shifted by shift.
func jobStage(t testing.TB, file string, shift time.Duration) pipeline.Stage {
	t.Helper()
	p := fixtures.MustDecode(fixtures.MustLoad(file))
	conclusion := p.String("workflow_job.conclusion")
	status := map[string]pipeline.Status{"success": pipeline.StatusSuccess, "failure": pipeline.StatusFailed}[conclusion]
	if status == "" {
		t.Fatalf("%s: unexpected conclusion %q", file, conclusion)
	}
	created, startedAt, completedAt := p.Time("workflow_job.created_at"), p.Time("workflow_job.started_at"), p.Time("workflow_job.completed_at")
	started, finished := startedAt.Add(shift), completedAt.Add(shift)
	return pipeline.Stage{
		Name: p.String("workflow_job.name"), Status: status, StartedAt: &started, FinishedAt: &finished,
		DurationSeconds: finished.Sub(started).Seconds(), URL: p.String("workflow_job.html_url"), JobID: p.Int("workflow_job.id"),
		QueuedSeconds: startedAt.Sub(created).Seconds(),
	}
}

func stage(name string, status pipeline.Status, from, to time.Time) pipeline.Stage {
	return pipeline.Stage{Name: name, Status: status, StartedAt: &from, FinishedAt: &to, DurationSeconds: to.Sub(from).Seconds()}
}

func finishedRun(id int64, name string, status pipeline.Status, source pipeline.Source, created time.Time, stages ...pipeline.Stage) *pipeline.Run {
	finished := *stages[len(stages)-1].FinishedAt
	return &pipeline.Run{
		ID: id, Pipeline: name, Status: status,
		Trigger:   pipeline.Trigger{Source: source, ReceivedAt: created},
		CreatedAt: created, FinishedAt: &finished, DurationSeconds: finished.Sub(created).Seconds(),
		Stages: stages, SeenAt: created, ChangeSeq: id,
	}
}

var (
	t0       = time.Date(2021, 8, 5, 10, 33, 40, 0, time.UTC)
	siteSpec = pipeline.Spec{
		Name: "site", Workflow: "deploy.yml", Branches: []string{"main"},
		Triggers: []pipeline.TriggerRule{
			{Source: pipeline.SourceSupabase, Table: "posts", Events: []string{"INSERT", "UPDATE", "DELETE"}},
			{Source: pipeline.SourceMailerLite, Events: []string{"campaign.sent"}},
			{Source: pipeline.SourceGitHub, Events: []string{"push", "repository_dispatch", "workflow_dispatch"}},
		},
		PagesProject: "my-site", Verify: true,
		DispatchTimeout: 10 * time.Minute, Timeout: time.Hour, SlowThreshold: 15 * time.Minute,
	}
	newsletterSpec = pipeline.Spec{
		Name: "newsletter", Workflow: "newsletter.yml",
		Triggers: []pipeline.TriggerRule{{Source: pipeline.SourceMailerLite, Events: []string{"campaign.sent"}}},
		Timeout:  time.Hour,
	}
)

// scenario plays two runs of "site" through the collector the way the
// applier would: a Supabase-triggered run that fails at its GitHub job, a
// scrape, then a push-started run that succeeds through pages and verify,
// with a third run in progress; "newsletter" never ran.
func scenario(t testing.TB) *Collector {
	cfg := &fakeConfig{}
	cfg.set(siteSpec, newsletterSpec)
	hist := &fakeHistory{}
	c := newCollector(t, cfg, hist, fakeStats{runs: 3, errors: 2})

	// The failure and success fixtures share their timestamps; the
	// success is moved an hour later so that it is the later run.
	failedJob := jobStage(t, "github/workflow_job/completed.failure.with-organization.json", 0)
	okJob := jobStage(t, "github/workflow_job/completed.success.with-organization.json", time.Hour)

	triggered := failedJob.StartedAt.Add(-78 * time.Second) // 10:33:40, 18 s before the job was created
	dispatched := triggered.Add(15 * time.Second)
	run1 := finishedRun(1, "site", pipeline.StatusFailed, pipeline.SourceSupabase, triggered,
		stage(pipeline.StageTrigger, pipeline.StatusSuccess, triggered, triggered),
		stage(pipeline.StageDispatch, pipeline.StatusSuccess, triggered, dispatched),
		failedJob)
	run1.Error = "stage linters failed"

	created := okJob.StartedAt.Add(-68 * time.Second) // 11:33:50
	pagesDone := okJob.FinishedAt.Add(74 * time.Second)
	verified := pagesDone.Add(2 * time.Second)
	run2 := finishedRun(2, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, created,
		stage(pipeline.StageTrigger, pipeline.StatusSuccess, created, created),
		okJob,
		stage(pipeline.StagePages, pipeline.StatusSuccess, okJob.FinishedAt.Add(4*time.Second), pagesDone),
		stage(pipeline.StageVerify, pipeline.StatusSuccess, pagesDone.Add(time.Second), verified))
	run2.Stages[3].ResponseSeconds = 0.5 // the verify stage

	c.Observe(pipeline.Update{Run: run1, StagesFinished: run1.Stages[:2]})
	c.Observe(pipeline.Update{Run: run1, Finished: true, StagesFinished: run1.Stages[2:]})
	hist.set(pipeline.PipelineSummary{Pipeline: "site", LastFinished: run1})
	if _, err := testutil.GatherAndCount(registry(t, c)); err != nil {
		t.Fatal(err)
	}

	for _, st := range run2.Stages[:3] {
		c.Observe(pipeline.Update{Run: run2, StagesFinished: []pipeline.Stage{st}})
	}
	c.Observe(pipeline.Update{Run: run2, Finished: true, StagesFinished: run2.Stages[3:]})

	run3 := &pipeline.Run{ID: 3, Pipeline: "site", Status: pipeline.StatusPending,
		Trigger: pipeline.Trigger{Source: pipeline.SourceMailerLite, ReceivedAt: verified.Add(time.Hour)}}
	run3.Stages = []pipeline.Stage{stage(pipeline.StageTrigger, pipeline.StatusSuccess, run3.Trigger.ReceivedAt, run3.Trigger.ReceivedAt)}
	c.Observe(pipeline.Update{Run: run3, StagesFinished: run3.Stages})
	// An update that finished nothing counts nothing.
	c.Observe(pipeline.Update{Run: run3, StartVerify: true})

	// A pipeline removed from the configuration, whose runs the history
	// still holds: dropped.
	gone := finishedRun(9, "gone", pipeline.StatusFailed, pipeline.SourceGitHub, created, okJob)
	c.Observe(pipeline.Update{Run: gone, Finished: true, StagesFinished: gone.Stages})

	hist.set(
		pipeline.PipelineSummary{Pipeline: "site", InProgress: 1, LastFinished: run2, LastSuccess: run2},
		pipeline.PipelineSummary{Pipeline: "gone", LastFinished: gone},
	)
	return c
}

func registry(t testing.TB, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestCollectGolden(t *testing.T) {
	c := scenario(t)
	if *update {
		if err := prometheus.WriteToTextfile(goldenFile, registry(t, c)); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(registry(t, c), bytes.NewReader(golden)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestGoldenPassesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH (Debian/Ubuntu package prometheus)")
	}
	golden, err := os.Open(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	defer golden.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = golden
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

const stageHeader = `# HELP pipeline_last_stage_status Status of each stage of the pipeline's last finished run: one series per stage that run had, of value 1, labelled with its status.
# TYPE pipeline_last_stage_status gauge
`

// stageLine renders the one series of one stage's status.
func stageLine(pipelineName, stageName string, status pipeline.Status) string {
	return fmt.Sprintf("pipeline_last_stage_status{pipeline=%q,stage=%q,status=%q} 1\n", pipelineName, stageName, status)
}

func TestLastStageStatus(t *testing.T) {
	t1 := t0.Add(time.Minute)
	st := func(name string, status pipeline.Status) pipeline.Stage { return stage(name, status, t0, t1) }
	tests := []struct {
		name string
		// lastRuns are the stages of the successive last finished runs;
		// the collector is scraped after each.
		lastRuns [][]pipeline.Stage
		want     string
	}{
		{
			name:     "no finished run",
			lastRuns: [][]pipeline.Stage{nil},
			want:     "",
		},
		{
			name: "stage the last run did not have has no series",
			lastRuns: [][]pipeline.Stage{
				{st("trigger", pipeline.StatusSuccess), st("dispatch", pipeline.StatusSuccess), st("build", pipeline.StatusFailed)},
				{st("trigger", pipeline.StatusSuccess), st("build", pipeline.StatusSuccess)},
			},
			want: stageHeader + stageLine("site", "build", pipeline.StatusSuccess) + stageLine("site", "trigger", pipeline.StatusSuccess),
		},
		{
			name: "stage that comes back has its series again",
			lastRuns: [][]pipeline.Stage{
				{st("trigger", pipeline.StatusSuccess), st("verify", pipeline.StatusFailed)},
				{st("trigger", pipeline.StatusTimedOut)},
				{st("trigger", pipeline.StatusSuccess), st("verify", pipeline.StatusSuccess)},
			},
			want: stageHeader + stageLine("site", "trigger", pipeline.StatusSuccess) + stageLine("site", "verify", pipeline.StatusSuccess),
		},
		{
			name: "a repeated stage name counts once, as its first occurrence",
			lastRuns: [][]pipeline.Stage{
				{st("build", pipeline.StatusSkipped), st("build", pipeline.StatusFailed)},
			},
			want: stageHeader + stageLine("site", "build", pipeline.StatusSkipped),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &fakeConfig{}
			cfg.set(siteSpec)
			hist := &fakeHistory{}
			c := newCollector(t, cfg, hist, fakeStats{})
			for i, stages := range tc.lastRuns {
				sum := pipeline.PipelineSummary{Pipeline: "site"}
				if stages != nil {
					sum.LastFinished = finishedRun(int64(i+1), "site", pipeline.StatusFailed, pipeline.SourceGitHub, t0, stages...)
				}
				hist.set(sum)
				if err := testutil.CollectAndCompare(c, strings.NewReader(""), "no_such_metric"); err != nil {
					t.Fatal(err)
				}
			}
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want), "pipeline_last_stage_status"); err != nil {
				t.Error(err)
			}
		})
	}
}

// samples gathers c and returns the value of every series by
// name{labels}: a counter's or gauge's value, a histogram's sample count.
func samples(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	mfs, err := registry(t, c).Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

// count returns how many series of got have every one of substrings in
// their name{labels}.
func count(got map[string]float64, substrings ...string) int {
	n := 0
	for s := range got {
		if !slices.ContainsFunc(substrings, func(sub string) bool { return !strings.Contains(s, sub) }) {
			n++
		}
	}
	return n
}

// check compares the series of got named in want with their values;
// a want of -1 means absent.
func check(t *testing.T, name string, got map[string]float64, want map[string]float64) {
	t.Helper()
	for series, w := range want {
		v, ok := got[series]
		switch {
		case w < 0 && ok:
			t.Errorf("%s: %s = %g, want absent", name, series, v)
		case w >= 0 && !ok:
			t.Errorf("%s: %s absent, want %g", name, series, w)
		case ok && v != w:
			t.Errorf("%s: %s = %g, want %g", name, series, v, w)
		}
	}
}

// TestSeriesFromStart checks which series a restarted collector has before
// anything is observed: histograms of the stages it knows at zero, no
// status counter (those come with the first run or stage of that status),
// and the status gauges of the last run only.
func TestSeriesFromStart(t *testing.T) {
	build := stage("build", pipeline.StatusSuccess, t0, t0.Add(time.Minute))
	build.JobID = 7
	lint := stage("lint", pipeline.StatusSuccess, t0, t0.Add(time.Minute))
	lint.JobID = 6
	// After a restart the collector knows the last runs only from the
	// history: nothing has been observed yet. The last success had a
	// job the last (failed) run did not reach.
	success := finishedRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0,
		stage(pipeline.StageTrigger, pipeline.StatusSuccess, t0, t0), lint, build)
	failed := finishedRun(2, "site", pipeline.StatusFailed, pipeline.SourceGitHub, t0,
		stage(pipeline.StageTrigger, pipeline.StatusSuccess, t0, t0),
		stage(pipeline.StageDispatch, pipeline.StatusFailed, t0, t0.Add(time.Second)))
	cfg := &fakeConfig{}
	cfg.set(siteSpec, newsletterSpec)
	hist := &fakeHistory{}
	hist.set(pipeline.PipelineSummary{Pipeline: "site", LastFinished: failed, LastSuccess: success})
	c := newCollector(t, cfg, hist, fakeStats{})
	// The history is unreadable by the first scrape: the series made at
	// construction are there all the same.
	hist.fail(errors.New("database is locked"))
	restarted := samples(t, c)
	hist.fail(nil)

	// Then a run finishes a job no last run had.
	deploy := stage("deploy", pipeline.StatusFailed, t0, t0.Add(time.Minute))
	deploy.JobID = 8
	next := &pipeline.Run{ID: 3, Pipeline: "site", Status: pipeline.StatusRunning, Stages: []pipeline.Stage{deploy}}
	c.Observe(pipeline.Update{Run: next, StagesFinished: next.Stages})
	observed := samples(t, c)

	tests := []struct {
		name string
		got  map[string]float64
		want map[string]float64
	}{
		{"restarted: histograms at zero, status counters of the statuses of the last runs", restarted, map[string]float64{
			`pipeline_runs_total{pipeline="site",status="failed",trigger="github"}`:            0,
			`pipeline_runs_total{pipeline="site",status="success",trigger="github"}`:           0,
			`pipeline_stage_runs_total{pipeline="site",stage="dispatch",status="failed"}`:      0,
			`pipeline_stage_runs_total{pipeline="site",stage="build",status="success"}`:        0,
			`pipeline_runs_total{pipeline="site",status="failed",trigger="supabase"}`:          -1,
			`pipeline_runs_total{pipeline="site",status="timed_out",trigger="mailerlite"}`:     -1,
			`pipeline_runs_total{pipeline="newsletter",status="failed",trigger="github"}`:      -1,
			`pipeline_runs_total{pipeline="newsletter",status="failed",trigger="supabase"}`:    -1,
			`pipeline_runs_total{pipeline="site",status="running",trigger="github"}`:           -1,
			`pipeline_run_duration_seconds{pipeline="site",status="timed_out"}`:                -1,
			`pipeline_run_duration_seconds{pipeline="newsletter",status="cancelled"}`:          -1,
			`pipeline_run_duration_seconds{pipeline="site",status="running"}`:                  -1,
			`pipeline_verify_response_seconds{pipeline="site"}`:                                0,
			`pipeline_verify_response_seconds{pipeline="newsletter"}`:                          -1,
			`pipeline_exporter_stage_labels_limited_total{reason="truncated"}`:                 0,
			`pipeline_exporter_stage_labels_limited_total{reason="evicted"}`:                   0,
			`pipeline_stage_runs_total{pipeline="site",stage="dispatch",status="timed_out"}`:   -1,
			`pipeline_stage_runs_total{pipeline="site",stage="build",status="failed"}`:         -1,
			`pipeline_stage_runs_total{pipeline="site",stage="lint",status="cancelled"}`:       -1,
			`pipeline_stage_duration_seconds{pipeline="site",stage="lint"}`:                    0,
			`pipeline_stage_runs_total{pipeline="site",stage="build",status="running"}`:        -1,
			`pipeline_stage_duration_seconds{pipeline="site",stage="trigger"}`:                 0,
			`pipeline_stage_queued_seconds{pipeline="site",stage="build"}`:                     0,
			`pipeline_stage_queued_seconds{pipeline="site",stage="dispatch"}`:                  -1,
			`pipeline_stage_runs_total{pipeline="site",stage="deploy",status="failed"}`:        -1,
			`pipeline_last_run_status{pipeline="site",status="failed"}`:                        -1,
			`pipeline_exporter_store_errors_total{}`:                                           1,
			`pipeline_stage_runs_total{pipeline="newsletter",stage="trigger",status="failed"}`: -1,
		}},
		{"observed after the restart", observed, map[string]float64{
			`pipeline_stage_runs_total{pipeline="site",stage="deploy",status="failed"}`:        1,
			`pipeline_stage_runs_total{pipeline="site",stage="deploy",status="success"}`:       -1,
			`pipeline_stage_queued_seconds{pipeline="site",stage="deploy"}`:                    1,
			`pipeline_last_stage_status{pipeline="site",stage="deploy",status="failed"}`:       -1,
			`pipeline_last_stage_status{pipeline="site",stage="lint",status="success"}`:        -1,
			`pipeline_last_stage_status{pipeline="site",stage="dispatch",status="success"}`:    -1,
			`pipeline_last_stage_status{pipeline="site",stage="dispatch",status="failed"}`:     1,
			`pipeline_last_run_status{pipeline="site",status="failed"}`:                        1,
			`pipeline_last_success_timestamp_seconds{pipeline="site"}`:                         float64(t0.Add(time.Minute).Unix()),
			`pipeline_stage_runs_total{pipeline="site",stage="build",status="success"}`:        0,
			`pipeline_exporter_stage_labels_limited_total{reason="evicted"}`:                   0,
			`pipeline_runs_total{pipeline="site",status="failed",trigger="github"}`:            0,
			`pipeline_stage_duration_seconds{pipeline="site",stage="deploy"}`:                  1,
			`pipeline_verify_response_seconds{pipeline="site"}`:                                0,
			`pipeline_runs_in_progress{pipeline="newsletter"}`:                                 0,
			`pipeline_last_run_status{pipeline="newsletter",status="failed"}`:                  -1,
			`pipeline_stage_runs_total{pipeline="site",stage="deploy",status="running"}`:       -1,
			`pipeline_last_stage_duration_seconds{pipeline="site",stage="deploy"}`:             -1,
			`pipeline_last_stage_duration_seconds{pipeline="site",stage="dispatch"}`:           1,
			`pipeline_stage_queued_seconds{pipeline="site",stage="lint"}`:                      0,
			`pipeline_stage_runs_total{pipeline="newsletter",stage="deploy",status="failed"}`:  -1,
			`pipeline_runs_total{pipeline="newsletter",status="success",trigger="mailerlite"}`: -1,
		}},
	}
	for _, tc := range tests {
		check(t, tc.name, tc.got, tc.want)
	}
}

func TestPipelinesFollowTheConfiguration(t *testing.T) {
	docsSpec := pipeline.Spec{Name: "docs", Workflow: "docs.yml", Verify: true}
	run := func(name string) *pipeline.Run {
		r := finishedRun(1, name, pipeline.StatusFailed, pipeline.SourceGitHub, t0, stage("build", pipeline.StatusFailed, t0, t0.Add(time.Minute)))
		r.Stages = append(r.Stages, stage(pipeline.StageVerify, pipeline.StatusFailed, t0, t0.Add(time.Second)))
		r.Stages[1].ResponseSeconds = 0.3
		return r
	}
	observe := func(c *Collector, name string) {
		r := run(name)
		c.Observe(pipeline.Update{Run: r, Finished: true, StagesFinished: r.Stages})
	}

	cfg := &fakeConfig{}
	cfg.set(siteSpec)
	hist := &fakeHistory{}
	c := newCollector(t, cfg, hist, fakeStats{})
	observe(c, "site")
	observe(c, "docs")
	before := samples(t, c)

	// A reload adds docs: its first update counts before any scrape.
	cfg.set(siteSpec, docsSpec)
	observe(c, "docs")
	added := samples(t, c)

	// A reload removes site: every series of it goes at the next scrape,
	// and later updates for it are dropped; its runs stay in the history.
	cfg.set(docsSpec)
	hist.set(pipeline.PipelineSummary{Pipeline: "docs", LastFinished: run("docs")},
		pipeline.PipelineSummary{Pipeline: "site", LastFinished: run("site")})
	removed := samples(t, c)
	observe(c, "site")
	afterDrop := samples(t, c)

	failedDocs := `pipeline_runs_total{pipeline="docs",status="failed",trigger="github"}`
	failedSite := `pipeline_runs_total{pipeline="site",status="failed",trigger="github"}`
	tests := []struct {
		name       string
		got        map[string]float64
		docs, site int // series with pipeline="docs", "site"
		want       map[string]float64
	}{
		// site: runs_total and run_duration of the one status that
		// happened, verify; stage_runs of that status and stage_duration
		// for 2 stages; in progress, threshold.
		{name: "unconfigured dropped", got: before, docs: 0, site: 1 + 1 + 1 + 2*2 + 2,
			want: map[string]float64{failedSite: 1, `pipeline_verify_response_seconds{pipeline="site"}`: 1}},
		{name: "added by reload", got: added, docs: 1 + 1 + 1 + 2*2 + 1, site: 9,
			want: map[string]float64{failedDocs: 1, failedSite: 1, `pipeline_verify_response_seconds{pipeline="docs"}`: 1}},
		// docs' last run adds its 1 + 1 + 1 run gauges and 2 x (1 + 1) stage gauges.
		{name: "removed by reload", got: removed, docs: 8 + 3 + 2*2, site: 0,
			want: map[string]float64{failedDocs: 1}},
		{name: "updates after removal dropped", got: afterDrop, docs: 15, site: 0},
	}
	for _, tc := range tests {
		if n := count(tc.got, `pipeline="docs"`); n != tc.docs {
			t.Errorf("%s: %d docs series, want %d", tc.name, n, tc.docs)
		}
		if n := count(tc.got, `pipeline="site"`); n != tc.site {
			t.Errorf("%s: %d site series, want %d", tc.name, n, tc.site)
		}
		check(t, tc.name, tc.got, tc.want)
	}
}

// TestGaugesFollowTheHistory scrapes one collector after each change of
// the history, so that a gauge kept from an earlier scrape would show.
func TestGaugesFollowTheHistory(t *testing.T) {
	failed := finishedRun(1, "site", pipeline.StatusFailed, pipeline.SourceGitHub, t0,
		stage("build", pipeline.StatusFailed, t0, t0.Add(time.Minute)))
	// A finished run can still change under its ID (late events).
	late := failed.Clone()
	late.Stages[0] = stage("build", pipeline.StatusCancelled, t0, t0.Add(2*time.Minute))
	late.Stages = append(late.Stages, stage("lint", pipeline.StatusSkipped, t0, t0))
	late.FinishedAt = late.Stages[0].FinishedAt
	late.DurationSeconds = 120
	late.ChangeSeq = 5
	succeeded := finishedRun(2, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0.Add(time.Hour),
		stage("build", pipeline.StatusSuccess, t0.Add(time.Hour), t0.Add(time.Hour+time.Minute)))
	noThreshold := siteSpec
	noThreshold.SlowThreshold = 0

	const (
		inProgress  = `pipeline_runs_in_progress{pipeline="site"}`
		threshold   = `pipeline_slow_threshold_seconds{pipeline="site"}`
		lastSuccess = `pipeline_last_success_timestamp_seconds{pipeline="site"}`
		runFailed   = `pipeline_last_run_status{pipeline="site",status="failed"}`
		runSuccess  = `pipeline_last_run_status{pipeline="site",status="success"}`
		runDuration = `pipeline_last_run_duration_seconds{pipeline="site"}`
		runTime     = `pipeline_last_run_timestamp_seconds{pipeline="site"}`
		buildFailed = `pipeline_last_stage_status{pipeline="site",stage="build",status="failed"}`
		buildCancel = `pipeline_last_stage_status{pipeline="site",stage="build",status="cancelled"}`
		buildTime   = `pipeline_last_stage_duration_seconds{pipeline="site",stage="build"}`
		lintSkipped = `pipeline_last_stage_status{pipeline="site",stage="lint",status="skipped"}`
		lintRuns    = `pipeline_stage_runs_total{pipeline="site",stage="lint",status="skipped"}`
		testFailed  = `pipeline_last_stage_status{pipeline="site",stage="test",status="failed"}`
	)
	cfg := &fakeConfig{}
	hist := &fakeHistory{}
	c := newCollector(t, cfg, hist, fakeStats{})
	steps := []struct {
		name    string
		spec    pipeline.Spec
		sum     pipeline.PipelineSummary
		observe *pipeline.Stage // a stage finished by a run in progress
		want    map[string]float64
	}{
		{
			name: "configured, never ran",
			spec: siteSpec,
			sum:  pipeline.PipelineSummary{Pipeline: "site"},
			want: map[string]float64{inProgress: 0, threshold: 900, runFailed: -1, runDuration: -1, runTime: -1, lastSuccess: -1},
		},
		{
			name: "failed run",
			spec: siteSpec,
			sum:  pipeline.PipelineSummary{Pipeline: "site", LastFinished: failed},
			want: map[string]float64{inProgress: 0, threshold: 900, runFailed: 1, runDuration: 60, runTime: float64(t0.Add(time.Minute).Unix()), buildFailed: 1, buildTime: 60, lastSuccess: -1, lintSkipped: -1},
		},
		{
			name: "same run changed late",
			spec: siteSpec,
			sum:  pipeline.PipelineSummary{Pipeline: "site", InProgress: 1, LastFinished: late},
			// The counter the gauges make at zero for the new stage
			// status is sent by the next scrape: the counters went to
			// the registry while the store was read.
			want: map[string]float64{inProgress: 1, runFailed: 1, runDuration: 120, buildFailed: -1, buildCancel: 1, buildTime: 120, lintSkipped: 1, lintRuns: -1},
		},
		{
			name:    "new stage seen in a run in progress",
			spec:    siteSpec,
			sum:     pipeline.PipelineSummary{Pipeline: "site", InProgress: 1, LastFinished: late},
			observe: &pipeline.Stage{Name: "test", Status: pipeline.StatusFailed},
			want:    map[string]float64{testFailed: -1, buildCancel: 1, lintRuns: 0},
		},
		{
			name: "success, threshold removed",
			spec: noThreshold,
			sum:  pipeline.PipelineSummary{Pipeline: "site", LastFinished: succeeded, LastSuccess: succeeded},
			want: map[string]float64{inProgress: 0, runFailed: -1, runSuccess: 1, runDuration: 60, buildFailed: -1, buildCancel: -1, buildTime: 60, testFailed: -1, lintSkipped: -1, lastSuccess: float64(t0.Add(time.Hour + time.Minute).Unix()), threshold: -1},
		},
	}
	for _, step := range steps {
		cfg.set(step.spec)
		hist.set(step.sum)
		if step.observe != nil {
			run := &pipeline.Run{ID: 3, Pipeline: "site", Status: pipeline.StatusRunning, Stages: []pipeline.Stage{*step.observe}}
			c.Observe(pipeline.Update{Run: run, StagesFinished: run.Stages})
		}
		check(t, step.name, samples(t, c), step.want)
	}
}

func TestTimestampsAreNeverNegative(t *testing.T) {
	const (
		runTime     = `pipeline_last_run_timestamp_seconds{pipeline="site"}`
		successTime = `pipeline_last_success_timestamp_seconds{pipeline="site"}`
	)
	tests := []struct {
		name     string
		finished time.Time
		want     float64 // -1: absent
	}{
		{"year 1, the zero time", time.Time{}, -1},
		{"a second before the epoch", time.Unix(-1, 0), -1},
		{"the epoch", time.Unix(0, 0), 0},
		{"fractions of a second", time.Unix(1628159620, 250_000_000), 1628159620.25},
		{"year 9999, where UnixNano overflows", time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), 253402214400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &fakeConfig{}
			cfg.set(siteSpec)
			hist := &fakeHistory{}
			c := newCollector(t, cfg, hist, fakeStats{})
			r := finishedRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0, stage("build", pipeline.StatusSuccess, t0, t0))
			r.FinishedAt = &tc.finished
			hist.set(pipeline.PipelineSummary{Pipeline: "site", LastFinished: r, LastSuccess: r})
			check(t, tc.name, samples(t, c), map[string]float64{
				runTime: tc.want, successTime: tc.want,
				`pipeline_last_run_status{pipeline="site",status="success"}`: 1,
			})
		})
	}
}

func TestSummariesError(t *testing.T) {
	last := finishedRun(1, "site", pipeline.StatusFailed, pipeline.SourceGitHub, t0, stage("build", pipeline.StatusFailed, t0, t0.Add(time.Minute)))
	cfg := &fakeConfig{}
	cfg.set(siteSpec)
	hist := &fakeHistory{}
	hist.set(pipeline.PipelineSummary{Pipeline: "site", InProgress: 2, LastFinished: last})
	var logs bytes.Buffer
	c, err := New(Options{Specs: cfg.Specs, History: hist, Stats: fakeStats{runs: 7, errors: 3},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	c.Observe(pipeline.Update{Run: last, Finished: true, StagesFinished: last.Stages})

	const (
		inProgress  = `pipeline_runs_in_progress{pipeline="site"}`
		threshold   = `pipeline_slow_threshold_seconds{pipeline="site"}`
		runFailed   = `pipeline_last_run_status{pipeline="site",status="failed"}`
		buildFailed = `pipeline_last_stage_status{pipeline="site",stage="build",status="failed"}`
		storeErrors = `pipeline_exporter_store_errors_total{}`
		storeRuns   = `pipeline_exporter_store_runs{}`
		runsTotal   = `pipeline_runs_total{pipeline="site",status="failed",trigger="github"}`
		stageRuns   = `pipeline_stage_runs_total{pipeline="site",stage="build",status="failed"}`
	)
	steps := []struct {
		name string
		err  error
		want map[string]float64
		// logLines is how many lines the log holds after the step.
		logLines int
	}{
		{"readable", nil, map[string]float64{inProgress: 2, threshold: 900, runFailed: 1, buildFailed: 1, storeErrors: 3, storeRuns: 7, runsTotal: 1, stageRuns: 1}, 0},
		{"failing: no pipeline gauges, counted and logged", context.DeadlineExceeded,
			map[string]float64{inProgress: -1, threshold: -1, runFailed: -1, buildFailed: -1, storeErrors: 4, storeRuns: 7, runsTotal: 1, stageRuns: 1}, 1},
		{"failing again: counted, not logged again", context.DeadlineExceeded,
			map[string]float64{inProgress: -1, storeErrors: 5, runsTotal: 1}, 1},
		{"readable again: gauges back, recovery logged", nil,
			map[string]float64{inProgress: 2, runFailed: 1, buildFailed: 1, storeErrors: 5, runsTotal: 1}, 2},
	}
	for _, step := range steps {
		hist.fail(step.err)
		got := samples(t, c)
		check(t, step.name, got, step.want)
		if n := count(got, "pipeline_last_") + count(got, "pipeline_runs_in_progress") + count(got, "pipeline_slow_"); step.err != nil && n != 0 {
			t.Errorf("%s: %d gauges, want none", step.name, n)
		}
		if n := strings.Count(logs.String(), "\n"); n != step.logLines {
			t.Errorf("%s: %d log lines, want %d:\n%s", step.name, n, step.logLines, logs.String())
		}
	}
	if !strings.Contains(logs.String(), context.DeadlineExceeded.Error()) {
		t.Errorf("log does not name the error:\n%s", logs.String())
	}

	hist.fail(errors.New("no such table: runs"))
	if _, err := New(Options{Specs: cfg.Specs, History: hist, Stats: fakeStats{}}); err == nil || !strings.Contains(err.Error(), "no such table") {
		t.Errorf("New with an unreadable history: err = %v, want the read's error", err)
	}
}

func TestStageLabel(t *testing.T) {
	long := strings.Repeat("a", 200)
	tests := []struct {
		name    string
		in      string
		wantCut bool
		// wantPrefix is what the label starts with; the label is the
		// input itself when wantCut is false.
		wantPrefix string
	}{
		{name: "short", in: "build (ubuntu-latest, 1.22)"},
		{name: "exactly the limit", in: strings.Repeat("b", maxStageLabelBytes)},
		{name: "one byte over", in: strings.Repeat("b", maxStageLabelBytes+1), wantCut: true, wantPrefix: strings.Repeat("b", maxStageLabelBytes-17) + "~"},
		{name: "long, with a shared prefix", in: long + "x", wantCut: true, wantPrefix: strings.Repeat("a", maxStageLabelBytes-17) + "~"},
		// 110 ASCII bytes, then 3-byte characters: the cut at 111 bytes
		// falls inside the first, so the prefix stops before it.
		{name: "cut inside a character", in: strings.Repeat("c", 110) + strings.Repeat("€", 10), wantCut: true, wantPrefix: strings.Repeat("c", 110) + "~"},
		{name: "invalid UTF-8 replaced", in: "build\xe2\x82", wantPrefix: "build\uFFFD"},
		{name: "900,000 characters", in: strings.Repeat("j", 900_000), wantCut: true, wantPrefix: strings.Repeat("j", maxStageLabelBytes-17) + "~"},
	}
	labels := map[string]string{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, cut := stageLabel(tc.in)
			if cut != tc.wantCut {
				t.Errorf("cut = %v, want %v", cut, tc.wantCut)
			}
			want := tc.wantPrefix
			if want == "" {
				want = tc.in
			}
			if !strings.HasPrefix(got, want) || (!tc.wantCut && got != want) {
				t.Errorf("label %q, want %q", got, want)
			}
			if len(got) > maxStageLabelBytes || !utf8ValidLabel(got) {
				t.Errorf("label of %d bytes (valid UTF-8: %v)", len(got), utf8ValidLabel(got))
			}
			if again, _ := stageLabel(tc.in); again != got {
				t.Errorf("label %q, then %q for the same name", got, again)
			}
			if other, ok := labels[got]; ok {
				t.Errorf("label %q also made of the %q case", got, other)
			}
			labels[got] = tc.name
		})
	}
}

func utf8ValidLabel(s string) bool {
	_, err := prometheus.NewConstMetric(prometheus.NewDesc("x", "x", []string{"stage"}, nil), prometheus.GaugeValue, 0, s)
	return err == nil
}

func TestStageLabelsAreBounded(t *testing.T) {
	huge := strings.Repeat("j", 900_000)
	hugeLabel, _ := stageLabel(huge)
	jobs := func(n int) []pipeline.Stage {
		stages := make([]pipeline.Stage, n)
		for i := range stages {
			stages[i] = stage(fmt.Sprintf("job-%d", i), pipeline.StatusSuccess, t0, t0.Add(time.Second))
			stages[i].JobID = int64(i + 1)
		}
		return stages
	}
	const (
		truncated = `pipeline_exporter_stage_labels_limited_total{reason="truncated"}`
		evicted   = `pipeline_exporter_stage_labels_limited_total{reason="evicted"}`
	)
	stageRuns := func(stage string) string {
		return fmt.Sprintf(`pipeline_stage_runs_total{pipeline="site",stage=%q,status="success"}`, stage)
	}
	lastStatus := func(stage string) string {
		return fmt.Sprintf(`pipeline_last_stage_status{pipeline="site",stage=%q,status="success"}`, stage)
	}
	tests := []struct {
		name string
		// observed are runs finished, one update each; last is then the
		// history's last finished run.
		observed [][]pipeline.Stage
		last     []pipeline.Stage
		// wantStages is how many stages of site the metrics have.
		wantStages int
		want       map[string]float64
	}{
		{
			name:       "a stage past the bound evicts the least recently seen",
			observed:   [][]pipeline.Stage{jobs(maxStagesPerPipeline / 2), jobs(maxStagesPerPipeline + 1)[maxStagesPerPipeline/2:], jobs(1)},
			wantStages: maxStagesPerPipeline,
			want: map[string]float64{
				stageRuns("job-0"): 1, stageRuns("job-1"): -1, stageRuns("job-2"): 1,
				stageRuns(fmt.Sprintf("job-%d", maxStagesPerPipeline)): 1,
				evicted: 2, truncated: 0,
			},
		},
		{
			name:       "a last run with thousands of jobs shows its last stages",
			last:       jobs(4000),
			wantStages: maxStagesPerPipeline,
			want: map[string]float64{
				lastStatus("job-3999"): 1, lastStatus("job-3900"): 1, lastStatus("job-3899"): -1,
				stageRuns("job-3999"): 0, stageRuns("job-0"): -1,
				evicted: 4000 - maxStagesPerPipeline,
			},
		},
		{
			name:       "a 900,000-character job name",
			observed:   [][]pipeline.Stage{{stage(huge, pipeline.StatusSuccess, t0, t0.Add(time.Second))}},
			last:       []pipeline.Stage{stage(huge, pipeline.StatusSuccess, t0, t0.Add(time.Second))},
			wantStages: 1,
			want:       map[string]float64{stageRuns(hugeLabel): 1, lastStatus(hugeLabel): 1, truncated: 1, evicted: 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &fakeConfig{}
			cfg.set(siteSpec)
			hist := &fakeHistory{}
			c := newCollector(t, cfg, hist, fakeStats{})
			for i, stages := range tc.observed {
				r := &pipeline.Run{ID: int64(i + 1), Pipeline: "site", Status: pipeline.StatusRunning, Stages: stages}
				c.Observe(pipeline.Update{Run: r, StagesFinished: stages})
			}
			if tc.last != nil {
				hist.set(pipeline.PipelineSummary{Pipeline: "site", LastFinished: finishedRun(99, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0, tc.last...)})
			}
			// Scraped twice: a scrape of an unchanged history evicts nothing more.
			samples(t, c)
			got := samples(t, c)
			check(t, tc.name, got, tc.want)
			if n := count(got, "pipeline_stage_duration_seconds{", `pipeline="site"`); n != tc.wantStages {
				t.Errorf("%d stages in pipeline_stage_duration_seconds, want %d", n, tc.wantStages)
			}
			if n := count(got, "pipeline_last_stage_status{"); tc.last != nil && n != tc.wantStages {
				t.Errorf("%d pipeline_last_stage_status series, want %d", n, tc.wantStages)
			}
			var text bytes.Buffer
			mfs, err := registry(t, c).Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
					t.Fatal(err)
				}
			}
			// The exposition stays small: no label value over the bound.
			for line := range strings.Lines(text.String()) {
				if len(line) > 2*maxStageLabelBytes+100 {
					t.Fatalf("exposition line of %d bytes: %.200s...", len(line), line)
				}
			}
		})
	}
}

// TestCollectSendsFamiliesWhole checks that Collect sends every metric of
// a family before the next family, which the /metrics handler relies on to
// encode a family as soon as the next one starts.
func TestCollectSendsFamiliesWhole(t *testing.T) {
	for name, c := range map[string]prometheus.Collector{
		"scenario":      scenario(t),
		"100 pipelines": orgCollector(t, 100, false),
	} {
		t.Run(name, func(t *testing.T) {
			ch := make(chan prometheus.Metric)
			go func() {
				c.Collect(ch)
				close(ch)
			}()
			done := map[*prometheus.Desc]bool{}
			var current *prometheus.Desc
			n := 0
			for m := range ch {
				n++
				if d := m.Desc(); d != current {
					if done[d] {
						t.Errorf("%s sent again after other families", d)
					}
					done[current] = true
					current = d
				}
			}
			if len(done) < 10 {
				t.Errorf("%d metrics of %d families; want the pipeline families", n, len(done))
			}
		})
	}
}
