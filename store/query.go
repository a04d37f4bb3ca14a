package store

import (
	"context"
	"database/sql"
	"encoding/json"

	"fmt"
	jsonv2 "github.com/go-json-experiment/json"
	"slices"
	"strings"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// pipelinesCTE lists the distinct pipeline names with one index seek each,
// where SELECT DISTINCT would read the whole (pipeline, id) index.
const pipelinesCTE = `WITH RECURSIVE p(name) AS (
	SELECT MIN(pipeline) FROM runs
	UNION ALL
	SELECT (SELECT MIN(pipeline) FROM runs WHERE pipeline > p.name) FROM p WHERE p.name IS NOT NULL
) `

// lastRuns returns, for every pipeline with one, its latest run (highest
// id) that satisfies cond. Walking (pipeline, id) backwards skips only the
// runs that do not.
func lastRuns(ctx context.Context, q querier, cond string) ([]*pipeline.Run, error) {
	return queryRuns(ctx, q, lastRunsQuery("r.data, r.change_seq", cond))
}

// lastRunsQuery selects cols of the runs lastRuns returns.
func lastRunsQuery(cols, cond string) string {
	return pipelinesCTE + `SELECT ` + cols + ` FROM p JOIN runs r ON r.id = (
		SELECT id FROM runs WHERE pipeline = p.name AND ` + cond + `
		ORDER BY id DESC LIMIT 1) ORDER BY r.pipeline`
}

// lastSuccessQuery is lastRunsQuery of the successful runs, with each
// run's pipeline and id ahead of its data.
var lastSuccessQuery = lastRunsQuery("r.pipeline, r.id, r.data, r.change_seq", `status = '`+string(pipeline.StatusSuccess)+`'`)

// The fixed queries, named so that TestQueryPlans explains the ones the
// code runs (all but pruneRunsByCountQuery, which walks runs by id from the
// oldest and stops at its limit).
const (
	changedAfterQuery  = `SELECT data, change_seq FROM runs WHERE change_seq > ? ORDER BY change_seq LIMIT ?`
	activeRunsQuery    = `SELECT data, change_seq FROM runs WHERE status IN ` + activeStatuses + ` ORDER BY id`
	findGitHubRunQuery = `SELECT data, change_seq FROM runs WHERE github_run_id = ? AND github_run_attempt = ?
		ORDER BY id DESC LIMIT 1`
	unappliedQuery = `SELECT seq, source, delivery_id, kind, received_at, body, body_codec, events
		FROM log WHERE applied = 0 ORDER BY seq LIMIT ?`
	// knownDeliveriesQuery takes the ids as one JSON array, so that its
	// text is the same for any number of them.
	knownDeliveriesQuery = `SELECT delivery_id FROM log
		WHERE source = ? AND delivery_id IN (SELECT value FROM json_each(?))`
	pruneRunsByCountQuery = `DELETE FROM runs WHERE id IN (SELECT id FROM runs
		WHERE status NOT IN ` + activeStatuses + ` ORDER BY id LIMIT ?)`
	pruneRunsByAgeQuery = `DELETE FROM runs WHERE id IN (SELECT id FROM runs
		WHERE seen_at < ? AND status NOT IN ` + activeStatuses + ` LIMIT ?)`
	pruneLogByAgeQuery = `DELETE FROM log WHERE seq IN (SELECT seq FROM log
		WHERE received_at < ? AND applied = 1 LIMIT ?)`
	// pruneRechecksQuery repeats the predicate of the log_applied_rechecks
	// index word for word, so that SQLite reads that index.
	pruneRechecksQuery = `DELETE FROM log WHERE seq IN (SELECT seq FROM log
		WHERE kind = '` + pipeline.KindRecheck + `' AND applied = 1 LIMIT ?)`
)

// KnownDeliveries returns which of ids the log holds for source: one index
// seek each, applied or not, pruned ones excepted.
func (s *Store) KnownDeliveries(ctx context.Context, source pipeline.Source, ids []string) (map[string]bool, error) {
	known := make(map[string]bool)
	if len(ids) == 0 {
		return known, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	rows, err := s.rdb.QueryContext(ctx, knownDeliveriesQuery, string(source), string(list))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		known[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return known, nil
}

// Run returns the run with the given id, or pipeline.ErrNotFound.
func (s *Store) Run(ctx context.Context, id int64) (*pipeline.Run, error) {
	runs, err := queryRuns(ctx, s.rdb, `SELECT data, change_seq FROM runs WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, pipeline.ErrNotFound
	}
	return runs[0], nil
}

// ChangedAfter returns, in change order, at most limit runs whose latest
// change is after seq.
func (s *Store) ChangedAfter(ctx context.Context, seq int64, limit int) ([]*pipeline.Run, error) {
	return queryRuns(ctx, s.rdb, changedAfterQuery, seq, limit)
}

// LastChange returns the newest committed change sequence.
func (s *Store) LastChange(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.rdb.QueryRowContext(ctx, `SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM state WHERE key = ?), 0)`,
		stateChangeSeq).Scan(&seq); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return seq, nil
}

// Summaries returns, for every pipeline with runs, its runs in progress and
// its last finished and last successful run: a few index seeks per
// pipeline, whatever the size of the history. Its reads share one
// snapshot, so a run that finishes meanwhile is either in progress or
// finished, not neither.
func (s *Store) Summaries(ctx context.Context) ([]pipeline.PipelineSummary, error) {
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback()
	byName := make(map[string]*pipeline.PipelineSummary)
	var order []string
	get := func(name string) *pipeline.PipelineSummary {
		ps := byName[name]
		if ps == nil {
			ps = &pipeline.PipelineSummary{Pipeline: name}
			byName[name] = ps
			order = append(order, name)
		}
		return ps
	}
	finished, err := lastRuns(ctx, tx, `status NOT IN `+activeStatuses)
	if err != nil {
		return nil, err
	}
	for _, r := range finished {
		get(r.Pipeline).LastFinished = r
	}
	if err := lastSuccesses(ctx, tx, get); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT pipeline, COUNT(*) FROM runs WHERE status IN `+activeStatuses+` GROUP BY pipeline`)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		get(name).InProgress = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	slices.Sort(order)
	out := make([]pipeline.PipelineSummary, len(order))
	for i, name := range order {
		out[i] = *byName[name]
	}
	return out, nil
}

// lastSuccesses sets each pipeline's last successful run. One that is
// also its last finished run, as a pipeline's last run usually is, is not
// decoded again: that halves the JSON decoding of every scrape
// (store's BenchmarkSummaries).
func lastSuccesses(ctx context.Context, tx *sql.Tx, get func(string) *pipeline.PipelineSummary) error {
	rows, err := tx.QueryContext(ctx, lastSuccessQuery)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name string
			id   int64
			data sql.RawBytes
			seq  int64
		)
		if err := rows.Scan(&name, &id, &data, &seq); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		ps := get(name)
		if f := ps.LastFinished; f != nil && f.ID == id {
			ps.LastSuccess = f
			continue
		}
		r, err := decodeRun(data)
		if err != nil {
			return err
		}
		r.ChangeSeq = seq
		ps.LastSuccess = r
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// ListRuns returns the runs matching q, newest (highest id) first, at most
// q.Limit of them. The API validates q; a Limit below 1 returns nothing.
func (s *Store) ListRuns(ctx context.Context, q pipeline.RunQuery) ([]*pipeline.Run, error) {
	if q.Limit < 1 {
		return nil, nil
	}
	query, args := listQuery(q)
	return queryRuns(ctx, s.rdb, query, args...)
}

// listQuery builds ListRuns' SQL. Ids are chosen first from the indexes and
// only the winners' JSON is read. Several statuses become one indexed branch
// each, merged by id: a single "status IN (...)" would make SQLite read
// every matching row and sort them to find the newest few.
func listQuery(q pipeline.RunQuery) (string, []any) {
	var where []string
	var args []any
	if q.Pipeline != "" {
		where = append(where, "pipeline = ?")
		args = append(args, q.Pipeline)
	}
	if q.Trigger != "" {
		where = append(where, "trigger_source = ?")
		args = append(args, string(q.Trigger))
	}
	if !q.Since.IsZero() {
		where = append(where, "created_at >= ?")
		args = append(args, q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		where = append(where, "created_at <= ?")
		args = append(args, q.Until.UnixNano())
	}
	if q.BeforeID != 0 {
		where = append(where, "id < ?")
		args = append(args, q.BeforeID)
	}
	// Slow runs are few: the newest-first walk of the other filters' index
	// stops at the limit soon enough without an index of its own.
	if q.MinDuration > 0 {
		where = append(where, "duration >= ?")
		args = append(args, q.MinDuration.Seconds())
	}

	// A status asked for twice is one branch: two would return its runs
	// twice, and the merge's limit would cut the page short.
	statuses := slices.Compact(slices.Sorted(slices.Values(q.Statuses)))

	// With only a time range to go by, SQLite would walk the whole table
	// backwards by id, reading every run newer than the range. The
	// created_at index bounds the work to the range, read from the index
	// alone.
	from := "runs"
	if (!q.Since.IsZero() || !q.Until.IsZero()) && q.Pipeline == "" && q.Trigger == "" && len(statuses) == 0 {
		from = "runs INDEXED BY runs_created_at"
	}
	branch := func(extra []string) string {
		conds := append(extra, where...)
		sel := "SELECT id FROM " + from
		if len(conds) > 0 {
			sel += " WHERE " + strings.Join(conds, " AND ")
		}
		return sel + " ORDER BY id DESC LIMIT ?"
	}
	var ids string
	var idArgs []any
	switch len(statuses) {
	case 0:
		ids = branch(nil)
		idArgs = append(append(idArgs, args...), q.Limit)
	case 1:
		ids = branch([]string{"status = ?"})
		idArgs = append(append(append(idArgs, string(statuses[0])), args...), q.Limit)
	default:
		parts := make([]string, len(statuses))
		for i, st := range statuses {
			parts[i] = "SELECT * FROM (" + branch([]string{"status = ?"}) + ")"
			idArgs = append(append(append(idArgs, string(st)), args...), q.Limit)
		}
		ids = strings.Join(parts, " UNION ALL ") + " ORDER BY id DESC LIMIT ?"
		idArgs = append(idArgs, q.Limit)
	}
	return "SELECT data, change_seq FROM runs WHERE id IN (" + ids + ") ORDER BY id DESC", idArgs
}

// queryRuns reads runs from rows of (data, change_seq).
// querier is a read connection pool or a transaction on one.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryRuns(ctx context.Context, q querier, query string, args ...any) ([]*pipeline.Run, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	return scanRuns(rows, err)
}

// scanRuns reads the runs of a query that selects data and change_seq.
func scanRuns(rows *sql.Rows, err error) ([]*pipeline.Run, error) {
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer rows.Close()
	var runs []*pipeline.Run
	for rows.Next() {
		// RawBytes: decodeRun copies what it keeps, so the driver's
		// buffer is not copied first (BenchmarkSummaries).
		var data sql.RawBytes
		var seq int64
		if err := rows.Scan(&data, &seq); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		r, err := decodeRun(data)
		if err != nil {
			return nil, err
		}
		r.ChangeSeq = seq
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return runs, nil
}

// decodeRun decodes a run as the store wrote it. It uses json v2, which
// the store's reads at every scrape pay for: BenchmarkSummaries at 1,000
// pipelines takes 62 ms instead of 88 ms with encoding/json. What the
// store decodes it encoded itself with encoding/json, so v2's stricter
// defaults (exact member names, valid UTF-8, no duplicate names) hold.
func decodeRun(data []byte) (*pipeline.Run, error) {
	r := new(pipeline.Run)
	if err := jsonv2.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("store: decoding run: %w", err)
	}
	return r, nil
}
