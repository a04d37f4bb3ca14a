package collector

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.prom from the collector's output")

const goldenFile = "testdata/golden.prom"

// fakeSource is the engine as the collector sees it.
type fakeSource struct {
	mu    sync.Mutex
	snap  pipeline.Snapshot
	calls int
}

func (f *fakeSource) Snapshot() pipeline.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.snap
}

func (f *fakeSource) set(states ...pipeline.PipelineState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = pipeline.Snapshot{Pipelines: states}
}

type fakeStats struct {
	runs   int64
	errors float64
}

func (f fakeStats) Runs() int64     { return f.runs }
func (f fakeStats) Errors() float64 { return f.errors }

// jobStage turns a published workflow_job payload into the stage the
// tracker makes of it, shifted by shift.
func jobStage(t testing.TB, file string, shift time.Duration) pipeline.Stage {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		WorkflowJob struct {
			ID          int64     `json:"id"`
			Name        string    `json:"name"`
			Conclusion  string    `json:"conclusion"`
			HTMLURL     string    `json:"html_url"`
			CreatedAt   time.Time `json:"created_at"`
			StartedAt   time.Time `json:"started_at"`
			CompletedAt time.Time `json:"completed_at"`
		} `json:"workflow_job"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	j := p.WorkflowJob
	status := map[string]pipeline.Status{"success": pipeline.StatusSuccess, "failure": pipeline.StatusFailed}[j.Conclusion]
	if status == "" {
		t.Fatalf("%s: unexpected conclusion %q", file, j.Conclusion)
	}
	started, finished := j.StartedAt.Add(shift), j.CompletedAt.Add(shift)
	return pipeline.Stage{
		Name: j.Name, Status: status, StartedAt: &started, FinishedAt: &finished,
		DurationSeconds: finished.Sub(started).Seconds(), URL: j.HTMLURL, JobID: j.ID,
		QueuedSeconds: j.StartedAt.Sub(j.CreatedAt).Seconds(),
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
		Stages: stages, SeenAt: created,
	}
}

var (
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
// engine would: a Supabase-triggered run that fails at its GitHub job, a
// scrape, then a push-started run that succeeds through pages and verify,
// with a third run in progress; "newsletter" never ran.
func scenario(t testing.TB) (*Collector, *fakeSource) {
	src := &fakeSource{}
	c := New(src, fakeStats{runs: 3, errors: 2})

	// The failure and success fixtures share their timestamps; the
	// success is moved an hour later so that it is the later run.
	failedJob := jobStage(t, "testdata/workflow_job.completed.failure.json", 0)
	okJob := jobStage(t, "testdata/workflow_job.completed.success.json", time.Hour)

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
	run2.Stage(pipeline.StageVerify).ResponseSeconds = 0.5

	src.set(
		pipeline.PipelineState{Spec: siteSpec, LastFinished: run1},
		pipeline.PipelineState{Spec: newsletterSpec},
	)
	c.Observe(pipeline.Update{Run: run1, StagesFinished: run1.Stages[:2]})
	c.Observe(pipeline.Update{Run: run1, Finished: true, StagesFinished: run1.Stages[2:]})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}

	for _, st := range run2.Stages[:3] {
		c.Observe(pipeline.Update{Run: run2, StagesFinished: []pipeline.Stage{st}})
	}
	c.ObserveVerify("site", 1.7)
	c.ObserveVerify("site", 0.5)
	c.Observe(pipeline.Update{Run: run2, Finished: true, StagesFinished: run2.Stages[3:]})

	run3 := &pipeline.Run{ID: 3, Pipeline: "site", Status: pipeline.StatusPending,
		Trigger: pipeline.Trigger{Source: pipeline.SourceMailerLite, ReceivedAt: verified.Add(time.Hour)}}
	run3.Stages = []pipeline.Stage{stage(pipeline.StageTrigger, pipeline.StatusSuccess, run3.Trigger.ReceivedAt, run3.Trigger.ReceivedAt)}
	c.Observe(pipeline.Update{Run: run3, StagesFinished: run3.Stages})

	// A pipeline removed from the configuration: dropped.
	gone := finishedRun(9, "gone", pipeline.StatusFailed, pipeline.SourceGitHub, created, okJob)
	c.Observe(pipeline.Update{Run: gone, Finished: true, StagesFinished: gone.Stages})
	c.ObserveVerify("gone", 0.2)

	src.set(
		pipeline.PipelineState{Spec: siteSpec, InProgress: 1, LastFinished: run2, LastSuccess: run2},
		pipeline.PipelineState{Spec: newsletterSpec},
	)
	return c, src
}

func TestCollectGolden(t *testing.T) {
	c, _ := scenario(t)
	if *update {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		if err := prometheus.WriteToTextfile(goldenFile, reg); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(c, bytes.NewReader(golden)); err != nil {
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

const stageHeader = `# HELP pipeline_last_stage_status Status of each stage of the pipeline's last finished run, 1 for its status and 0 for the others, or 0 for all when that run did not have the stage.
# TYPE pipeline_last_stage_status gauge
`

// stageLines renders the seven one-hot lines of one stage; status ""
// renders all zeros.
func stageLines(pipelineName, stageName string, status pipeline.Status) string {
	var b strings.Builder
	for _, s := range pipeline.StageStatuses {
		fmt.Fprintf(&b, "pipeline_last_stage_status{pipeline=%q,stage=%q,status=%q} %d\n", pipelineName, stageName, s, int(oneHot(s == status)))
	}
	return b.String()
}

func TestLastStageStatus(t *testing.T) {
	t0 := time.Date(2021, 8, 5, 10, 33, 40, 0, time.UTC)
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
			name: "stage the last run did not have is zero for every status",
			lastRuns: [][]pipeline.Stage{
				{st("trigger", pipeline.StatusSuccess), st("dispatch", pipeline.StatusSuccess), st("build", pipeline.StatusFailed)},
				{st("trigger", pipeline.StatusSuccess), st("build", pipeline.StatusSuccess)},
			},
			want: stageHeader + stageLines("site", "build", pipeline.StatusSuccess) +
				stageLines("site", "dispatch", "") + stageLines("site", "trigger", pipeline.StatusSuccess),
		},
		{
			name: "stage that comes back is one-hot again",
			lastRuns: [][]pipeline.Stage{
				{st("trigger", pipeline.StatusSuccess), st("verify", pipeline.StatusFailed)},
				{st("trigger", pipeline.StatusTimedOut)},
				{st("trigger", pipeline.StatusSuccess), st("verify", pipeline.StatusSuccess)},
			},
			want: stageHeader + stageLines("site", "trigger", pipeline.StatusSuccess) + stageLines("site", "verify", pipeline.StatusSuccess),
		},
		{
			name: "a repeated stage name counts once, as its first occurrence",
			lastRuns: [][]pipeline.Stage{
				{st("build", pipeline.StatusSkipped), st("build", pipeline.StatusFailed)},
			},
			want: stageHeader + stageLines("site", "build", pipeline.StatusSkipped),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			c := New(src, fakeStats{})
			for i, stages := range tc.lastRuns {
				state := pipeline.PipelineState{Spec: siteSpec}
				if stages != nil {
					state.LastFinished = finishedRun(int64(i+1), "site", pipeline.StatusFailed, pipeline.SourceGitHub, t0, stages...)
				}
				src.set(state)
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

// series gathers c and returns every series as name{labels}.
func series(t *testing.T, c prometheus.Collector) []string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out = append(out, mf.GetName()+"{"+strings.Join(labels, ",")+"}")
		}
	}
	return out
}

func countMatching(all []string, substrings ...string) int {
	n := 0
	for _, s := range all {
		if !slices.ContainsFunc(substrings, func(sub string) bool { return !strings.Contains(s, sub) }) {
			n++
		}
	}
	return n
}

func TestStageNamesAreBounded(t *testing.T) {
	src := &fakeSource{}
	src.set(pipeline.PipelineState{Spec: siteSpec})
	c := New(src, fakeStats{})
	t0 := time.Date(2021, 8, 5, 10, 33, 40, 0, time.UTC)
	var last *pipeline.Run
	for i := range maxStagesPerPipeline + 1 {
		last = finishedRun(int64(i+1), "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0,
			stage(fmt.Sprintf("job-%d", i), pipeline.StatusSuccess, t0, t0.Add(time.Second)))
		c.Observe(pipeline.Update{Run: last, Finished: true, StagesFinished: last.Stages})
	}
	src.set(pipeline.PipelineState{Spec: siteSpec, LastFinished: last, LastSuccess: last})

	all := series(t, c)
	tests := []struct {
		stage      string
		wantStatus int // pipeline_last_stage_status series
		wantRuns   int // pipeline_stage_runs_total series, one per terminal status
	}{
		{stage: "job-0", wantStatus: 0, wantRuns: 0},
		{stage: "job-1", wantStatus: len(pipeline.StageStatuses), wantRuns: 5},
		{stage: fmt.Sprintf("job-%d", maxStagesPerPipeline), wantStatus: len(pipeline.StageStatuses), wantRuns: 5},
	}
	for _, tc := range tests {
		label := fmt.Sprintf("stage=%q", tc.stage)
		if n := countMatching(all, "pipeline_last_stage_status{", label); n != tc.wantStatus {
			t.Errorf("%s: %d pipeline_last_stage_status series, want %d", tc.stage, n, tc.wantStatus)
		}
		if n := countMatching(all, "pipeline_stage_runs_total{", label); n != tc.wantRuns {
			t.Errorf("%s: %d pipeline_stage_runs_total series, want %d", tc.stage, n, tc.wantRuns)
		}
	}
}

func TestPipelinesFollowTheConfiguration(t *testing.T) {
	t0 := time.Date(2021, 8, 5, 10, 33, 40, 0, time.UTC)
	docsSpec := pipeline.Spec{Name: "docs", Workflow: "docs.yml"}
	run := func(name string) *pipeline.Run {
		return finishedRun(1, name, pipeline.StatusFailed, pipeline.SourceGitHub, t0, stage("build", pipeline.StatusFailed, t0, t0.Add(time.Minute)))
	}

	src := &fakeSource{}
	src.set(pipeline.PipelineState{Spec: siteSpec})
	c := New(src, fakeStats{})
	c.Observe(pipeline.Update{Run: run("site"), Finished: true, StagesFinished: run("site").Stages})
	c.Observe(pipeline.Update{Run: run("docs"), Finished: true, StagesFinished: run("docs").Stages})
	c.ObserveVerify("docs", 0.3)
	before := series(t, c)

	// A reload adds docs: its first update counts before any scrape.
	src.set(pipeline.PipelineState{Spec: siteSpec}, pipeline.PipelineState{Spec: docsSpec})
	c.Observe(pipeline.Update{Run: run("docs"), Finished: true, StagesFinished: run("docs").Stages})
	added := series(t, c)

	// A reload removes site: every series of it goes at the next scrape,
	// and later updates for it are dropped.
	src.set(pipeline.PipelineState{Spec: docsSpec, LastFinished: run("docs")})
	removed := series(t, c)
	c.Observe(pipeline.Update{Run: run("site"), Finished: true, StagesFinished: run("site").Stages})
	c.ObserveVerify("site", 0.3)
	afterDrop := series(t, c)

	failedDocs := `pipeline_runs_total{pipeline="docs",status="failed",trigger="github"}`
	failedSite := `pipeline_runs_total{pipeline="site",status="failed",trigger="github"}`
	tests := []struct {
		name     string
		got      []string
		docs     int // series with pipeline="docs"
		site     int // series with pipeline="site"
		contains []string
	}{
		// site: runs_total for 3 sources x 4 statuses, run_duration for 4
		// statuses, stage_runs for 5 statuses and stage_duration for the
		// stage, in progress, threshold.
		{name: "unconfigured dropped", got: before, docs: 0, site: 12 + 4 + 5 + 1 + 2},
		{name: "added by reload", got: added, docs: 4 + 4 + 5 + 1 + 1, site: 24, contains: []string{failedDocs, failedSite}},
		// docs' last run adds its 4 + 1 + 1 run gauges and 7 + 1 stage gauges.
		{name: "removed by reload", got: removed, docs: 15 + 4 + 1 + 1 + 7 + 1, site: 0},
		{name: "updates after removal dropped", got: afterDrop, docs: 29, site: 0},
	}
	for _, tc := range tests {
		if n := countMatching(tc.got, `pipeline="docs"`); n != tc.docs {
			t.Errorf("%s: %d docs series, want %d:\n%s", tc.name, n, tc.docs, strings.Join(tc.got, "\n"))
		}
		if n := countMatching(tc.got, `pipeline="site"`); n != tc.site {
			t.Errorf("%s: %d site series, want %d:\n%s", tc.name, n, tc.site, strings.Join(tc.got, "\n"))
		}
		for _, s := range tc.contains {
			if !slices.Contains(tc.got, s) {
				t.Errorf("%s: no series %s", tc.name, s)
			}
		}
	}
}

// samples gathers c and returns the value of every series by
// name{labels}: a counter's or gauge's value, a histogram's sample count.
func samples(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
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

func TestSeriesExistBeforeTheirFirstObservation(t *testing.T) {
	t0 := time.Date(2021, 8, 5, 10, 33, 40, 0, time.UTC)
	build := stage("build", pipeline.StatusSuccess, t0, t0.Add(time.Minute))
	build.JobID = 7
	// After a restart the collector knows the last run only from the
	// snapshot: nothing has been observed yet.
	last := finishedRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0,
		stage(pipeline.StageTrigger, pipeline.StatusSuccess, t0, t0),
		stage(pipeline.StageDispatch, pipeline.StatusSuccess, t0, t0.Add(time.Second)),
		build)
	src := &fakeSource{}
	src.set(pipeline.PipelineState{Spec: siteSpec, LastFinished: last, LastSuccess: last})
	c := New(src, fakeStats{})
	restarted := samples(t, c)

	// Then a run finishes a job the last run did not have.
	deploy := stage("deploy", pipeline.StatusFailed, t0, t0.Add(time.Minute))
	deploy.JobID = 8
	next := &pipeline.Run{ID: 2, Pipeline: "site", Status: pipeline.StatusRunning, Stages: []pipeline.Stage{deploy}}
	c.Observe(pipeline.Update{Run: next, StagesFinished: next.Stages})
	observed := samples(t, c)

	tests := []struct {
		name   string
		got    map[string]float64
		series string
		want   float64 // -1: absent
	}{
		{"run duration by terminal status", restarted, `pipeline_run_duration_seconds{pipeline="site",status="timed_out"}`, 0},
		{"run duration by terminal status", restarted, `pipeline_run_duration_seconds{pipeline="site",status="failed"}`, 0},
		{"no run duration for a running status", restarted, `pipeline_run_duration_seconds{pipeline="site",status="running"}`, -1},
		{"stage counter of the last run's stage", restarted, `pipeline_stage_runs_total{pipeline="site",stage="dispatch",status="timed_out"}`, 0},
		{"stage counter of the last run's stage", restarted, `pipeline_stage_runs_total{pipeline="site",stage="build",status="failed"}`, 0},
		{"no stage counter for a running status", restarted, `pipeline_stage_runs_total{pipeline="site",stage="build",status="running"}`, -1},
		{"stage duration of the last run's stage", restarted, `pipeline_stage_duration_seconds{pipeline="site",stage="trigger"}`, 0},
		{"queue time of the last run's job", restarted, `pipeline_stage_queued_seconds{pipeline="site",stage="build"}`, 0},
		{"no queue time for a stage that is not a job", restarted, `pipeline_stage_queued_seconds{pipeline="site",stage="dispatch"}`, -1},
		{"stage not seen yet", restarted, `pipeline_stage_runs_total{pipeline="site",stage="deploy",status="failed"}`, -1},
		{"observed stage counts", observed, `pipeline_stage_runs_total{pipeline="site",stage="deploy",status="failed"}`, 1},
		{"observed stage's other statuses at zero", observed, `pipeline_stage_runs_total{pipeline="site",stage="deploy",status="success"}`, 0},
		{"observed job's queue time", observed, `pipeline_stage_queued_seconds{pipeline="site",stage="deploy"}`, 1},
		{"observed stage listed for the last run", observed, `pipeline_last_stage_status{pipeline="site",stage="deploy",status="failed"}`, 0},
	}
	for _, tc := range tests {
		got, ok := tc.got[tc.series]
		switch {
		case tc.want < 0 && ok:
			t.Errorf("%s: %s = %g, want absent", tc.name, tc.series, got)
		case tc.want >= 0 && !ok:
			t.Errorf("%s: %s absent, want %g", tc.name, tc.series, tc.want)
		case ok && got != tc.want:
			t.Errorf("%s: %s = %g, want %g", tc.name, tc.series, got, tc.want)
		}
	}
}

// TestGaugesFollowTheSnapshot scrapes one collector after each change of
// the snapshot, so that a gauge kept from an earlier scrape shows.
func TestGaugesFollowTheSnapshot(t *testing.T) {
	t0 := time.Date(2021, 8, 5, 10, 33, 40, 0, time.UTC)
	failed := finishedRun(1, "site", pipeline.StatusFailed, pipeline.SourceGitHub, t0,
		stage("build", pipeline.StatusFailed, t0, t0.Add(time.Minute)))
	// The tracker keeps a finished run for late events: the same run,
	// changed under its ID.
	late := failed.Clone()
	late.Stages[0] = stage("build", pipeline.StatusCancelled, t0, t0.Add(2*time.Minute))
	late.FinishedAt = late.Stages[0].FinishedAt
	late.DurationSeconds = 120
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
		buildFailed = `pipeline_last_stage_status{pipeline="site",stage="build",status="failed"}`
		buildCancel = `pipeline_last_stage_status{pipeline="site",stage="build",status="cancelled"}`
		buildTime   = `pipeline_last_stage_duration_seconds{pipeline="site",stage="build"}`
		lintFailed  = `pipeline_last_stage_status{pipeline="site",stage="lint",status="failed"}`
	)
	src := &fakeSource{}
	c := New(src, fakeStats{})
	steps := []struct {
		name    string
		state   pipeline.PipelineState
		observe *pipeline.Stage // a stage finished by a run in progress
		want    map[string]float64
		absent  []string
	}{
		{
			name:   "failed run",
			state:  pipeline.PipelineState{Spec: siteSpec, LastFinished: failed},
			want:   map[string]float64{inProgress: 0, threshold: 900, runFailed: 1, runDuration: 60, buildFailed: 1, buildTime: 60},
			absent: []string{lastSuccess, lintFailed},
		},
		{
			name:  "same run changed late",
			state: pipeline.PipelineState{Spec: siteSpec, InProgress: 1, LastFinished: late},
			want:  map[string]float64{inProgress: 1, runFailed: 1, runDuration: 120, buildFailed: 0, buildCancel: 1, buildTime: 120},
		},
		{
			name:    "new stage seen in a run in progress",
			state:   pipeline.PipelineState{Spec: siteSpec, InProgress: 1, LastFinished: late},
			observe: &pipeline.Stage{Name: "lint", Status: pipeline.StatusFailed},
			want:    map[string]float64{lintFailed: 0, buildCancel: 1},
		},
		{
			name:   "success, threshold removed",
			state:  pipeline.PipelineState{Spec: noThreshold, LastFinished: succeeded, LastSuccess: succeeded},
			want:   map[string]float64{inProgress: 0, runFailed: 0, runSuccess: 1, runDuration: 60, buildFailed: 0, buildCancel: 0, buildTime: 60, lintFailed: 0, lastSuccess: float64(t0.Add(time.Hour + time.Minute).Unix())},
			absent: []string{threshold},
		},
	}
	for _, step := range steps {
		src.set(step.state)
		if step.observe != nil {
			run := &pipeline.Run{ID: 3, Pipeline: "site", Status: pipeline.StatusRunning, Stages: []pipeline.Stage{*step.observe}}
			c.Observe(pipeline.Update{Run: run, StagesFinished: run.Stages})
		}
		got := samples(t, c)
		for series, want := range step.want {
			if v, ok := got[series]; !ok || v != want {
				t.Errorf("%s: %s = %g (present %v), want %g", step.name, series, v, ok, want)
			}
		}
		for _, series := range step.absent {
			if v, ok := got[series]; ok {
				t.Errorf("%s: %s = %g, want absent", step.name, series, v)
			}
		}
	}
}

// TestCollectSendsFamiliesSorted checks that every family comes in the
// order the registry sorts it into, which is what keeps sorting cheap.
func TestCollectSendsFamiliesSorted(t *testing.T) {
	c, src := scenario(t)
	// A pipeline that sorts before the others, listed last.
	src.set(append(src.Snapshot().Pipelines, pipeline.PipelineState{Spec: pipeline.Spec{Name: "blog", Workflow: "blog.yml"}})...)
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	last := map[*prometheus.Desc]string{}
	n := 0
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		var values []string
		for _, l := range d.GetLabel() {
			values = append(values, l.GetValue())
		}
		key := strings.Join(values, "\x00")
		if prev, ok := last[m.Desc()]; ok && key <= prev {
			t.Errorf("%s: %q sent after %q", m.Desc(), strings.Join(values, ","), strings.ReplaceAll(prev, "\x00", ","))
		}
		last[m.Desc()] = key
		n++
	}
	if n < 100 {
		t.Fatalf("only %d metrics collected", n)
	}
}
