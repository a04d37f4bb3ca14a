package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

var ctx = context.Background()

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func openTest(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testRun(id int64, pipe string, st pipeline.Status, src pipeline.Source, created time.Time) *pipeline.Run {
	r := &pipeline.Run{
		ID:        id,
		Pipeline:  pipe,
		Status:    st,
		Trigger:   pipeline.Trigger{Source: src, Event: "test", ReceivedAt: created},
		CreatedAt: created,
		SeenAt:    created,
		Stages:    []pipeline.Stage{{Name: pipeline.StageTrigger, Status: pipeline.StatusSuccess}},
	}
	r.Triggers = []pipeline.Trigger{r.Trigger}
	if st.Terminal() {
		f := created.Add(time.Minute)
		r.FinishedAt = &f
		r.DurationSeconds = 60
	}
	return r
}

// submit commits, as the Applier does, the delivery (nil for none) as an
// applied log entry together with the runs.
func submit(t *testing.T, s *Store, d *pipeline.Entry, runs ...*pipeline.Run) {
	t.Helper()
	var entries []*pipeline.Entry
	if d != nil {
		entries = append(entries, d)
	}
	if err := commit(s, entries, runs...); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func commit(s *Store, entries []*pipeline.Entry, runs ...*pipeline.Run) error {
	tx, err := s.Begin(context.Background())
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.Append(entries); err != nil {
		return err
	}
	var applied []pipeline.AppliedEntry
	for _, e := range entries {
		if e.Seq != 0 {
			applied = append(applied, pipeline.AppliedEntry{Seq: e.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}})
		}
	}
	if err := tx.SaveRuns(runs); err != nil {
		return err
	}
	if err := tx.MarkApplied(applied); err != nil {
		return err
	}
	return tx.Commit()
}

// bulkLoad commits runs in large transactions, to seed big histories.
func bulkLoad(t testing.TB, s *Store, runs []*pipeline.Run) {
	t.Helper()
	for len(runs) > 0 {
		chunk := runs[:min(len(runs), 10000)]
		runs = runs[len(chunk):]
		if err := commit(s, nil, chunk...); err != nil {
			t.Fatal(err)
		}
	}
}

// hasEntry reports whether the log holds the delivery.
func hasEntry(t *testing.T, s *Store, source pipeline.Source, id string) bool {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow(`SELECT COUNT(*) FROM log WHERE source = ? AND delivery_id = ?`, string(source), id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func runIDs(runs []*pipeline.Run) []int64 {
	ids := []int64{}
	for _, r := range runs {
		ids = append(ids, r.ID)
	}
	return ids
}

// fixtureRun builds a finished run from the published workflow_run webhook,
// and returns the delivery that carried it.
func fixtureRun(t *testing.T) (*pipeline.Run, *pipeline.Entry) {
	t.Helper()
	body := fixtures.MustLoad("github/workflow_run/completed.json")
	p := fixtures.MustDecode(body)
	created, updated := p.Time("workflow_run.created_at"), p.Time("workflow_run.updated_at")
	htmlURL := p.String("workflow_run.html_url")
	r := testRun(7, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, created)
	r.Trigger.Event = p.String("workflow_run.event")
	r.Trigger.SHA = p.String("workflow_run.head_sha")
	r.Trigger.DeliveryID = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	r.Triggers = []pipeline.Trigger{r.Trigger}
	r.StartedAt = &created
	r.FinishedAt = &updated
	r.DurationSeconds = updated.Sub(created).Seconds()
	r.GitHub = &pipeline.GitHubRun{
		Repository: p.String("repository.full_name"), RunID: p.Int("workflow_run.id"),
		RunAttempt: int(p.Int("workflow_run.run_attempt")), WorkflowID: p.Int("workflow_run.workflow_id"),
		Workflow: filepath.Base(p.String("workflow_run.path")), HTMLURL: htmlURL,
		HeadSHA: r.Trigger.SHA, HeadBranch: p.String("workflow_run.head_branch"), Event: r.Trigger.Event,
		Status: p.String("workflow_run.status"), Conclusion: p.String("workflow_run.conclusion"),
		CreatedAt: created, UpdatedAt: updated,
	}
	r.Stages = append(r.Stages, pipeline.Stage{Name: "build", Status: pipeline.StatusSuccess, StartedAt: &created,
		FinishedAt: &updated, DurationSeconds: r.DurationSeconds, URL: htmlURL, JobID: 399444496, QueuedSeconds: 2})
	r.Pages = &pipeline.PagesDeployment{Project: "site", DeploymentID: "d1", Stages: []pipeline.PagesStage{{Name: "queued", Status: "success"}}}
	d := &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: r.Trigger.DeliveryID, Kind: "workflow_run", ReceivedAt: updated, Body: body}
	return r, d
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	run, d := fixtureRun(t)
	submit(t, s, d, run)
	submit(t, s, nil, testRun(8, "site", pipeline.StatusRunning, pipeline.SourceSupabase, t0))

	check := func(s *Store) {
		t.Helper()
		got, err := s.Run(ctx, run.ID)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if !reflect.DeepEqual(got, run) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(run)
			t.Fatalf("Run(%d) =\n%s\nwant\n%s", run.ID, g, w)
		}
		event, received, body := readDelivery(t, s, d.Source, d.DeliveryID)
		if event != d.Kind || received != d.ReceivedAt.UnixNano() || !bytes.Equal(body, d.Body) {
			t.Errorf("delivery = %q %d %d bytes, want %q %d %d bytes", event, received, len(body), d.Kind, d.ReceivedAt.UnixNano(), len(d.Body))
		}
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Runs != 2 || st.Deliveries != 1 || st.SizeBytes <= 0 {
			t.Errorf("Stats = %+v, want 2 runs, 1 delivery, a size", st)
		}
		if _, err := s.Run(ctx, 99); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("Run(99) error = %v, want ErrNotFound", err)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check(openTest(t, dir, Options{}))
}

// readDelivery reads a journaled delivery back as it was received.
func readDelivery(t *testing.T, s *Store, source pipeline.Source, id string) (event string, received int64, body []byte) {
	t.Helper()
	var stored []byte
	var codec string
	if err := s.rdb.QueryRow(`SELECT kind, received_at, body, body_codec FROM log WHERE source = ? AND delivery_id = ?`,
		string(source), id).Scan(&event, &received, &stored, &codec); err != nil {
		t.Fatalf("reading delivery: %v", err)
	}
	body, err := decodeBody(stored, codec)
	if err != nil {
		t.Fatalf("reading delivery: %v", err)
	}
	return event, received, body
}

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestBodyRoundTrip(t *testing.T) {
	fixture := fixtures.MustLoad("github/workflow_run/completed.json")
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"empty", []byte{}},
		{"tiny", []byte("{}")},
		{"random", randomBytes(64 << 10)},
		{"webhook payload", fixture},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, t.TempDir(), Options{})
			submit(t, s, &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: tc.name, Kind: "workflow_run", ReceivedAt: t0, Body: tc.body})
			if _, _, got := readDelivery(t, s, pipeline.SourceGitHub, tc.name); !bytes.Equal(got, tc.body) {
				t.Errorf("read back %d bytes that differ from the %d received", len(got), len(tc.body))
			}
		})
	}
}

