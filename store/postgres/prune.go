package postgres

import (
	"context"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// pruneBatch bounds the rows one pruning statement deletes, so that each
// transaction stays short and holds few locks.
const pruneBatch = 1000

// The queries of Prune. Each finds a batch in a subquery and deletes it
// by primary key: the seqs and ids are an array, since with IN the planner
// joined them against a scan of the whole table (TestPlansUseIndexes), a
// million runs read for every thousand deleted.
const (
	pruneRunsByAgeQuery = `DELETE FROM runs WHERE id = ANY (ARRAY(SELECT id FROM runs
		WHERE seen_at < $1 AND status NOT IN ` + activeStatuses + ` LIMIT $2))`
	pruneLogByAgeQuery = `DELETE FROM log WHERE seq = ANY (ARRAY(SELECT seq FROM log
		WHERE applied AND received_at < $1 LIMIT $2))`
	pruneRunsByCountQuery = `DELETE FROM runs WHERE id = ANY (ARRAY(SELECT id FROM runs
		WHERE status NOT IN ` + activeStatuses + ` ORDER BY id LIMIT $1))`
	// pruneRechecksQuery repeats the predicate of the log_applied_rechecks
	// index, so that PostgreSQL reads that index.
	pruneRechecksQuery = `DELETE FROM log WHERE seq = ANY (ARRAY(SELECT seq FROM log
		WHERE applied AND kind = '` + pipeline.KindRecheck + `' LIMIT $1))`
)

// Prune enforces retention: it deletes finished runs first seen longer
// than Retention ago and applied log entries received longer ago than that
// (a redelivery older than the retention is then taken as new), and the
// oldest finished runs past MaxRecords. Pending and running runs are never
// deleted, as in SQLite: the Applier holds them and would write them back
// at their next change. The leader calls it periodically, in batches of
// 1000 rows.
//
// Applied recheck entries go whatever the retention, as in SQLite (see
// store.Store.pruneStep for why): 288,000 a day at 1,000 pipelines held
// 127 MB of the log a day here (BenchmarkRecheckDay). Entries not applied
// yet stay.
func (s *Store) Prune(ctx context.Context) error {
	var deleted int64
	del := func(query string, args ...any) error {
		for {
			tag, err := s.pool.Exec(ctx, query, args...)
			if err != nil {
				return s.errorf("%w: pruning: %w", pipeline.ErrUnavailable, err)
			}
			deleted += tag.RowsAffected()
			if tag.RowsAffected() < pruneBatch {
				return nil
			}
		}
	}
	if err := del(pruneRechecksQuery, pruneBatch); err != nil {
		return err
	}
	rechecks := deleted
	deleted = 0
	if s.opts.Retention > 0 {
		cutoff := s.opts.Now().Add(-s.opts.Retention)
		if err := del(pruneRunsByAgeQuery, cutoff, pruneBatch); err != nil {
			return err
		}
		if err := del(pruneLogByAgeQuery, cutoff, pruneBatch); err != nil {
			return err
		}
	}
	if s.opts.MaxRecords > 0 {
		// The count reads the whole primary key index (not measured at a
		// million runs yet); only the leader prunes.
		var excess int64
		if err := s.pool.QueryRow(ctx, `SELECT count(*) - $1 FROM runs`, s.opts.MaxRecords).Scan(&excess); err != nil {
			return s.errorf("%w: pruning: %w", pipeline.ErrUnavailable, err)
		}
		for excess > 0 {
			tag, err := s.pool.Exec(ctx, pruneRunsByCountQuery, min(excess, pruneBatch))
			if err != nil {
				return s.errorf("%w: pruning: %w", pipeline.ErrUnavailable, err)
			}
			deleted += tag.RowsAffected()
			if tag.RowsAffected() == 0 {
				break
			}
			excess -= tag.RowsAffected()
		}
	}
	// Applied rechecks go at every pass: only retention's deletions are
	// news.
	switch {
	case deleted > 0:
		s.logger.Info("Pruned the store", "url", s.url, "rows", deleted, "recheck_entries", rechecks)
	case rechecks > 0:
		s.logger.Debug("Pruned the store", "url", s.url, "rows", deleted, "recheck_entries", rechecks)
	}
	return nil
}
