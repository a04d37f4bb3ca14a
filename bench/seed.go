package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store"
)

// seedPipelines is how many pipelines the seeded history spreads over.
const seedPipelines = 10

// seed fills dir's history with n finished runs shaped like real ones
// (trigger, dispatch, three jobs, verify; one in ten failed), spread over the
// last 60 days, committed in large transactions.
func seed(dir string, n int) error {
	return seedWith(dir, n, func(r *pipeline.Run) {})
}

// seedOrg fills dir's history with n runs like seed's, spread over
// pipelines pipelines discovered from orgConfig's pattern, one per
// repository bench/repo-i, and saves them as discovered.
func seedOrg(dir string, n, pipelines int) error {
	err := seedWith(dir, n, func(r *pipeline.Run) {
		i := r.ID % int64(pipelines)
		r.Pipeline, r.GitHub.Repository = fmt.Sprintf("repo-%d", i), fmt.Sprintf("bench/repo-%d", i)
		r.GitHub.Workflow = "test.yml"
	})
	if err != nil {
		return err
	}
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	d := make([]pipeline.Discovered, pipelines)
	for i := range d {
		d[i] = pipeline.Discovered{Name: fmt.Sprintf("repo-%d", i), Repository: fmt.Sprintf("bench/repo-%d", i),
			Pattern: "bench/*", Template: "{{ .Repo }}", CreatedAt: time.Now().UTC()}
	}
	tx, err := st.Begin(context.Background())
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.SaveDiscovered(d); err != nil {
		return err
	}
	return tx.Commit()
}

// seedWith is seed with each run changed by edit before it is saved.
func seedWith(dir string, n int, edit func(*pipeline.Run)) error {
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now().UTC().Truncate(time.Second)
	span := 60 * 24 * time.Hour
	const chunk = 20000
	for start := 0; start < n; start += chunk {
		runs := make([]*pipeline.Run, 0, chunk)
		for i := start; i < min(n, start+chunk); i++ {
			r := seededRun(int64(i+1), now.Add(-span+time.Duration(i)*span/time.Duration(n)))
			edit(r)
			runs = append(runs, r)
		}
		if err := saveRuns(st, runs); err != nil {
			return err
		}
	}
	return nil
}

// saveRuns commits runs through the storage seam, as the Applier would,
// in one transaction.
func saveRuns(st *store.Store, runs []*pipeline.Run) error {
	tx, err := st.Begin(context.Background())
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.SaveRuns(runs); err != nil {
		return err
	}
	return tx.Commit()
}

func seededRun(id int64, created time.Time) *pipeline.Run {
	status := pipeline.StatusSuccess
	if id%10 == 0 {
		status = pipeline.StatusFailed
	}
	at := func(s int) *time.Time { t := created.Add(time.Duration(s) * time.Second); return &t }
	stage := func(name string, from, to int, st pipeline.Status) pipeline.Stage {
		return pipeline.Stage{Name: name, Status: st, StartedAt: at(from), FinishedAt: at(to), DurationSeconds: float64(to - from)}
	}
	last := pipeline.StatusSuccess
	if status == pipeline.StatusFailed {
		last = pipeline.StatusFailed
	}
	trigger := pipeline.Trigger{Source: pipeline.SourceSupabase, Event: "INSERT", DeliveryID: fmt.Sprintf("seed-%d", id), ReceivedAt: created}
	r := &pipeline.Run{
		ID:        id,
		Pipeline:  fmt.Sprintf("site-%d", id%seedPipelines),
		Status:    status,
		Trigger:   trigger,
		Triggers:  []pipeline.Trigger{trigger},
		CreatedAt: created, StartedAt: at(20), FinishedAt: at(300), DurationSeconds: 300,
		GitHub: &pipeline.GitHubRun{
			Repository: "octo-org/octo-repo", RunID: 1_000_000_000 + id, RunAttempt: 1, WorkflowID: 2823525,
			Workflow: "deploy.yml", HTMLURL: fmt.Sprintf("https://github.com/octo-org/octo-repo/actions/runs/%d", 1_000_000_000+id),
			HeadSHA: "3484a3fb816e0859fd6e1cea078d76385ff50625", HeadBranch: "main", Event: "repository_dispatch",
			Status: "completed", Conclusion: string(status), CreatedAt: created.Add(15 * time.Second), UpdatedAt: *at(280),
		},
		Stages: []pipeline.Stage{
			stage(pipeline.StageTrigger, 0, 0, pipeline.StatusSuccess),
			stage(pipeline.StageDispatch, 0, 15, pipeline.StatusSuccess),
			stage("build", 20, 200, pipeline.StatusSuccess),
			stage("test", 20, 150, pipeline.StatusSuccess),
			stage("deploy", 200, 280, last),
		},
		SeenAt:    created,
		ChangeSeq: id,
	}
	if status == pipeline.StatusSuccess {
		r.Stages = append(r.Stages, stage(pipeline.StageVerify, 280, 300, pipeline.StatusSuccess))
	} else {
		r.Error = "stage deploy failed"
	}
	return r
}