// seedRuns builds a spread of runs over pipelines, statuses, sources and
// times; ids follow creation time, as the Tracker assigns them.
func seedRuns(n int) []*pipeline.Run {
	pipes := []string{"site", "docs", "shop"}
	sources := pipeline.Sources
	runs := make([]*pipeline.Run, n)
	for i := range n {
		// Every combination of status, pipeline and source recurs every 72 runs.
		runs[i] = testRun(int64(i+1), pipes[(i/6)%len(pipes)], pipeline.RunStatuses[i%len(pipeline.RunStatuses)],
			sources[(i/18)%len(sources)], t0.Add(time.Duration(i)*time.Hour))
		if i%7 == 0 && runs[i].Status.Terminal() {
			runs[i].DurationSeconds = 600
		}
	}
	return runs
}

// reference is the specification of ListRuns, over runs sorted by id.
func reference(runs []*pipeline.Run, q pipeline.RunQuery) []int64 {
	ids := []int64{}
	for i := len(runs) - 1; i >= 0; i-- {
		r := runs[i]
		switch {
		case len(q.Statuses) > 0 && !slices.Contains(q.Statuses, r.Status),
			q.Pipeline != "" && r.Pipeline != q.Pipeline,
			q.Trigger != "" && r.Trigger.Source != q.Trigger,
			!q.Since.IsZero() && r.CreatedAt.Before(q.Since),
			!q.Until.IsZero() && r.CreatedAt.After(q.Until),
			q.BeforeID != 0 && r.ID >= q.BeforeID,
			q.MinDuration > 0 && r.DurationSeconds < q.MinDuration.Seconds():
			continue
		}
		ids = append(ids, r.ID)
	}
	return ids
}

