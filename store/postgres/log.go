package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// channel is the LISTEN/NOTIFY channel of the replicas: "appended" when a
// replica appended to the log, "applied" when the leader committed applied
// entries.
const channel = "pipeline_exporter_log"

const (
	notifyAppended = "appended"
	notifyApplied  = "applied"
)

// ResultWait is how long WaitResult waits for the leader's outcome.
const ResultWait = 2 * time.Second

// resultPoll is how often WaitResult reads the entry when no notification
// comes: notifications are lost while the listener reconnects.
const resultPoll = 250 * time.Millisecond

const insertEntry = `INSERT INTO log (source, delivery_id, kind, received_at, body, events)
	VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING seq`

func entryArgs(e *pipeline.Entry) ([]any, error) {
	events, err := pipeline.MarshalEvents(e.Events)
	if err != nil {
		return nil, err
	}
	var id *string
	if e.DeliveryID != "" {
		id = &e.DeliveryID
	}
	return []any{string(e.Source), id, text(e.Kind), e.ReceivedAt, e.Body, events}, nil
}

// text makes s storable in a text column, which holds neither a NUL nor
// invalid UTF-8: both become U+FFFD. The event name and an ignored
// entry's reason can quote a signed payload's strings (a \u0000 in a
// branch name is valid JSON), and these columns are for people: the
// delivery itself is kept exact, its body as bytea and its events as json.
func text(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
}

// tx is one transaction of the applier.
type tx struct {
	s   *Store
	ctx context.Context
	tx  pgx.Tx
	// epoch is the leadership the transaction began under.
	epoch              int64
	applied            bool
	maxRunID, maxChSeq int64
}

// Begin starts a transaction of the applier. Only the leader may begin one:
// without the leader lock it returns ErrNotLeader.
func (s *Store) Begin(ctx context.Context) (pipeline.StorageTx, error) {
	epoch := s.epoch.Load()
	if epoch == 0 {
		return nil, ErrNotLeader
	}
	t, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, s.errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	return &tx{s: s, ctx: ctx, tx: t, epoch: epoch}, nil
}

// Append adds entries to the log in the transaction; a duplicate keeps Seq 0.
func (t *tx) Append(entries []*pipeline.Entry) error {
	b := &pgx.Batch{}
	for _, e := range entries {
		args, err := entryArgs(e)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		b.Queue(insertEntry, args...)
	}
	br := t.tx.SendBatch(t.ctx, b)
	for _, e := range entries {
		e.Seq = 0
		if err := br.QueryRow().Scan(&e.Seq); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			br.Close()
			return t.s.errorf("%w: appending to the log: %w", pipeline.ErrUnavailable, err)
		}
	}
	if err := br.Close(); err != nil {
		return t.s.errorf("%w: appending to the log: %w", pipeline.ErrUnavailable, err)
	}
	return nil
}

