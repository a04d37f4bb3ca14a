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
		done := run(int64(2*i+1), name, pipeline.StatusSuccess, pipeline.SourceGitHub, i, int64(2*i+1))
		withGitHub(done, int64(2*i+1), 1)
		for j := range 10 {
			started, finished := at(i+j), at(i+j+60)
			done.Stages = append(done.Stages, pipeline.Stage{
				Name: fmt.Sprintf("job-%d", j), Status: pipeline.StatusSuccess, JobID: int64(j + 1),
				StartedAt: &started, FinishedAt: &finished, DurationSeconds: 60, QueuedSeconds: 3,
			})
		}
		verified := at(i + 600)
		done.Verify = &pipeline.VerifyCheck{URL: "https://example.com/", Build: "5d6e7f8a9b0c1d2e3f405162738495a6b7c8d9e0", VerifiedAt: &verified, CheckedAt: verified.Add(5 * time.Minute)}
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
