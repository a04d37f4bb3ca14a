package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	// pruneBatch bounds the rows each kind of pruning deletes per
	// transaction, so pruning a large backlog does not stall ingest: with
	// steps of 1000 runs, ingest p99 at 500/s was 17x its value without
	// pruning; with 100, 5.9x while pruning went on; with 20 and the rest
	// below, 1.36x and 1.44x in the last two measurements (`make bench`,
	// "ingest p99 at 500/s for 75 s, 100k runs pruned to 20,000"), which
	// drains the 80k runs past max-records within those 75 s.
	pruneBatch = 20
	// pruneInterval is how often retention is enforced.
	pruneInterval = time.Minute
)

// pruneStep deletes at most pruneBatch rows of each kind: finished runs
// past MaxRecords (oldest first), runs the exporter first saw longer ago
// than Retention, applied log entries received longer ago than it, and
// applied recheck entries, whatever their age. It returns the recheck
// entries and the other rows it deleted.
//
// A recheck entry (the leader's look at a pipeline's live site, every
// recheck_interval) has done all it will do once it is applied: its
// result is in the live run it rewrote (verify.checked_at, served,
// failed_rechecks, stale), which every reader and replica reads. It has
// no delivery id for a redelivery to match, and the Applier only ever
// reads the entries not applied yet. Kept for the retention, they were
// nearly the whole log of an organization: 288,000 entries (106 MB) a day
// at 1,000 pipelines, 26 million over 90 days (BenchmarkRecheckDay).
// An entry not applied yet is never deleted: after a crash the Applier
// applies it.
func (s *Store) pruneStep(ctx context.Context) (rechecks, deleted int64, err error) {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	if rechecks, err = execCount(tx, pruneRechecksQuery, pruneBatch); err != nil {
		return 0, 0, err
	}
	if s.opts.MaxRecords > 0 {
		var runs int64
		if err := tx.QueryRow(`SELECT runs FROM counts`).Scan(&runs); err != nil {
			return 0, 0, err
		}
		if excess := runs - int64(s.opts.MaxRecords); excess > 0 {
			n, err := execCount(tx, pruneRunsByCountQuery, min(excess, pruneBatch))
			if err != nil {
				return 0, 0, err
			}
			deleted += n
		}
	}
	if s.opts.Retention > 0 {
		// Retention counts from the exporter's own clock: a sender's old
		// timestamps never make a fresh run look expired.
		cutoff := s.opts.Now().Add(-s.opts.Retention).UnixNano()
		n, err := execCount(tx, pruneRunsByAgeQuery, cutoff, pruneBatch)
		if err != nil {
			return 0, 0, err
		}
		deleted += n
		if n, err = execCount(tx, pruneLogByAgeQuery, cutoff, pruneBatch); err != nil {
			return 0, 0, err
		}
		deleted += n
	}
	return rechecks, deleted, tx.Commit()
}

func execCount(tx *sql.Tx, query string, args ...any) (int64, error) {
	res, err := tx.Exec(query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Prune enforces retention now, in pruneBatch steps on the one write
// connection, so the Applier's transactions go on between steps. After
// each step it rests three times as long as the step took, so a large
// backlog takes at most a quarter of the writer's time and ingest keeps
// its latency while it drains.
func (s *Store) Prune(ctx context.Context) error {
	var rechecks, rows int64
	for ctx.Err() == nil {
		start := time.Now()
		r, n, err := s.pruneStep(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.logger.Error("Pruning the store failed", "path", s.path, "err", err)
			return fmt.Errorf("%w: pruning: %w", pipeline.ErrUnavailable, err)
		}
		if r+n == 0 {
			break
		}
		rechecks, rows = rechecks+r, rows+n
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Since(start)):
		}
	}
	// Applied rechecks go at every pass: only retention's deletions are
	// news.
	switch {
	case rows > 0:
		s.logger.Info("Pruned the store", "path", s.path, "rows", rows, "recheck_entries", rechecks)
	case rechecks > 0:
		s.logger.Debug("Pruned the store", "path", s.path, "rows", rows, "recheck_entries", rechecks)
	}
	return ctx.Err()
}

func (s *Store) pruner(ctx context.Context) {
	defer close(s.prunerDone)
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		_ = s.Prune(ctx) // logged by Prune
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
