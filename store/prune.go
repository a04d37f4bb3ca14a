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
// than Retention, and applied log entries received longer ago than it.
func (s *Store) pruneStep(ctx context.Context) (int64, error) {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var deleted int64
	if s.opts.MaxRecords > 0 {
		var runs int64
		if err := tx.QueryRow(`SELECT runs FROM counts`).Scan(&runs); err != nil {
			return 0, err
		}
		if excess := runs - int64(s.opts.MaxRecords); excess > 0 {
			n, err := execCount(tx, pruneRunsByCountQuery, min(excess, pruneBatch))
			if err != nil {
				return 0, err
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
			return 0, err
		}
		deleted += n
		if n, err = execCount(tx, pruneLogByAgeQuery, cutoff, pruneBatch); err != nil {
			return 0, err
		}
		deleted += n
	}
	return deleted, tx.Commit()
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
func (s *Store) Prune(ctx context.Context) (int64, error) {
	var total int64
	for ctx.Err() == nil {
		start := time.Now()
		n, err := s.pruneStep(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.logger.Error("Pruning the store failed", "path", s.path, "err", err)
			return total, fmt.Errorf("%w: pruning: %w", pipeline.ErrUnavailable, err)
		}
		if n == 0 {
			break
		}
		total += n
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Since(start)):
		}
	}
	if total > 0 {
		s.logger.Info("Pruned the store", "path", s.path, "rows", total)
	}
	return total, ctx.Err()
}

func (s *Store) pruner(ctx context.Context) {
	defer close(s.prunerDone)
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		_, _ = s.Prune(ctx) // logged by Prune
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
