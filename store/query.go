package store

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// HasDelivery reports whether the delivery is journaled, or queued by a
// Submit that has not answered yet.
func (s *Store) HasDelivery(source pipeline.Source, id string) (bool, error) {
	if s.isPending(source, id) {
		return true, nil
	}
	var one int
	err := s.hasDeliveryStmt.QueryRow(string(source), id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	return true, nil
}

// ActiveRuns returns the pending and running runs, oldest first, for the
// Tracker to resume after a restart.
func (s *Store) ActiveRuns() ([]*pipeline.Run, error) {
	return s.queryRuns(`SELECT data FROM runs WHERE status IN ` + activeStatuses + ` ORDER BY id`)
}

// pipelinesCTE lists the distinct pipeline names with one index seek each,
// where SELECT DISTINCT would read the whole (pipeline, id) index.
const pipelinesCTE = `WITH RECURSIVE p(name) AS (
	SELECT MIN(pipeline) FROM runs
	UNION ALL
	SELECT (SELECT MIN(pipeline) FROM runs WHERE pipeline > p.name) FROM p WHERE p.name IS NOT NULL
) `

// LastFinishedRuns returns, for every pipeline with one, its latest terminal
// run (highest id).
func (s *Store) LastFinishedRuns() ([]*pipeline.Run, error) {
	// Walking (pipeline, id) backwards skips only the pipeline's active runs.
	return s.queryRuns(pipelinesCTE + `SELECT r.data FROM p JOIN runs r ON r.id = (
		SELECT id FROM runs WHERE pipeline = p.name AND status NOT IN ` + activeStatuses + `
		ORDER BY id DESC LIMIT 1) ORDER BY r.pipeline`)
}

// LastSuccessRuns returns, for every pipeline with one, its latest
// successful run.
func (s *Store) LastSuccessRuns() ([]*pipeline.Run, error) {
	return s.queryRuns(pipelinesCTE+`SELECT r.data FROM p JOIN runs r ON r.id = (
		SELECT id FROM runs WHERE pipeline = p.name AND status = ?
		ORDER BY id DESC LIMIT 1) ORDER BY r.pipeline`, string(pipeline.StatusSuccess))
}

// MaxRunID returns the highest run id ever stored, 0 for an empty store. It
// does not go down when runs are pruned, so the Tracker never reuses an id.
func (s *Store) MaxRunID() (int64, error) {
	var id int64
	if err := s.rdb.QueryRow(`SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0)`).Scan(&id); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return id, nil
}

// Run returns the run with the given id, or pipeline.ErrNotFound.
func (s *Store) Run(id int64) (*pipeline.Run, error) {
	var data []byte
	err := s.rdb.QueryRow(`SELECT data FROM runs WHERE id = ?`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, pipeline.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return decodeRun(data)
}

// FindGitHubRun returns the run following the given GitHub workflow run
// attempt, or nil when there is none.
func (s *Store) FindGitHubRun(runID int64, attempt int) (*pipeline.Run, error) {
	var data []byte
	err := s.rdb.QueryRow(`SELECT data FROM runs WHERE github_run_id = ? AND github_run_attempt = ?
		ORDER BY id DESC LIMIT 1`, runID, attempt).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return decodeRun(data)
}

// ListRuns returns the runs matching q, newest (highest id) first, at most
// q.Limit of them. The API validates q; a Limit below 1 returns nothing.
func (s *Store) ListRuns(q pipeline.RunQuery) ([]*pipeline.Run, error) {
	if q.Limit < 1 {
		return nil, nil
	}
	query, args := listQuery(q)
	return s.queryRuns(query, args...)
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

	// With only a time range to go by, SQLite would walk the whole table
	// backwards by id, reading every run newer than the range. The
	// created_at index bounds the work to the range, read from the index
	// alone.
	from := "runs"
	if (!q.Since.IsZero() || !q.Until.IsZero()) && q.Pipeline == "" && q.Trigger == "" && len(q.Statuses) == 0 {
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
	switch len(q.Statuses) {
	case 0:
		ids = branch(nil)
		idArgs = append(append(idArgs, args...), q.Limit)
	case 1:
		ids = branch([]string{"status = ?"})
		idArgs = append(append(append(idArgs, string(q.Statuses[0])), args...), q.Limit)
	default:
		parts := make([]string, len(q.Statuses))
		for i, st := range q.Statuses {
			parts[i] = "SELECT * FROM (" + branch([]string{"status = ?"}) + ")"
			idArgs = append(append(append(idArgs, string(st)), args...), q.Limit)
		}
		ids = strings.Join(parts, " UNION ALL ") + " ORDER BY id DESC LIMIT ?"
		idArgs = append(idArgs, q.Limit)
	}
	return "SELECT data FROM runs WHERE id IN (" + ids + ") ORDER BY id DESC", idArgs
}

func (s *Store) queryRuns(query string, args ...any) ([]*pipeline.Run, error) {
	rows, err := s.rdb.Query(query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer rows.Close()
	var runs []*pipeline.Run
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		r, err := decodeRun(data)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return runs, nil
}

func decodeRun(data []byte) (*pipeline.Run, error) {
	r := new(pipeline.Run)
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("store: decoding run: %w", err)
	}
	return r, nil
}