func TestListRuns(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	runs := seedRuns(240)
	bulkLoad(t, s, runs)
	var queries []pipeline.RunQuery
	for _, statuses := range [][]pipeline.Status{nil, {pipeline.StatusFailed}, {pipeline.StatusFailed, pipeline.StatusTimedOut, pipeline.StatusPending}} {
		for _, pipe := range []string{"", "docs"} {
			for _, trig := range []pipeline.Source{"", pipeline.SourceSupabase} {
				for _, since := range []time.Time{{}, t0.Add(50 * time.Hour)} {
					for _, until := range []time.Time{{}, t0.Add(200 * time.Hour)} {
						queries = append(queries, pipeline.RunQuery{Statuses: statuses, Pipeline: pipe, Trigger: trig, Since: since, Until: until})
					}
				}
			}
		}
	}
	// Slow runs: every seventh run of the seed lasts ten minutes.
	for _, pipe := range []string{"", "docs"} {
		for _, statuses := range [][]pipeline.Status{nil, {pipeline.StatusSuccess}} {
			queries = append(queries, pipeline.RunQuery{Statuses: statuses, Pipeline: pipe, MinDuration: 5 * time.Minute})
		}
	}
	for _, q := range queries {
		name := fmt.Sprintf("status=%v,pipeline=%s,trigger=%s,since=%v,until=%v,min_duration=%v", q.Statuses, q.Pipeline, q.Trigger, !q.Since.IsZero(), !q.Until.IsZero(), q.MinDuration)
		t.Run(name, func(t *testing.T) {
			want := reference(runs, q)
			if len(want) == 0 {
				t.Fatalf("seed has no run matching %s: the case tests nothing", name)
			}
			// Page through with a limit smaller than the result, as the API's
			// cursor does, and expect exactly the reference order.
			var got []int64
			q.Limit = 7
			for page := 0; ; page++ {
				res, err := s.ListRuns(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(res) > q.Limit {
					t.Fatalf("page %d has %d runs, limit %d", page, len(res), q.Limit)
				}
				got = append(got, runIDs(res)...)
				if len(res) < q.Limit {
					break
				}
				q.BeforeID = res[len(res)-1].ID
			}
			if !slices.Equal(got, want) {
				t.Errorf("ids = %v\nwant %v", got, want)
			}
		})
	}
	if res, err := s.ListRuns(ctx, pipeline.RunQuery{Limit: 0}); err != nil || len(res) != 0 {
		t.Errorf("Limit 0 = %v, %v; want nothing", runIDs(res), err)
	}
}

func explain(t *testing.T, s *Store, query string, args ...any) string {
	t.Helper()
	rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatalf("explain %s: %v", query, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "\n")
}

// TestQueryPlans keeps every filter on an index: a million runs must never
// be scanned or sorted to answer a page.
func TestQueryPlans(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	bulkLoad(t, s, seedRuns(50))
	failed := []pipeline.Status{pipeline.StatusFailed}
	for _, tc := range []struct {
		name string
		q    pipeline.RunQuery
		want []string
	}{
		{"pipeline", pipeline.RunQuery{Pipeline: "site"}, []string{"USING COVERING INDEX runs_pipeline "}},
		{"status", pipeline.RunQuery{Statuses: failed}, []string{"USING COVERING INDEX runs_status "}},
		{"statuses", pipeline.RunQuery{Statuses: []pipeline.Status{pipeline.StatusFailed, pipeline.StatusTimedOut}}, []string{"USING COVERING INDEX runs_status "}},
		{"trigger", pipeline.RunQuery{Trigger: pipeline.SourceSupabase}, []string{"USING COVERING INDEX runs_trigger "}},
		{"since", pipeline.RunQuery{Since: t0}, []string{"runs_created_at"}},
		{"until", pipeline.RunQuery{Until: t0}, []string{"runs_created_at"}},
		{"cursor", pipeline.RunQuery{BeforeID: 10}, []string{"INTEGER PRIMARY KEY (rowid<?)"}},
		{"pipeline and status", pipeline.RunQuery{Pipeline: "site", Statuses: failed}, []string{"USING COVERING INDEX runs_pipeline_status "}},
		{"pipeline and cursor", pipeline.RunQuery{Pipeline: "site", BeforeID: 10}, []string{"runs_pipeline (pipeline=? AND id<?)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.Limit = 10
			query, args := listQuery(tc.q)
			plan := explain(t, s, query, args...)
			for _, w := range tc.want {
				if !strings.Contains(plan, w) {
					t.Errorf("plan lacks %q:\n%s", w, plan)
				}
			}
			for _, line := range strings.Split(plan, "\n") {
				if strings.HasPrefix(line, "SCAN runs") {
					t.Errorf("plan scans the table:\n%s", plan)
				}
			}
		})
	}
	for _, tc := range []struct {
		name, query string
		args        []any
		want        string
	}{
		{"find GitHub run", findGitHubRunQuery, []any{1, 1}, "runs_github"},
		{"active runs", activeRunsQuery, nil, "runs_status"},
		{"last finished runs", lastRunsQuery("r.data, r.change_seq", `status NOT IN `+activeStatuses), nil, "runs_pipeline"},
		{"last successful runs", lastSuccessQuery, nil, "runs_pipeline_status"},
		{"prune runs by age", pruneRunsByAgeQuery, []any{1, 1}, "runs_seen_at"},
		{"prune log by age", pruneLogByAgeQuery, []any{1, 1}, "log_received_at"},
		{"prune rechecks", pruneRechecksQuery, []any{1}, "log_applied_rechecks"},
		{"unapplied", unappliedQuery, []any{1}, "log_unapplied"},
		{"known deliveries", knownDeliveriesQuery, []any{"github", `["a","b"]`}, "USING COVERING INDEX log_delivery (source=? AND delivery_id=?)"},
		{"changed after", changedAfterQuery, []any{1, 1}, "runs_change_seq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if plan := explain(t, s, tc.query, tc.args...); !strings.Contains(plan, tc.want) {
				t.Errorf("plan lacks %q:\n%s", tc.want, plan)
			}
		})
	}
}

