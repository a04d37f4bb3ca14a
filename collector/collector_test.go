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