// MarkApplied records the results of applied entries. An entry that is not
// in the log or is applied already is an error: nothing is applied twice.
func (t *tx) MarkApplied(applied []pipeline.AppliedEntry) error {
	b := &pgx.Batch{}
	for _, a := range applied {
		var reason *string
		if a.Result.Reason != "" {
			r := text(a.Result.Reason)
			reason = &r
		}
		b.Queue(`UPDATE log SET applied = true, outcome = $2, run_ids = $3, reason = $4
			WHERE seq = $1 AND NOT applied`, a.Seq, string(a.Result.Outcome), a.Result.RunIDs, reason)
	}
	br := t.tx.SendBatch(t.ctx, b)
	defer br.Close()
	for _, a := range applied {
		tag, err := br.Exec()
		if err != nil {
			return t.s.errorf("%w: marking entries applied: %w", pipeline.ErrUnavailable, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("store: log entry %d is not waiting to be applied", a.Seq)
		}
	}
	t.applied = t.applied || len(applied) > 0
	return br.Close()
}

// FindGitHubRun returns the run following the GitHub run id and attempt, or
// nil when there is none.
func (t *tx) FindGitHubRun(runID int64, attempt int) (*pipeline.Run, error) {
	runs, err := t.s.query(t.ctx, t.tx, findGitHubRunQuery, runID, attempt)
	if err != nil || len(runs) == 0 {
		return nil, err
	}
	return runs[0], nil
}

// SaveHeld replaces the Tracker's held job events.
func (t *tx) SaveHeld(held []pipeline.HeldJob) error {
	if held == nil {
		held = []pipeline.HeldJob{}
	}
	data, err := json.Marshal(held)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if _, err := t.tx.Exec(t.ctx, `UPDATE state SET held = $1 WHERE id = 1`, data); err != nil {
		return t.s.errorf("%w: saving held jobs: %w", pipeline.ErrUnavailable, err)
	}
	return nil
}

// SaveDiscovered replaces the list of discovered pipelines.
func (t *tx) SaveDiscovered(discovered []pipeline.Discovered) error {
	if discovered == nil {
		discovered = []pipeline.Discovered{}
	}
	data, err := json.Marshal(discovered)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if _, err := t.tx.Exec(t.ctx, `UPDATE state SET discovered = $1 WHERE id = 1`, data); err != nil {
		return t.s.errorf("%w: saving discovered pipelines: %w", pipeline.ErrUnavailable, err)
	}
	return nil
}

// Commit commits the transaction if this store still leads under the epoch
// the transaction began with. The update of the state row checks the epoch
// and locks the row, and a new leader increments the epoch on that row, so
// a deposed leader's commit either finishes before the new leader starts or
// fails: two appliers never both commit. The update, the notification and
// the commit take two round trips.
func (t *tx) Commit() error {
	defer t.tx.Rollback(t.ctx)
	if t.s.epoch.Load() != t.epoch {
		return ErrNotLeader
	}
	b := &pgx.Batch{}
	fenced := b.Queue(`UPDATE state SET max_run_id = GREATEST(max_run_id, $1),
		max_change_seq = GREATEST(max_change_seq, $2) WHERE id = 1 AND leader_epoch = $3`, t.maxRunID, t.maxChSeq, t.epoch)
	var leads bool
	fenced.Exec(func(tag pgconn.CommandTag) error {
		leads = tag.RowsAffected() == 1
		return nil
	})
	if t.applied {
		// Delivered at commit: the replicas waiting in WaitResult look again.
		b.Queue(`SELECT pg_notify($1, $2)`, channel, notifyApplied)
	}
	if err := t.tx.SendBatch(t.ctx, b).Close(); err != nil {
		return t.s.errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	if !leads {
		return fmt.Errorf("%w: the leader epoch is no longer %d", ErrNotLeader, t.epoch)
	}
	if err := t.tx.Commit(t.ctx); err != nil {
		return t.s.errorf("%w: commit: %w", pipeline.ErrUnavailable, err)
	}
	return nil
}

// Rollback abandons the transaction.
func (t *tx) Rollback() error {
	if err := t.tx.Rollback(t.ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return t.s.errorf("store: rollback: %w", err)
	}
	return nil
}

// Unapplied returns up to limit entries that are not applied yet, in
// sequence order.
func (s *Store) Unapplied(ctx context.Context, limit int) ([]*pipeline.Entry, error) {
	rows, err := s.pool.Query(ctx, unappliedQuery, limit)
	if err != nil {
		return nil, s.errorf("%w: reading the log: %w", pipeline.ErrUnavailable, err)
	}
	defer rows.Close()
	var entries []*pipeline.Entry
	for rows.Next() {
		var (
			e      pipeline.Entry
			source string
			id     *string
			events []byte
		)
		if err := rows.Scan(&e.Seq, &source, &id, &e.Kind, &e.ReceivedAt, &e.Body, &events); err != nil {
			return nil, s.errorf("store: reading the log: %w", err)
		}
		e.Source = pipeline.Source(source)
		if id != nil {
			e.DeliveryID = *id
		}
		if e.Events, err = pipeline.UnmarshalEvents(events); err != nil {
			return nil, fmt.Errorf("store: log entry %d: %w", e.Seq, err)
		}
		entries = append(entries, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf("%w: reading the log: %w", pipeline.ErrUnavailable, err)
	}
	return entries, nil
}

// knownDeliveriesQuery reads the unique index on (source, delivery_id).
const knownDeliveriesQuery = `SELECT delivery_id FROM log WHERE source = $1 AND delivery_id = ANY($2)`

// KnownDeliveries returns which of ids the log holds for source, applied or
// not, pruned ones excepted.
func (s *Store) KnownDeliveries(ctx context.Context, source pipeline.Source, ids []string) (map[string]bool, error) {
	known := make(map[string]bool)
	if len(ids) == 0 {
		return known, nil
	}
	rows, err := s.pool.Query(ctx, knownDeliveriesQuery, string(source), ids)
	if err != nil {
		return nil, s.errorf("%w: reading the log: %w", pipeline.ErrUnavailable, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, s.errorf("store: reading the log: %w", err)
		}
		known[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf("%w: reading the log: %w", pipeline.ErrUnavailable, err)
	}
	return known, nil
}

// AppendShared appends one entry to the log in its own transaction, for a
// replica that does not lead: when it returns nil the entry is durable and
// e.Seq is set, or left 0 when the entry is a duplicate (also of an entry
// another replica appended at the same moment). The leader is notified.
func (s *Store) AppendShared(ctx context.Context, e *pipeline.Entry) error {
	args, err := entryArgs(e)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	// One statement, one round trip: the insert and the notification
	// commit together.
	var seq *int64
	err = s.pool.QueryRow(ctx, `WITH ins AS (`+insertEntry+`)
		SELECT (SELECT seq FROM ins), (SELECT 1 FROM pg_notify($7, $8))`,
		append(args, channel, notifyAppended)...).Scan(&seq, nil)
	if err != nil {
		return s.errorf("%w: appending to the log: %w", pipeline.ErrUnavailable, err)
	}
	e.Seq = 0
	if seq != nil {
		e.Seq = *seq
	}
	return nil
}

// ReceivedAt returns when the delivery with the given key that the log
// holds was received (to the microsecond), for telling a delivery that a
// failed commit stored after all from an earlier delivery of the same id.
func (s *Store) ReceivedAt(ctx context.Context, source pipeline.Source, deliveryID string) (time.Time, error) {
	var t time.Time
	err := s.pool.QueryRow(ctx, `SELECT received_at FROM log WHERE source = $1 AND delivery_id = $2`, string(source), deliveryID).Scan(&t)
	if err != nil {
		return t, s.errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	return t, nil
}

// Appended receives a value when a replica appended to the log. The leader's
// applier reads Unapplied when it does; it should also read it every second
// or so, since notifications are lost while the listener reconnects.
func (s *Store) Appended() <-chan struct{} { return s.appended }

// WaitResult waits up to ResultWait (or until ctx ends) for the leader to
// apply the entry with the given key, and returns its result. ok is false
// when it is not applied yet: the delivery is durable and queued. It waits
// on the leader's notifications and reads the entry every 250 ms as well.
func (s *Store) WaitResult(ctx context.Context, source pipeline.Source, deliveryID string) (res pipeline.Result, ok bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, ResultWait)
	defer cancel()
	for {
		// Taken before the read, so a commit between the read and the
		// wait still wakes us.
		wake := s.appliedSignal()
		var (
			applied bool
			outcome *string
			reason  *string
		)
		err := s.pool.QueryRow(wctx, `SELECT applied, outcome, run_ids, reason FROM log
			WHERE source = $1 AND delivery_id = $2`, string(source), deliveryID).Scan(&applied, &outcome, &res.RunIDs, &reason)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return pipeline.Result{}, false, fmt.Errorf("store: no %s delivery %q in the log", source, deliveryID)
		case err != nil && wctx.Err() != nil && ctx.Err() == nil:
			return pipeline.Result{}, false, nil
		case err != nil:
			return pipeline.Result{}, false, s.errorf("%w: %w", pipeline.ErrUnavailable, err)
		case applied:
			if outcome != nil {
				res.Outcome = pipeline.Outcome(*outcome)
			}
			if reason != nil {
				res.Reason = *reason
			}
			return res, true, nil
		}
		select {
		case <-wake:
		case <-time.After(resultPoll):
		case <-wctx.Done():
			if err := ctx.Err(); err != nil {
				return pipeline.Result{}, false, err
			}
			return pipeline.Result{}, false, nil
		}
	}
}

func (s *Store) appliedSignal() <-chan struct{} {
	s.appliedMu.Lock()
	defer s.appliedMu.Unlock()
	return s.applied
}

func (s *Store) wakeWaiters() {
	s.appliedMu.Lock()
	close(s.applied)
	s.applied = make(chan struct{})
	s.appliedMu.Unlock()
}

// Lag returns how many log entries are not applied yet.
func (s *Store) Lag(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, lagQuery).Scan(&n); err != nil {
		return 0, s.errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	return n, nil
}

// listen holds a connection that LISTENs on the replicas' channel and turns
// notifications into wake-ups, reconnecting after a second when it fails.
func (s *Store) listen(ctx context.Context) {
	defer close(s.listenerDone)
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.logger.Warn("Listening for the other replicas failed, reconnecting", "url", s.url, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return s.errorf("%w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+channel); err != nil {
		return s.errorf("%w", err)
	}
	// Whatever was committed while no one listened.
	s.wakeWaiters()
	s.signalAppended()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return s.errorf("%w", err)
		}
		switch n.Payload {
		case notifyApplied:
			s.wakeWaiters()
		case notifyAppended:
			s.signalAppended()
		}
	}
}

func (s *Store) signalAppended() {
	select {
	case s.appended <- struct{}{}:
	default:
	}
}
