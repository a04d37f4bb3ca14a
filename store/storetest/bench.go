package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// BenchmarkSummaries measures Summaries, the store read of every scrape,
// on s holding n pipelines whose last run succeeded with 10 job stages
// and verified its build live (so it is both the last finished and the
// last success), with a run in progress each: the shape of the collector's
// cardinality budget.
func BenchmarkSummaries(b *testing.B, s Store, n int) {
	ctx := context.Background()
	tx, err := s.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	runs := make([]*pipeline.Run, 0, 2*n)
	for i := range n {
		name := fmt.Sprintf("pipeline-%d", i)
		done := liveRun(int64(2*i+1), name, i)
		runs = append(runs, done, run(int64(2*i+2), name, pipeline.StatusRunning, pipeline.SourceGitHub, i+700, int64(2*i+2)))
	}
	if err := tx.SaveRuns(runs); err != nil {
		_ = tx.Rollback()
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		sums, err := s.Summaries(ctx)
		if err != nil || len(sums) != n {
			b.Fatalf("Summaries: %d pipelines, %v; want %d", len(sums), err, n)
		}
	}
}

// liveRun is run id of pipeline name, created at second sec: a successful
// GitHub run with 10 job stages whose build was verified live, as a
// pipeline of an organization's looks when its site is rechecked.
func liveRun(id int64, name string, sec int) *pipeline.Run {
	done := run(id, name, pipeline.StatusSuccess, pipeline.SourceGitHub, sec, id)
	withGitHub(done, id, 1)
	for j := range 10 {
		started, finished := at(sec+j), at(sec+j+60)
		done.Stages = append(done.Stages, pipeline.Stage{
			Name: fmt.Sprintf("job-%d", j), Status: pipeline.StatusSuccess, JobID: int64(j + 1),
			StartedAt: &started, FinishedAt: &finished, DurationSeconds: 60, QueuedSeconds: 3,
		})
	}
	verified := at(sec + 600)
	done.Verify = &pipeline.VerifyCheck{URL: "https://example.com/", Build: liveBuild, VerifiedAt: &verified, CheckedAt: verified.Add(5 * time.Minute)}
	return done
}

// liveBuild is the commit every liveRun built.
const liveBuild = "5d6e7f8a9b0c1d2e3f405162738495a6b7c8d9e0"