func TestHistory(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	submit(t, s, nil,
		testRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0),
		testRun(2, "site", pipeline.StatusFailed, pipeline.SourceGitHub, t0),
		testRun(3, "docs", pipeline.StatusSuccess, pipeline.SourceGitHub, t0),
		testRun(4, "site", pipeline.StatusRunning, pipeline.SourceGitHub, t0),
		testRun(5, "docs", pipeline.StatusTimedOut, pipeline.SourceSupabase, t0),
		testRun(6, "docs", pipeline.StatusPending, pipeline.SourceSupabase, t0),
		testRun(7, "shop", pipeline.StatusPending, pipeline.SourceMailerLite, t0),
	)
	r, err := s.Restore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		got  []*pipeline.Run
		want []int64
	}{
		{"Active", r.Active, []int64{4, 6, 7}},
		{"LastFinished", r.LastFinished, []int64{5, 2}}, // docs, site; shop has none
	} {
		if !slices.Equal(runIDs(tc.got), tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, runIDs(tc.got), tc.want)
		}
	}
	sums, err := s.Summaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ps := range sums {
		var last, success int64
		if ps.LastFinished != nil {
			last = ps.LastFinished.ID
		}
		if ps.LastSuccess != nil {
			success = ps.LastSuccess.ID
		}
		got[ps.Pipeline] = fmt.Sprintf("in progress %d, last %d, last success %d", ps.InProgress, last, success)
	}
	want := map[string]string{
		"docs": "in progress 1, last 5, last success 3",
		"shop": "in progress 1, last 0, last success 0",
		"site": "in progress 1, last 2, last success 1",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Summaries = %v, want %v", got, want)
	}
}

