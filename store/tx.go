package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Keys of the state table.
const (
	stateHeld = "held"
	// stateDiscovered holds the discovered pipelines, as JSON: at most
	// max_pipelines small records, rewritten when one is added.
	stateDiscovered = "discovered"
	stateChangeSeq  = "change_seq"
)

// activeStatuses is the SQL list of non-terminal run statuses.
const activeStatuses = `('` + string(pipeline.StatusPending) + `','` + string(pipeline.StatusRunning) + `')`

// Begin starts a transaction of the Applier on the one write connection.
// A database file deleted or replaced under the exporter refuses it, so no
// delivery is acknowledged into a file nobody will read.
func (s *Store) Begin(ctx context.Context) (pipeline.StorageTx, error) {
	if err := s.checkFile(); err != nil {
		return nil, err
	}
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		s.failed(err)
		return nil, fmt.Errorf("store: %w", err)
	}
	return &storeTx{s: s, tx: tx}, nil
}

func (s *Store) failed(err error) {
	s.errors.Add(1)
	s.setHealth(err)
}

// writeStatements are the Applier's statements, prepared once on the write
// connection: SQLite parsing them again in every transaction cost about a
// tenth of the exporter's CPU per webhook (make bench, "CPU per webhook at
// 16 clients").
type writeStatements struct {
	append, markApplied, saveRun, raiseState, setState, findGitHubRun *sql.Stmt
	// bodyBuf holds the compressed body being appended; the Applier's
	// transactions run one at a time.
	bodyBuf []byte
}

func prepareWrites(db *sql.DB) (*writeStatements, error) {
	var w writeStatements
	for _, p := range []struct {
		st  **sql.Stmt
		sql string
	}{
		{&w.append, `INSERT INTO log (source, delivery_id, kind, received_at, body, body_codec, events)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING seq`},
		{&w.markApplied, `UPDATE log SET applied = 1, result = ? WHERE seq = ? AND applied = 0`},
		// One statement whether the run is new or not: the counts table's
		// triggers tell new rows from replaced ones.
		{&w.saveRun, `INSERT INTO runs (id, pipeline, status, trigger_source, created_at,
			finished_at, github_run_id, github_run_attempt, data, change_seq, seen_at, duration)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, status = excluded.status,
			trigger_source = excluded.trigger_source, created_at = excluded.created_at,
			finished_at = excluded.finished_at, github_run_id = excluded.github_run_id,
			github_run_attempt = excluded.github_run_attempt, data = excluded.data,
			change_seq = excluded.change_seq, seen_at = excluded.seen_at, duration = excluded.duration`},
		{&w.raiseState, `INSERT INTO state (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), excluded.value)`},
		{&w.setState, `INSERT INTO state (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`},
		{&w.findGitHubRun, findGitHubRunQuery},
	} {
		st, err := db.Prepare(p.sql)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("store: %w", err)
		}
		*p.st = st
	}
	return &w, nil
}

func (w *writeStatements) close() {
	for _, st := range []*sql.Stmt{w.append, w.markApplied, w.saveRun, w.raiseState, w.setState, w.findGitHubRun} {
		if st != nil {
			st.Close()
		}
	}
}

// storeTx implements pipeline.StorageTx.
type storeTx struct {
	s  *Store
	tx *sql.Tx
}

func (t *storeTx) Append(entries []*pipeline.Entry) error {
	return t.check(t.append(entries))
}

func (t *storeTx) append(entries []*pipeline.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	st := t.tx.Stmt(t.s.writes.append)
	for _, e := range entries {
		events, err := pipeline.MarshalEvents(e.Events)
		if err != nil {
			return err
		}
		var id sql.NullString
		if e.DeliveryID != "" {
			id = sql.NullString{String: e.DeliveryID, Valid: true}
		}
		// The driver copies the bound body, so one buffer serves every
		// entry: s2.Encode's own allocation was a third of the bytes the
		// exporter allocated per webhook.
		body, codec := encodeBody(t.s.writes.bodyBuf, e.Body)
		t.s.writes.bodyBuf = body
		e.Seq = 0
		err = st.QueryRow(string(e.Source), id, e.Kind, nanos(e.ReceivedAt), body, codec, events).Scan(&e.Seq)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	return nil
}

func (t *storeTx) MarkApplied(applied []pipeline.AppliedEntry) error {
	return t.check(t.markApplied(applied))
}

func (t *storeTx) markApplied(applied []pipeline.AppliedEntry) error {
	if len(applied) == 0 {
		return nil
	}
	// An entry is applied once: marking one that is applied already (or
	// missing) means two appliers, and fails the transaction.
	st := t.tx.Stmt(t.s.writes.markApplied)
	for _, a := range applied {
		result, err := json.Marshal(a.Result)
		if err != nil {
			return err
		}
		res, err := st.Exec(result, a.Seq)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("log entry %d is not waiting to be applied", a.Seq)
		}
	}
	return nil
}

func (t *storeTx) SaveRuns(runs []*pipeline.Run) error {
	return t.check(t.saveRuns(runs))
}

