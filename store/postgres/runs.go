package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/jackc/pgx/v5"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// activeStatuses is the SQL list of the statuses of runs that are not
// terminal; the partial index runs_active uses the same expression, which
// is how the planner matches it.
const activeStatuses = `('pending', 'running')`

// SaveRuns inserts or replaces runs, each with its ChangeSeq.
func (t *tx) SaveRuns(runs []*pipeline.Run) error {
	b := &pgx.Batch{}
	for _, r := range runs {
		data, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("store: run %d: %w", r.ID, err)
		}
		var ghID *int64
		var ghAttempt *int
		if r.GitHub != nil {
			ghID, ghAttempt = &r.GitHub.RunID, &r.GitHub.RunAttempt
		}
		b.Queue(`INSERT INTO runs (id, pipeline, status, trigger_source, created_at, finished_at, seen_at,
				duration_seconds, github_run_id, github_run_attempt, change_seq, data)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (id) DO UPDATE SET pipeline = EXCLUDED.pipeline, status = EXCLUDED.status,
				trigger_source = EXCLUDED.trigger_source, created_at = EXCLUDED.created_at,
				finished_at = EXCLUDED.finished_at, seen_at = EXCLUDED.seen_at,
				duration_seconds = EXCLUDED.duration_seconds, github_run_id = EXCLUDED.github_run_id,
				github_run_attempt = EXCLUDED.github_run_attempt, change_seq = EXCLUDED.change_seq,
				data = EXCLUDED.data`,
			r.ID, r.Pipeline, string(r.Status), string(r.Trigger.Source), r.CreatedAt, r.FinishedAt, r.SeenAt,
			r.DurationSeconds, ghID, ghAttempt, r.ChangeSeq, data)
		var finished, success *int64
		if r.Status.Terminal() {
			finished = &r.ID
			if r.Status == pipeline.StatusSuccess {
				success = &r.ID
			}
		}
		// A run still in progress only makes sure its pipeline has a row,
		// without writing a new version of it.
		b.Queue(`INSERT INTO pipelines (name, last_finished_id, last_success_id) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET
				last_finished_id = GREATEST(pipelines.last_finished_id, EXCLUDED.last_finished_id),
				last_success_id = GREATEST(pipelines.last_success_id, EXCLUDED.last_success_id)
			WHERE EXCLUDED.last_finished_id IS NOT NULL`,
			r.Pipeline, finished, success)
		t.maxRunID = max(t.maxRunID, r.ID)
		t.maxChSeq = max(t.maxChSeq, r.ChangeSeq)
	}
	if err := t.tx.SendBatch(t.ctx, b).Close(); err != nil {
		return t.s.errorf("%w: saving runs: %w", pipeline.ErrUnavailable, err)
	}
	return nil
}

// runColumns are what every run query selects: the run's JSON and its
// change sequence, which the JSON leaves out.
const runColumns = `data, change_seq`