func TestRetentionByCount(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{MaxRecords: 100})
	runs := seedRuns(2500) // more than one prune batch
	// The two oldest runs are live; count pruning must keep them.
	for i, r := range runs {
		switch {
		case i < 2:
			r.Status = pipeline.StatusRunning
		case !r.Status.Terminal():
			r.Status = pipeline.StatusFailed
		}
	}
	bulkLoad(t, s, runs)
	if err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, r := range runs {
		if !r.Status.Terminal() || r.ID > 2500-98 {
			want = append(want, r.ID)
		}
	}
	got, err := s.ListRuns(ctx, pipeline.RunQuery{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	ids := runIDs(got)
	slices.Reverse(ids)
	if !slices.Equal(ids, want) {
		t.Errorf("kept %v\nwant %v", ids, want)
	}
	if st, _ := s.Stats(); st.Runs != 100 {
		t.Errorf("Stats().Runs = %d, want 100", st.Runs)
	}
	if r, err := s.Restore(ctx); err != nil || r.MaxRunID != 2500 {
		t.Errorf("Restore().MaxRunID = %+v, %v; want 2500", r, err)
	}
}

func TestRetentionByAge(t *testing.T) {
	clock := &fakeClock{now: t0}
	s := openTest(t, t.TempDir(), Options{Retention: 90 * 24 * time.Hour, Now: clock.Now})
	day := 24 * time.Hour
	ages := []time.Duration{100 * day, 91 * day, 89 * day, 1 * day}
	for i, age := range ages {
		// The oldest is still running: only finished runs are pruned
		// (a run in progress ends by its timeout first).
		st := pipeline.StatusSuccess
		if i == 0 {
			st = pipeline.StatusRunning
		}
		submit(t, s, &pipeline.Entry{Source: pipeline.SourceSupabase, DeliveryID: fmt.Sprint(i), Kind: "INSERT", ReceivedAt: t0.Add(-age), Body: []byte("{}")},
			testRun(int64(i+1), "site", st, pipeline.SourceSupabase, t0.Add(-age)))
	}
	// A payload dated six years back, first seen by the exporter now:
	// retention counts from the exporter's sight of it, not the sender's
	// clock.
	old := testRun(5, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	old.SeenAt = t0
	submit(t, s, nil, old)
	for _, tc := range []struct {
		now        time.Time
		wantRuns   []int64
		wantDelivs []string
	}{
		{t0, []int64{5, 4, 3, 1}, []string{"2", "3"}},
		{t0.Add(2 * day), []int64{5, 4, 1}, []string{"3"}},
		{t0.Add(100 * day), []int64{1}, nil},
	} {
		clock.Set(tc.now)
		if err := s.Prune(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := s.ListRuns(ctx, pipeline.RunQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(runIDs(got), append([]int64{}, tc.wantRuns...)) {
			t.Errorf("at %v: runs %v, want %v", tc.now, runIDs(got), tc.wantRuns)
		}
		var delivs []string
		for i := range ages {
			if hasEntry(t, s, pipeline.SourceSupabase, fmt.Sprint(i)) {
				delivs = append(delivs, fmt.Sprint(i))
			}
		}
		if !slices.Equal(delivs, tc.wantDelivs) {
			t.Errorf("at %v: deliveries %v, want %v", tc.now, delivs, tc.wantDelivs)
		}
		if st, _ := s.Stats(); st.Runs != int64(len(tc.wantRuns)) || st.Deliveries != int64(len(tc.wantDelivs)) {
			t.Errorf("at %v: Stats = %+v", tc.now, st)
		}
	}
	if r, err := s.Restore(ctx); err != nil || r.MaxRunID != 5 {
		t.Errorf("Restore().MaxRunID after pruning = %+v, %v; want 5", r, err)
	}
}

func TestMaxRunID(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	if r, err := s.Restore(ctx); err != nil || r.MaxRunID != 0 {
		t.Errorf("empty Restore().MaxRunID = %+v, %v", r, err)
	}
	submit(t, s, nil, testRun(41, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0), testRun(40, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0))
	if _, err := s.wdb.Exec(`DELETE FROM runs`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, Options{})
	if r, err := s.Restore(ctx); err != nil || r.MaxRunID != 41 {
		t.Errorf("Restore().MaxRunID after deleting every run and reopening = %+v, %v; want 41", r, err)
	}
	if st, _ := s.Stats(); st.Runs != 0 {
		t.Errorf("Stats().Runs after deleting every run = %d, want 0", st.Runs)
	}
}

func userVersion(t *testing.T, s *Store) int {
	t.Helper()
	var v int
	if err := s.rdb.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrations(t *testing.T) {
	// A later schema change, as a future release would append it.
	addColumn := append(slices.Clone(migrations), `ALTER TABLE runs ADD COLUMN note TEXT`)

	t.Run("fresh", func(t *testing.T) {
		s := openTest(t, t.TempDir(), Options{})
		if v := userVersion(t, s); v != len(migrations) {
			t.Errorf("user_version = %d, want %d", v, len(migrations))
		}
	})
	t.Run("v1 file upgraded", func(t *testing.T) {
		dir := t.TempDir()
		s := openTest(t, dir, Options{})
		submit(t, s, nil, testRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0))
		s.Close()
		s, err := open(dir, Options{}, addColumn, fullCheckBytes)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if v := userVersion(t, s); v != len(addColumn) {
			t.Errorf("user_version = %d, want %d", v, len(addColumn))
		}
		if _, err := s.rdb.Exec(`SELECT note FROM runs`); err != nil {
			t.Errorf("migration %d not applied: %v", len(addColumn), err)
		}
		if _, err := s.Run(ctx, 1); err != nil {
			t.Errorf("run lost in migration: %v", err)
		}
	})
	t.Run("v1 history kept", func(t *testing.T) {
		// A file written by the first release: bodies as received, no counts.
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		if err := migrate(db, path, migrations[:1]); err != nil {
			t.Fatal(err)
		}
		body := []byte(`{"action":"completed"}`)
		for _, q := range []string{
			`INSERT INTO deliveries VALUES ('github', 'old', 'workflow_run', 1, CAST('` + string(body) + `' AS BLOB))`,
			`INSERT INTO runs (id, pipeline, status, trigger_source, created_at, data) VALUES (1, 'site', 'success', 'github', 1, '{"id":1}'), (2, 'site', 'failed', 'github', 1, '{"id":2}')`,
		} {
			if _, err := db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()

		s := openTest(t, dir, Options{})
		if st, _ := s.Stats(); st.Runs != 2 || st.Deliveries != 1 {
			t.Errorf("Stats after upgrade = %+v, want 2 runs and 1 delivery", st)
		}
		if _, _, got := readDelivery(t, s, pipeline.SourceGitHub, "old"); !bytes.Equal(got, body) {
			t.Errorf("old delivery body = %q, want %q", got, body)
		}
		// The counts go on from there: one replaced run, one new run, one
		// new delivery.
		submit(t, s, &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: "new", Kind: "workflow_run", ReceivedAt: t0, Body: body},
			testRun(2, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0), testRun(3, "site", pipeline.StatusRunning, pipeline.SourceGitHub, t0))
		if st, _ := s.Stats(); st.Runs != 3 || st.Deliveries != 2 {
			t.Errorf("Stats after a write = %+v, want 3 runs and 2 deliveries", st)
		}
	})
	t.Run("v3 bodies kept as received", func(t *testing.T) {
		// A log written before bodies were compressed: one entry applied,
		// one appended and not applied yet, both raw.
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		if err := migrate(db, path, migrations[:3]); err != nil {
			t.Fatal(err)
		}
		body := fixtures.MustLoad("github/workflow_run/completed.json")
		for _, q := range []string{
			`INSERT INTO log (source, delivery_id, kind, received_at, body, events, applied) VALUES ('github', 'old', 'workflow_run', 1, ?, '[]', 1)`,
			`INSERT INTO log (source, delivery_id, kind, received_at, body, events, applied) VALUES ('github', 'pending', 'workflow_run', 1, ?, '[]', 0)`,
		} {
			if _, err := db.Exec(q, body); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()

		s := openTest(t, dir, Options{})
		if _, _, got := readDelivery(t, s, pipeline.SourceGitHub, "old"); !bytes.Equal(got, body) {
			t.Errorf("v3 body read back as %d bytes that differ from the %d stored", len(got), len(body))
		}
		entries, err := s.Unapplied(ctx, 10)
		if err != nil || len(entries) != 1 || !bytes.Equal(entries[0].Body, body) {
			t.Fatalf("Unapplied after upgrade = %d entries, %v; want the pending one with its body", len(entries), err)
		}
		// New bodies are stored compressed.
		submit(t, s, &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: "new", Kind: "workflow_run", ReceivedAt: t0, Body: body})
		var stored int
		var codec string
		if err := s.rdb.QueryRow(`SELECT length(body), body_codec FROM log WHERE delivery_id = 'new'`).Scan(&stored, &codec); err != nil {
			t.Fatal(err)
		}
		if codec != codecS2 || stored >= len(body)/2 {
			t.Errorf("new body stored as %d bytes with codec %q, want %q and under half of %d", stored, codec, codecS2, len(body))
		}
		if _, _, got := readDelivery(t, s, pipeline.SourceGitHub, "new"); !bytes.Equal(got, body) {
			t.Error("compressed body read back differs from the one received")
		}
	})
	t.Run("newer than binary", func(t *testing.T) {
		dir := t.TempDir()
		s, err := open(dir, Options{}, addColumn, fullCheckBytes)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		_, err = Open(dir, Options{})
		path := filepath.Join(dir, FileName)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "newer than this binary") {
			t.Errorf("Open of a v2 file = %v, want a newer-schema error naming %s", err, path)
		}
	})
	t.Run("failed migration rolled back", func(t *testing.T) {
		dir := t.TempDir()
		s := openTest(t, dir, Options{})
		submit(t, s, nil, testRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0))
		s.Close()
		bad := append(slices.Clone(migrations), `CREATE TABLE extra (x); ALTER TABLE nosuch ADD COLUMN y`)
		want := fmt.Sprintf("version %d", len(bad))
		if _, err := open(dir, Options{}, bad, fullCheckBytes); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("open with a failing migration = %v, want an error about %s", err, want)
		}
		s = openTest(t, dir, Options{})
		if v := userVersion(t, s); v != len(migrations) {
			t.Errorf("user_version = %d, want %d", v, len(migrations))
		}
		if _, err := s.rdb.Exec(`SELECT * FROM extra`); err == nil {
			t.Error("half of the failed migration was kept")
		}
	})
}

func TestCorruptFileRefused(t *testing.T) {
	notSQLite := func(t *testing.T, path string) {
		if err := os.WriteFile(path, []byte(strings.Repeat("this is not a database\n", 300)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	seeded := func(t *testing.T, path string) {
		s, err := Open(filepath.Dir(path), Options{})
		if err != nil {
			t.Fatal(err)
		}
		bulkLoad(t, s, seedRuns(200))
		s.Close()
	}
	damagedPages := func(t *testing.T, path string) {
		seeded(t, path)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		// Leave the header page alone so only the integrity check can tell.
		if _, err := f.WriteAt([]byte(strings.Repeat("\xff\x00\x13", 4096)), fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		// fullCheckMax 0 makes the file too big for a full check at Open.
		fullCheckMax int64
		// refused: Open fails; damaged: the background check finds it.
		refused, damaged bool
	}{
		{"not sqlite", notSQLite, fullCheckBytes, true, false},
		{"not sqlite, big", notSQLite, 0, true, false},
		{"damaged pages", damagedPages, fullCheckBytes, true, false},
		{"damaged pages, big", damagedPages, 0, false, true},
		{"intact, big", seeded, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			tc.damage(t, path)
			s, err := open(dir, Options{}, migrations, tc.fullCheckMax)
			if tc.refused {
				if err == nil {
					s.Close()
					t.Fatal("Open accepted a corrupt file")
				}
				if !strings.Contains(err.Error(), path+" is corrupt") {
					t.Errorf("error %q does not name %s as corrupt", err, path)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			<-s.checkDone
			err = s.Healthy()
			if !tc.damaged {
				if err != nil {
					t.Errorf("Healthy() = %v after checking an intact file", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), path+" is corrupt") || !strings.Contains(err.Error(), "restore a backup") {
				t.Errorf("Healthy() = %v, want the damage, naming %s and a backup", err, path)
			}
		})
	}
}

func TestBackupDirWhileOpen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	run, d := fixtureRun(t)
	submit(t, s, d, run)
	dst := filepath.Join(t.TempDir(), "backup.db")
	// BackupDir runs in another process in real use; a second connection
	// to the open store's file is the same to SQLite.
	if err := BackupDir(context.Background(), dir, dst); err != nil {
		t.Fatalf("BackupDir: %v", err)
	}
	// It holds raw deliveries: only its owner may read it.
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup file mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if err := BackupDir(context.Background(), dir, dst); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("a second backup to the same file = %v, want already exists", err)
	}
	if err := BackupDir(context.Background(), t.TempDir(), filepath.Join(t.TempDir(), "x.db")); err == nil || !strings.Contains(err.Error(), FileName) {
		t.Errorf("BackupDir of an empty directory = %v, want an error naming %s", err, FileName)
	}
	restored := t.TempDir()
	if err := os.Rename(dst, filepath.Join(restored, FileName)); err != nil {
		t.Fatal(err)
	}
	b := openTest(t, restored, Options{})
	if got, err := b.Run(ctx, run.ID); err != nil || !reflect.DeepEqual(got, run) {
		t.Fatalf("restored run = %+v, %v", got, err)
	}
}
