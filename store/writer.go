package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	// maxBatch bounds how many queued requests share one transaction, so one
	// commit never holds the write lock for long.
	maxBatch = 256
	// pruneBatch bounds the rows each kind of pruning deletes per
	// transaction, so pruning a large backlog does not stall ingest: with
	// steps of 1000 runs, ingest p99 at 500/s was 17x its value without
	// pruning (`make bench`); with 100, 5.9x while pruning went on; with 20
	// and the rest below, 1.75x. A backlog of 80k runs still drains in
	// well under a minute.
	pruneBatch = 20
	// pruneInterval is how often retention is enforced.
	pruneInterval = time.Minute
	// bulkBatch is how many runs BulkLoad writes per transaction.
	bulkBatch = 10000
)

// activeStatuses is the SQL list of non-terminal run statuses.
const activeStatuses = `('` + string(pipeline.StatusPending) + `','` + string(pipeline.StatusRunning) + `')`

type writeStmts struct {
	upsertRun, insertDelivery, counts *sql.Stmt
}

func (w *writeStmts) prepare(db *sql.DB) error {
	var err error
	// One statement whether the run is new or not: the counts table's
	// triggers tell new rows from replaced ones.
	if w.upsertRun, err = db.Prepare(`INSERT INTO runs (pipeline, status, trigger_source, created_at,
		finished_at, github_run_id, github_run_attempt, data, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, status = excluded.status,
		trigger_source = excluded.trigger_source, created_at = excluded.created_at,
		finished_at = excluded.finished_at, github_run_id = excluded.github_run_id,
		github_run_attempt = excluded.github_run_attempt, data = excluded.data`); err != nil {
		return err
	}
	// A redelivery that raced its original is already journaled: keep the
	// first copy rather than failing the whole batch on the primary key.
	if w.insertDelivery, err = db.Prepare(`INSERT INTO deliveries (source, id, event, received_at, body)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`); err != nil {
		return err
	}
	w.counts, err = db.Prepare(`SELECT runs, deliveries FROM counts`)
	return err
}

func (w *writeStmts) close() {
	for _, st := range []*sql.Stmt{w.upsertRun, w.insertDelivery, w.counts} {
		if st != nil {
			st.Close()
		}
	}
}

// runRow is a run encoded for its table row, done in the caller's goroutine
// so the writer spends its time writing and the caller may reuse the Run.
type runRow struct {
	id            int64
	pipeline      string
	status        string
	trigger       string
	createdAt     int64
	finishedAt    sql.NullInt64
	githubRunID   sql.NullInt64
	githubAttempt sql.NullInt64
	data          []byte
}

func encodeRun(r *pipeline.Run) (runRow, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return runRow{}, fmt.Errorf("store: encoding run %d: %w", r.ID, err)
	}
	row := runRow{
		id:        r.ID,
		pipeline:  r.Pipeline,
		status:    string(r.Status),
		trigger:   string(r.Trigger.Source),
		createdAt: nanos(r.CreatedAt),
		data:      data,
	}
	if r.FinishedAt != nil {
		row.finishedAt = sql.NullInt64{Int64: nanos(*r.FinishedAt), Valid: true}
	}
	if r.GitHub != nil {
		row.githubRunID = sql.NullInt64{Int64: r.GitHub.RunID, Valid: true}
		row.githubAttempt = sql.NullInt64{Int64: int64(r.GitHub.RunAttempt), Valid: true}
	}
	return row, nil
}

// nanos maps the zero time to 0: time.Time{}.UnixNano() is out of range.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

type request struct {
	delivery *pipeline.Delivery
	runs     []runRow
	// prune asks the writer for one pruning step instead of a write;
	// pruned reports how many rows it deleted, took how long it held the
	// writer.
	prune  bool
	pruned int64
	took   time.Duration
	// checkpoint asks the writer to finish a checkpoint between its
	// transactions (see checkpointer).
	checkpoint bool
	done       chan error
}