// Run returns the run with the given id, or pipeline.ErrNotFound.
func (s *Store) Run(ctx context.Context, id int64) (*pipeline.Run, error) {
	runs, err := s.queryRuns(ctx, `SELECT `+runColumns+` FROM runs WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, pipeline.ErrNotFound
	}
	return runs[0], nil
}

// ChangedAfter returns, in change order, at most limit runs whose latest
// change has a ChangeSeq greater than seq.
func (s *Store) ChangedAfter(ctx context.Context, seq int64, limit int) ([]*pipeline.Run, error) {
	return s.queryRuns(ctx, changedAfterQuery, seq, limit)
}

// The fixed queries, named so that TestPlansUseIndexes explains the ones
// the code runs.
const (
	changedAfterQuery  = `SELECT ` + runColumns + ` FROM runs WHERE change_seq > $1 ORDER BY change_seq LIMIT $2`
	activeRunsQuery    = `SELECT ` + runColumns + ` FROM runs WHERE status IN ` + activeStatuses + ` ORDER BY id`
	findGitHubRunQuery = `SELECT ` + runColumns + ` FROM runs
		WHERE github_run_id = $1 AND github_run_attempt = $2 ORDER BY id DESC LIMIT 1`
	unappliedQuery = `SELECT seq, source, delivery_id, kind, received_at, body, events
		FROM log WHERE NOT applied ORDER BY seq LIMIT $1`
	lagQuery = `SELECT count(*) FROM log WHERE NOT applied`
)

// ListRuns returns the runs q selects, newest (highest id) first, at most
// q.Limit of them; a Limit below 1 returns nothing.
func (s *Store) ListRuns(ctx context.Context, q pipeline.RunQuery) ([]*pipeline.Run, error) {
	if q.Limit < 1 {
		return nil, nil
	}
	query, args := listQuery(q)
	return s.queryRuns(ctx, query, args...)
}

// listQuery builds ListRuns' SQL. Several statuses become one branch each,
// read newest first from (status, id) or (pipeline, status, id) and merged:
// "status = ANY(...)" would make PostgreSQL walk the primary key backwards
// past every run of the other statuses.
func listQuery(q pipeline.RunQuery) (string, []any) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var where []string
	if q.Pipeline != "" {
		where = append(where, "pipeline = "+arg(q.Pipeline))
	}
	if q.Trigger != "" {
		where = append(where, "trigger_source = "+arg(string(q.Trigger)))
	}
	if !q.Since.IsZero() {
		where = append(where, "created_at >= "+arg(q.Since))
	}
	if !q.Until.IsZero() {
		where = append(where, "created_at <= "+arg(q.Until))
	}
	if q.BeforeID != 0 {
		where = append(where, "id < "+arg(q.BeforeID))
	}
	if q.MinDuration > 0 {
		where = append(where, "duration_seconds >= "+arg(q.MinDuration.Seconds()))
	}
	limit := arg(q.Limit)
	branch := func(status string) string {
		conds := where
		if status != "" {
			conds = append([]string{"status = " + status}, where...)
		}
		sel := `SELECT id, ` + runColumns + ` FROM runs`
		if len(conds) > 0 {
			sel += " WHERE " + strings.Join(conds, " AND ")
		}
		return sel + " ORDER BY id DESC LIMIT " + limit
	}
	// A status asked for twice is one branch: two would return its runs
	// twice.
	statuses := slices.Compact(slices.Sorted(slices.Values(q.Statuses)))
	if len(statuses) <= 1 {
		var status string
		if len(statuses) == 1 {
			status = arg(string(statuses[0]))
		}
		return `SELECT ` + runColumns + ` FROM (` + branch(status) + `) r ORDER BY id DESC`, args
	}
	parts := make([]string, len(statuses))
	for i, st := range statuses {
		parts[i] = "(" + branch(arg(string(st))) + ")"
	}
	return `SELECT ` + runColumns + ` FROM (` + strings.Join(parts, " UNION ALL ") + `) r ORDER BY id DESC LIMIT ` + limit, args
}

// summariesQuery reads, for each pipeline, its in-progress count (from the
// partial index of active runs) and its latest finished and successful
// runs (by the ids the pipelines table keeps), so that its cost follows
// the number of pipelines and active runs, not the history. A lookup of
// "the newest run of this pipeline with this status" would leave the plan
// to the planner's guess, and for a pipeline that rarely succeeds it walks
// the primary key past every run of the others.
//
// A last success that is also the last finished run, as a pipeline's last
// run usually is, is read and decoded once: that halves the JSON decoding
// of every scrape (postgres BenchmarkSummaries).
const summariesQuery = `SELECT p.name, a.n, f.data, f.change_seq,
		s.id = f.id, CASE WHEN s.id = f.id THEN NULL ELSE s.data END, s.change_seq
	FROM pipelines p
	CROSS JOIN LATERAL (SELECT count(*) AS n FROM runs
		WHERE pipeline = p.name AND status IN ` + activeStatuses + `) a
	LEFT JOIN runs f ON f.id = p.last_finished_id
	LEFT JOIN runs s ON s.id = p.last_success_id
	WHERE a.n > 0 OR f.id IS NOT NULL OR s.id IS NOT NULL
	ORDER BY p.name`

// Summaries returns the summary of every pipeline that has runs, by name.
func (s *Store) Summaries(ctx context.Context) ([]pipeline.PipelineSummary, error) {
	return s.summaries(ctx, s.pool)
}

// querier is what reads need of a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Store) summaries(ctx context.Context, q querier) ([]pipeline.PipelineSummary, error) {
	rows, err := q.Query(ctx, summariesQuery)
	if err != nil {
		return nil, s.errorf("store: %w", err)
	}
	defer rows.Close()
	var out []pipeline.PipelineSummary
	for rows.Next() {
		var (
			sum              pipeline.PipelineSummary
			fData, sData     []byte
			fChange, sChange *int64
			same             *bool
		)
		if err := rows.Scan(&sum.Pipeline, &sum.InProgress, &fData, &fChange, &same, &sData, &sChange); err != nil {
			return nil, s.errorf("store: %w", err)
		}
		if sum.LastFinished, err = decodeOptionalRun(fData, fChange); err != nil {
			return nil, err
		}
		if same != nil && *same {
			sum.LastSuccess = sum.LastFinished
		} else if sum.LastSuccess, err = decodeOptionalRun(sData, sChange); err != nil {
			return nil, err
		}
		out = append(out, sum)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf("store: %w", err)
	}
	return out, nil
}

// Restore returns the committed state the applier starts from, read from
// one snapshot.
func (s *Store) Restore(ctx context.Context) (*pipeline.Restored, error) {
	var r *pipeline.Restored
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		r, err = s.restore(ctx, tx)
		return err
	})
	if err != nil {
		return nil, s.errorf("%w", err)
	}
	return r, nil
}

// Discovered returns the pipelines discovered from patterns, oldest first.
func (s *Store) Discovered(ctx context.Context) ([]pipeline.Discovered, error) {
	var data []byte
	if err := s.pool.QueryRow(ctx, `SELECT discovered FROM state WHERE id = 1`).Scan(&data); err != nil {
		return nil, s.errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	var d []pipeline.Discovered
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("store: discovered pipelines: %w", err)
	}
	return d, nil
}

// LastChange returns the newest committed change sequence.
func (s *Store) LastChange(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.pool.QueryRow(ctx, `SELECT max_change_seq FROM state WHERE id = 1`).Scan(&seq); err != nil {
		return 0, s.errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	return seq, nil
}

func (s *Store) restore(ctx context.Context, q querier) (*pipeline.Restored, error) {
	var r pipeline.Restored
	var held, discovered []byte
	if err := q.QueryRow(ctx, `SELECT max_run_id, max_change_seq, held, discovered FROM state WHERE id = 1`).
		Scan(&r.MaxRunID, &r.MaxChangeSeq, &held, &discovered); err != nil {
		return nil, s.errorf("%w: %w", pipeline.ErrUnavailable, err)
	}
	if err := json.Unmarshal(held, &r.Held); err != nil {
		return nil, fmt.Errorf("store: held jobs: %w", err)
	}
	if err := json.Unmarshal(discovered, &r.Discovered); err != nil {
		return nil, fmt.Errorf("store: discovered pipelines: %w", err)
	}
	var err error
	if r.Active, err = s.query(ctx, q, activeRunsQuery); err != nil {
		return nil, err
	}
	sums, err := s.summaries(ctx, q)
	if err != nil {
		return nil, err
	}
	for _, sum := range sums {
		if sum.LastFinished != nil {
			r.LastFinished = append(r.LastFinished, sum.LastFinished)
		}
		if sum.LastSuccess != nil {
			r.LastSuccess = append(r.LastSuccess, sum.LastSuccess)
		}
	}
	return &r, nil
}

func (s *Store) queryRuns(ctx context.Context, query string, args ...any) ([]*pipeline.Run, error) {
	return s.query(ctx, s.pool, query, args...)
}

func (s *Store) query(ctx context.Context, q querier, query string, args ...any) ([]*pipeline.Run, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, s.errorf("store: %w", err)
	}
	defer rows.Close()
	var runs []*pipeline.Run
	for rows.Next() {
		var data []byte
		var change int64
		if err := rows.Scan(&data, &change); err != nil {
			return nil, s.errorf("store: %w", err)
		}
		r, err := decodeRun(data, change)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf("store: %w", err)
	}
	return runs, nil
}

// decodeRun decodes a run as the store wrote it, with json v2 for the
// reason the SQLite store's decodeRun gives (BenchmarkSummaries).
func decodeRun(data []byte, change int64) (*pipeline.Run, error) {
	r := new(pipeline.Run)
	if err := jsonv2.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("store: decoding run: %w", err)
	}
	r.ChangeSeq = change
	return r, nil
}

func decodeOptionalRun(data []byte, change *int64) (*pipeline.Run, error) {
	if data == nil || change == nil {
		return nil, nil
	}
	return decodeRun(data, *change)
}
