package store

import (
	"context"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/store/storetest"
)

// logSize returns the log's entries and the bytes of the pages its table
// and indexes hold (SQLite's dbstat).
func logSize(tb testing.TB, s *Store) (entries, bytes int64) {
	tb.Helper()
	if err := s.rdb.QueryRow(`SELECT (SELECT COUNT(*) FROM log), (SELECT SUM(pgsize) FROM dbstat
		WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = 'log'))`).Scan(&entries, &bytes); err != nil {
		tb.Fatal(err)
	}
	return entries, bytes
}

// BenchmarkRecheckDay is a day of rechecks at 1,000 pipelines
// (storetest.BenchmarkRecheckDay) on SQLite with the default retention.
// Prune's own test is the suite's PruneAppliedRechecks.
func BenchmarkRecheckDay(b *testing.B) {
	storetest.BenchmarkRecheckDay(b, 1000, func(b *testing.B, clock *storetest.Clock) storetest.Store {
		s, err := Open(b.TempDir(), Options{Retention: 90 * 24 * time.Hour, Now: clock.Now})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}, func(s storetest.Store) error {
		// Prune's steps without its rests, which keep ingest's latency
		// in real time: the bench's day passes in under a minute.
		for {
			r, n, err := s.(*Store).pruneStep(context.Background())
			if err != nil || r+n == 0 {
				return err
			}
		}
	}, func(b *testing.B, s storetest.Store) (int64, int64) {
		// Each recheck also rewrites its live run's row: its JSON is
		// this long.
		var row float64
		if err := s.(*Store).rdb.QueryRow(`SELECT AVG(LENGTH(data)) FROM runs`).Scan(&row); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(row, "run-row-B")
		return logSize(b, s.(*Store))
	})
}