// Submit queues a delivery (nil when there is none) and the runs it changed
// for the writer. The returned channel yields nil once everything is durable,
// or an error wrapping pipeline.ErrUnavailable when it could not be stored.
// Requests are applied in the order Submit was called. Submit keeps its own
// copy of the runs; d.Body must not be modified until the result arrives.
func (s *Store) Submit(d *pipeline.Delivery, runs []*pipeline.Run) <-chan error {
	done := make(chan error, 1)
	req := &request{delivery: d, done: done, runs: make([]runRow, 0, len(runs))}
	for _, r := range runs {
		row, err := encodeRun(r)
		if err != nil {
			done <- err
			return done
		}
		req.runs = append(req.runs, row)
	}
	if d != nil {
		s.addPending(d, 1)
	}
	if err := s.enqueue(req); err != nil {
		if d != nil {
			s.addPending(d, -1)
		}
		done <- err
	}
	return done
}

func (s *Store) enqueue(req *request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("%w: store is closed", pipeline.ErrUnavailable)
	}
	s.reqs <- req
	return nil
}

func (s *Store) addPending(d *pipeline.Delivery, n int) {
	k := deliveryKey{d.Source, d.ID}
	s.pendingMu.Lock()
	if s.pending[k] += n; s.pending[k] <= 0 {
		delete(s.pending, k)
	}
	s.pendingMu.Unlock()
}

func (s *Store) isPending(source pipeline.Source, id string) bool {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	return s.pending[deliveryKey{source, id}] > 0
}

// writer is the only goroutine that writes (besides BulkLoad). It takes
// everything queued, up to maxBatch, and commits it in one transaction.
func (s *Store) writer() {
	defer close(s.stopped)
	batch := make([]*request, 0, maxBatch)
	submits := make([]*request, 0, maxBatch)
	for req := range s.reqs {
		batch = append(batch[:0], req)
	fill:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		submits = submits[:0]
		for _, r := range batch {
			if !r.prune && !r.checkpoint {
				submits = append(submits, r)
			}
		}
		if len(submits) > 0 {
			s.writeSubmits(submits)
		}
		for _, r := range batch {
			switch {
			case r.prune:
				var err error
				start := time.Now()
				r.pruned, err = s.pruneStep()
				r.took = time.Since(start)
				r.done <- err
			case r.checkpoint:
				r.done <- s.checkpointOn(s.wdb)
			}
		}
	}
}