func (t *storeTx) saveRuns(runs []*pipeline.Run) error {
	if len(runs) == 0 {
		return nil
	}
	st := t.tx.Stmt(t.s.writes.saveRun)
	var maxSeq int64
	for _, r := range runs {
		data, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encoding run %d: %w", r.ID, err)
		}
		var finished, ghID, ghAttempt sql.NullInt64
		if r.FinishedAt != nil {
			finished = sql.NullInt64{Int64: nanos(*r.FinishedAt), Valid: true}
		}
		if r.GitHub != nil {
			ghID = sql.NullInt64{Int64: r.GitHub.RunID, Valid: true}
			ghAttempt = sql.NullInt64{Int64: int64(r.GitHub.RunAttempt), Valid: true}
		}
		if _, err := st.Exec(r.ID, r.Pipeline, string(r.Status), string(r.Trigger.Source), nanos(r.CreatedAt),
			finished, ghID, ghAttempt, data, r.ChangeSeq, nanos(r.SeenAt), r.DurationSeconds); err != nil {
			return err
		}
		maxSeq = max(maxSeq, r.ChangeSeq)
	}
	_, err := t.tx.Stmt(t.s.writes.raiseState).Exec(stateChangeSeq, maxSeq)
	return err
}

func (t *storeTx) SaveHeld(held []pipeline.HeldJob) error {
	return t.check(t.saveHeld(held))
}

func (t *storeTx) saveHeld(held []pipeline.HeldJob) error {
	data, err := json.Marshal(held)
	if err != nil {
		return err
	}
	_, err = t.tx.Stmt(t.s.writes.setState).Exec(stateHeld, data)
	return err
}

// SaveDiscovered replaces the list of discovered pipelines.
func (t *storeTx) SaveDiscovered(discovered []pipeline.Discovered) error {
	data, err := json.Marshal(discovered)
	if err != nil {
		return t.check(err)
	}
	_, err = t.tx.Stmt(t.s.writes.setState).Exec(stateDiscovered, data)
	return t.check(err)
}

// FindGitHubRun returns the run following the given GitHub workflow run
// id and attempt, or nil when there is none. It reads in the transaction,
// on the write connection: a read connection would find its page cache
// stale after every commit and read the pages again.
func (t *storeTx) FindGitHubRun(runID int64, attempt int) (*pipeline.Run, error) {
	runs, err := scanRuns(t.tx.Stmt(t.s.writes.findGitHubRun).Query(runID, attempt))
	if err != nil || len(runs) == 0 {
		return nil, t.check(err)
	}
	return runs[0], nil
}

// check counts a failed statement as a failed write: the transaction is
// lost.
func (t *storeTx) check(err error) error {
	if err != nil {
		t.s.failed(err)
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

func (t *storeTx) Commit() error {
	if err := t.tx.Commit(); err != nil {
		t.s.failed(err)
		return fmt.Errorf("store: commit: %w", err)
	}
	t.s.setHealth(nil)
	return nil
}

func (t *storeTx) Rollback() error {
	err := t.tx.Rollback()
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// Unapplied returns up to limit log entries not applied yet, in sequence
// order.
func (s *Store) Unapplied(ctx context.Context, limit int) ([]*pipeline.Entry, error) {
	rows, err := s.rdb.QueryContext(ctx, unappliedQuery, limit)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer rows.Close()
	var entries []*pipeline.Entry
	for rows.Next() {
		var e pipeline.Entry
		var source string
		var id sql.NullString
		var received int64
		var body, events []byte
		var codec string
		if err := rows.Scan(&e.Seq, &source, &id, &e.Kind, &received, &body, &codec, &events); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		e.Source, e.DeliveryID, e.ReceivedAt = pipeline.Source(source), id.String, time.Unix(0, received).UTC()
		if e.Body, err = decodeBody(body, codec); err != nil {
			return nil, fmt.Errorf("store: log entry %d: %w", e.Seq, err)
		}
		if e.Events, err = pipeline.UnmarshalEvents(events); err != nil {
			return nil, fmt.Errorf("store: log entry %d: %w", e.Seq, err)
		}
		entries = append(entries, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return entries, nil
}

// Restore returns the committed state the Applier starts from.
func (s *Store) Restore(ctx context.Context) (*pipeline.Restored, error) {
	var r pipeline.Restored
	var err error
	if r.Active, err = queryRuns(ctx, s.rdb, activeRunsQuery); err != nil {
		return nil, err
	}
	if r.LastFinished, err = lastRuns(ctx, s.rdb, `status NOT IN `+activeStatuses); err != nil {
		return nil, err
	}
	if r.LastSuccess, err = lastRuns(ctx, s.rdb, `status = '`+string(pipeline.StatusSuccess)+`'`); err != nil {
		return nil, err
	}
	// sqlite_sequence remembers the highest id ever stored, also after
	// pruning, so the Tracker never reuses an id.
	if err := s.rdb.QueryRowContext(ctx, `SELECT
		COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0),
		COALESCE((SELECT CAST(value AS INTEGER) FROM state WHERE key = ?), 0)`, stateChangeSeq).Scan(&r.MaxRunID, &r.MaxChangeSeq); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := s.readState(ctx, stateHeld, &r.Held); err != nil {
		return nil, fmt.Errorf("store: decoding held job events: %w", err)
	}
	if r.Discovered, err = s.Discovered(ctx); err != nil {
		return nil, err
	}
	return &r, nil
}

// Discovered returns the pipelines discovered from patterns, oldest first.
func (s *Store) Discovered(ctx context.Context) ([]pipeline.Discovered, error) {
	var d []pipeline.Discovered
	if err := s.readState(ctx, stateDiscovered, &d); err != nil {
		return nil, fmt.Errorf("store: reading discovered pipelines: %w", err)
	}
	return d, nil
}

// readState decodes the JSON value of a state key into v, leaving v as it
// is when the key was never written.
func (s *Store) readState(ctx context.Context, key string, v any) error {
	var data []byte
	err := s.rdb.QueryRowContext(ctx, `SELECT value FROM state WHERE key = ?`, key).Scan(&data)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	return json.Unmarshal(data, v)
}

// nanos maps the zero time to 0: time.Time{}.UnixNano() is out of range.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
