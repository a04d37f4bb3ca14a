package postgres

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// TestPlansUseIndexes loads 200,000 runs and 202,000 log entries and checks
// that no read the exporter makes often scans a whole table: their cost
// follows the pipelines, the active runs and the page, not the history.
// removedMany matches a plan node that read and dropped 10,000 rows or
// more, 5% of the history.
var removedMany = regexp.MustCompile(`Rows Removed by Filter: \d{5,}`)

func TestPlansUseIndexes(t *testing.T) {
	ctx := context.Background()
	s := open(t, pgtest.NewDatabase(t), Options{})
	for _, q := range []string{
		// 20 pipelines; 1 run in 1000 active; statuses cycle; one GitHub run each.
		`INSERT INTO runs SELECT i, 'p' || (i % 20), CASE WHEN i % 1000 = 0 THEN 'running'
			ELSE (ARRAY['success','failed','cancelled','timed_out','success'])[i % 5 + 1] END,
			(ARRAY['github','supabase','mailerlite'])[i % 3 + 1],
			timestamptz '2026-01-01' + i * interval '1 minute', NULL, timestamptz '2026-01-01' + i * interval '1 minute',
			60, i, 1, i, '{}' FROM generate_series(1, 200000) i`,
		`INSERT INTO log (source, delivery_id, kind, received_at, events, applied)
			SELECT 'github', 'd' || i, 'workflow_run', timestamptz '2026-01-01' + i * interval '1 minute', '[]', i < 199990
			FROM generate_series(1, 200000) i`,
		// Applied rechecks waiting for the pruner.
		`INSERT INTO log (source, kind, received_at, events, applied)
			SELECT '', 'recheck', now(), '[]', true FROM generate_series(1, 2000)`,
		// A rare pipeline whose runs are all old and never succeeded.
		`INSERT INTO runs SELECT 200000 + i, 'rare', 'failed', 'supabase', timestamptz '2025-01-01', NULL,
			timestamptz '2025-01-01', 60, NULL, NULL, 200000 + i, '{}' FROM generate_series(1, 10) i`,
		`UPDATE runs SET id = id - 200100 WHERE pipeline = 'rare'`,
		`INSERT INTO pipelines SELECT pipeline, max(id) FILTER (WHERE status NOT IN ('pending', 'running')),
			max(id) FILTER (WHERE status = 'success') FROM runs GROUP BY pipeline`,
		`ANALYZE runs`, `ANALYZE log`, `ANALYZE pipelines`,
	} {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	since := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	type query struct {
		name string
		sql  string
		args []any
	}
	queries := []query{
		{"summaries", summariesQuery, nil},
		{"active runs", activeRunsQuery, nil},
		{"changed after", changedAfterQuery, []any{199000, 100}},
		{"github run", findGitHubRunQuery, []any{5000, 1}},
		{"unapplied", unappliedQuery, []any{100}},
		{"known deliveries", knownDeliveriesQuery, []any{"github", []string{"a", "b"}}},
		{"lag", lagQuery, nil},
		{"prune rechecks", pruneRechecksQuery, []any{1000}},
	}
	for _, q := range []struct {
		name string
		q    pipeline.RunQuery
	}{
		{"list newest", pipeline.RunQuery{Limit: 100}},
		{"list pipeline", pipeline.RunQuery{Pipeline: "p3", Limit: 100}},
		{"list rare pipeline", pipeline.RunQuery{Pipeline: "rare", Limit: 100}},
		{"list rare pipeline status", pipeline.RunQuery{Pipeline: "rare", Statuses: []pipeline.Status{pipeline.StatusSuccess}, Limit: 100}},
		{"list rare pipeline trigger", pipeline.RunQuery{Pipeline: "rare", Trigger: pipeline.SourceSupabase, Limit: 100}},
		{"list rare statuses", pipeline.RunQuery{Statuses: []pipeline.Status{pipeline.StatusRunning, pipeline.StatusPending}, Limit: 100}},
		{"list pipeline statuses", pipeline.RunQuery{Pipeline: "p3", Statuses: []pipeline.Status{pipeline.StatusFailed, pipeline.StatusTimedOut}, Limit: 100}},
		{"list trigger cursor", pipeline.RunQuery{Trigger: pipeline.SourceMailerLite, BeforeID: 100000, Limit: 100}},
		{"list time range", pipeline.RunQuery{Since: since, Until: since.Add(time.Hour), Limit: 100}},
	} {
		sql, args := listQuery(q.q)
		queries = append(queries, query{q.name, sql, args})
	}
	// Last: they delete what they find.
	queries = append(queries,
		query{"prune runs by age", pruneRunsByAgeQuery, []any{since, pruneBatch}},
		query{"prune log by age", pruneLogByAgeQuery, []any{since, pruneBatch}},
		query{"prune runs by count", pruneRunsByCountQuery, []any{pruneBatch}},
	)
	for _, q := range queries {
		rows, err := s.pool.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) `+q.sql, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		rows.Close()
		text := strings.Join(plan, "\n")
		if strings.Contains(text, "Seq Scan on runs") || strings.Contains(text, "Seq Scan on log") || removedMany.MatchString(text) {
			t.Errorf("%s reads past much of the history:\n%s", q.name, text)
		}
		t.Logf("%s: %s", q.name, strings.TrimSpace(plan[len(plan)-1]))
	}
}