func (s *Store) writeSubmits(reqs []*request) {
	var written int64
	err := s.inTx(func(tx *sql.Tx) error {
		insDelivery := tx.Stmt(s.stmts.insertDelivery)
		for _, r := range reqs {
			if d := r.delivery; d != nil {
				if _, err := insDelivery.Exec(string(d.Source), d.ID, d.Event, nanos(d.ReceivedAt), d.Body); err != nil {
					return err
				}
				written += int64(len(d.Body))
			}
			if err := s.upsertRuns(tx, r.runs); err != nil {
				return err
			}
			for _, row := range r.runs {
				written += int64(len(row.data))
			}
		}
		return nil
	})
	if err == nil {
		s.commits.Add(1)
		s.wrote(written)
	} else {
		s.logger.Error("Writing to the store failed", "path", s.path, "requests", len(reqs), "err", err)
		err = fmt.Errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	// Pending entries go before the answers so that, once a caller has its
	// result, HasDelivery reflects exactly what is on disk.
	for _, r := range reqs {
		if r.delivery != nil {
			s.addPending(r.delivery, -1)
		}
	}
	for _, r := range reqs {
		r.done <- err
	}
}

// inTx runs fn in a write transaction, reads the row counts the
// transaction leaves and publishes them once it commits, and keeps Healthy
// up to date: a failed write marks the store unhealthy, the next successful
// commit clears it.
func (s *Store) inTx(fn func(*sql.Tx) error) (err error) {
	defer func() {
		if err != nil {
			s.errors.Add(1)
		}
		s.setHealth(err)
	}()
	tx, err := s.wdb.Begin()
	if err != nil {
		return err
	}
	var runs, deliveries int64
	err = fn(tx)
	if err == nil {
		err = tx.Stmt(s.stmts.counts).QueryRow().Scan(&runs, &deliveries)
	}
	if err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.runs.Store(runs)
	s.deliveries.Store(deliveries)
	return nil
}

// upsertRuns inserts or replaces each run's row.
func (s *Store) upsertRuns(tx *sql.Tx, rows []runRow) error {
	if len(rows) == 0 {
		return nil
	}
	st := tx.Stmt(s.stmts.upsertRun)
	for _, r := range rows {
		if _, err := st.Exec(r.pipeline, r.status, r.trigger, r.createdAt, r.finishedAt, r.githubRunID, r.githubAttempt, r.data, r.id); err != nil {
			return err
		}
	}
	return nil
}

// pruneStep deletes at most pruneBatch rows of each kind: finished runs past
// MaxRecords, runs and deliveries older than Retention. It returns the number
// of rows deleted.
//
// Pruning by count spares pending and running runs: they are the Tracker's
// live state, bounded in number and duration by dispatch_timeout and
// timeout, and become prunable once they finish. Pruning by age deletes them
// too: nothing legitimately runs for the whole retention period, and a run
// of a pipeline removed from the config would otherwise stay forever.
func (s *Store) pruneStep() (int64, error) {
	var deleted int64
	err := s.inTx(func(tx *sql.Tx) error {
		if excess := s.runs.Load() - int64(s.opts.MaxRecords); s.opts.MaxRecords > 0 && excess > 0 {
			n, err := execCount(tx, `DELETE FROM runs WHERE id IN (SELECT id FROM runs
				WHERE status NOT IN `+activeStatuses+` ORDER BY id LIMIT ?)`, min(excess, pruneBatch))
			if err != nil {
				return err
			}
			deleted += n
		}
		if s.opts.Retention > 0 {
			cutoff := s.opts.Now().Add(-s.opts.Retention).UnixNano()
			n, err := execCount(tx, `DELETE FROM runs WHERE id IN (SELECT id FROM runs
				WHERE created_at < ? LIMIT ?)`, cutoff, pruneBatch)
			if err != nil {
				return err
			}
			deleted += n
			if n, err = execCount(tx, `DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries
				WHERE received_at < ? LIMIT ?)`, cutoff, pruneBatch); err != nil {
				return err
			}
			deleted += n
		}
		return nil
	})
	if err != nil {
		s.logger.Error("Pruning the store failed", "path", s.path, "err", err)
		return 0, fmt.Errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	return deleted, nil
}

func execCount(tx *sql.Tx, query string, args ...any) (int64, error) {
	res, err := tx.Exec(query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// prune enforces retention in pruneBatch steps through the writer, so
// Submits queued meanwhile are committed between steps. After each step it
// rests three times as long as the step took, so a large backlog takes at
// most a quarter of the writer's time and ingest keeps its latency while it
// drains.
func (s *Store) prune(ctx context.Context) error {
	var total int64
	for ctx.Err() == nil {
		req := &request{prune: true, done: make(chan error, 1)}
		if err := s.enqueue(req); err != nil {
			return err
		}
		if err := <-req.done; err != nil {
			return err
		}
		if req.pruned == 0 {
			break
		}
		total += req.pruned
		select {
		case <-ctx.Done():
		case <-time.After(3 * req.took):
		}
	}
	if total > 0 {
		s.logger.Info("Pruned the store", "path", s.path, "rows", total)
	}
	return ctx.Err()
}

func (s *Store) pruner(ctx context.Context) {
	defer close(s.prunerDone)
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		// Errors are logged by pruneStep and shown by Healthy.
		s.prune(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// BulkLoad writes runs directly, bypassing the writer, in large
// transactions. It exists to seed big databases for benchmarks.
func (s *Store) BulkLoad(runs []*pipeline.Run) error {
	for len(runs) > 0 {
		chunk := runs[:min(len(runs), bulkBatch)]
		runs = runs[len(chunk):]
		rows := make([]runRow, len(chunk))
		var written int64
		for i, r := range chunk {
			var err error
			if rows[i], err = encodeRun(r); err != nil {
				return err
			}
			written += int64(len(rows[i].data))
		}
		if err := s.inTx(func(tx *sql.Tx) error { return s.upsertRuns(tx, rows) }); err != nil {
			return fmt.Errorf("store: bulk load: %w", err)
		}
		s.wrote(written)
	}
	return nil
}
