package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
	"github.com/pipeline-exporter/pipeline_exporter/store/storetest"
)

// BenchmarkSummaries measures the store read of every scrape at 1,000
// pipelines (storetest.BenchmarkSummaries).
func BenchmarkSummaries(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := openOnce(ctx, pgtest.NewDatabase(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, err := s.Lead(ctx); err != nil {
		b.Fatal(err)
	}
	storetest.BenchmarkSummaries(b, s, 1000)
}

// BenchmarkRecheckDay is a day of rechecks at 1,000 pipelines
// (storetest.BenchmarkRecheckDay) on PostgreSQL with the default
// retention; the log's bytes are its table's and indexes'. The bench's day
// passes in about a minute, autovacuum's nap: a VACUUM after each round's
// pruning stands for the passes autovacuum makes in a real five minutes
// (its threshold, 50 dead rows and a fifth of the live ones, is crossed
// at every round).
func BenchmarkRecheckDay(b *testing.B) {
	ctx := context.Background()
	storetest.BenchmarkRecheckDay(b, 1000, func(b *testing.B, clock *storetest.Clock) storetest.Store {
		s := open(b, pgtest.NewDatabase(b), Options{Retention: 90 * 24 * time.Hour, Now: clock.Now})
		lead(b, s)
		return s
	}, func(st storetest.Store) error {
		s := st.(*Store)
		if err := s.Prune(ctx); err != nil {
			return err
		}
		_, err := s.pool.Exec(ctx, `VACUUM log`)
		return err
	}, func(b *testing.B, st storetest.Store) (entries, bytes int64) {
		s := st.(*Store)
		if err := s.pool.QueryRow(ctx, `SELECT count(*), pg_total_relation_size('log') FROM log`).Scan(&entries, &bytes); err != nil {
			b.Fatal(err)
		}
		return entries, bytes
	})
}
