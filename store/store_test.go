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

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

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

func submit(t *testing.T, s *Store, d *pipeline.Delivery, runs ...*pipeline.Run) {
	t.Helper()
	if err := <-s.Submit(d, runs); err != nil {
		t.Fatalf("Submit: %v", err)
	}
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
func fixtureRun(t *testing.T) (*pipeline.Run, *pipeline.Delivery) {
	t.Helper()
	body, err := os.ReadFile("testdata/workflow_run.completed.json")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		WorkflowRun struct {
			ID         int64     `json:"id"`
			RunAttempt int       `json:"run_attempt"`
			WorkflowID int64     `json:"workflow_id"`
			Path       string    `json:"path"`
			HTMLURL    string    `json:"html_url"`
			HeadSHA    string    `json:"head_sha"`
			HeadBranch string    `json:"head_branch"`
			Event      string    `json:"event"`
			Status     string    `json:"status"`
			Conclusion string    `json:"conclusion"`
			CreatedAt  time.Time `json:"created_at"`
			UpdatedAt  time.Time `json:"updated_at"`
		} `json:"workflow_run"`
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	w := p.WorkflowRun
	r := testRun(7, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, w.CreatedAt)
	r.Trigger.Event = w.Event
	r.Trigger.SHA = w.HeadSHA
	r.Trigger.DeliveryID = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	r.Triggers = []pipeline.Trigger{r.Trigger}
	r.StartedAt = &w.CreatedAt
	r.FinishedAt = &w.UpdatedAt
	r.DurationSeconds = w.UpdatedAt.Sub(w.CreatedAt).Seconds()
	r.GitHub = &pipeline.GitHubRun{
		Repository: p.Repository.FullName, RunID: w.ID, RunAttempt: w.RunAttempt, WorkflowID: w.WorkflowID,
		Workflow: filepath.Base(w.Path), HTMLURL: w.HTMLURL, HeadSHA: w.HeadSHA, HeadBranch: w.HeadBranch,
		Event: w.Event, Status: w.Status, Conclusion: w.Conclusion, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
	}
	r.Stages = append(r.Stages, pipeline.Stage{Name: "build", Status: pipeline.StatusSuccess, StartedAt: &w.CreatedAt,
		FinishedAt: &w.UpdatedAt, DurationSeconds: r.DurationSeconds, URL: w.HTMLURL, JobID: 399444496, QueuedSeconds: 2})
	r.Pages = &pipeline.PagesDeployment{Project: "site", DeploymentID: "d1", Stages: []pipeline.PagesStage{{Name: "queued", Status: "success"}}}
	d := &pipeline.Delivery{Source: pipeline.SourceGitHub, ID: r.Trigger.DeliveryID, Event: "workflow_run", ReceivedAt: w.UpdatedAt, Body: body}
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
		got, err := s.Run(run.ID)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if !reflect.DeepEqual(got, run) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(run)
			t.Fatalf("Run(%d) =\n%s\nwant\n%s", run.ID, g, w)
		}
		event, received, body := readDelivery(t, s, d.Source, d.ID)
		if event != d.Event || received != d.ReceivedAt.UnixNano() || !bytes.Equal(body, d.Body) {
			t.Errorf("delivery = %q %d %d bytes, want %q %d %d bytes", event, received, len(body), d.Event, d.ReceivedAt.UnixNano(), len(d.Body))
		}
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Runs != 2 || st.Deliveries != 1 || st.SizeBytes <= 0 {
			t.Errorf("Stats = %+v, want 2 runs, 1 delivery, a size", st)
		}
		if _, err := s.Run(99); !errors.Is(err, pipeline.ErrNotFound) {
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
	if err := s.rdb.QueryRow(`SELECT event, received_at, body FROM deliveries WHERE source = ? AND id = ?`,
		string(source), id).Scan(&event, &received, &body); err != nil {
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
	fixture, err := os.ReadFile("testdata/workflow_run.completed.json")
	if err != nil {
		t.Fatal(err)
	}
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
			submit(t, s, &pipeline.Delivery{Source: pipeline.SourceGitHub, ID: tc.name, Event: "workflow_run", ReceivedAt: t0, Body: tc.body})
			if _, _, got := readDelivery(t, s, pipeline.SourceGitHub, tc.name); !bytes.Equal(got, tc.body) {
				t.Errorf("read back %d bytes that differ from the %d received", len(got), len(tc.body))
			}
		})
	}
}

func TestHasDelivery(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	submit(t, s, &pipeline.Delivery{Source: pipeline.SourceGitHub, ID: "a", Event: "push", ReceivedAt: t0, Body: []byte("{}")})
	// A redelivery with the same key is journaled once and does not fail.
	submit(t, s, &pipeline.Delivery{Source: pipeline.SourceGitHub, ID: "a", Event: "push", ReceivedAt: t0, Body: []byte("{}")})
	for _, tc := range []struct {
		source pipeline.Source
		id     string
		want   bool
	}{
		{pipeline.SourceGitHub, "a", true},
		{pipeline.SourceGitHub, "b", false},
		{pipeline.SourceSupabase, "a", false},
	} {
		got, err := s.HasDelivery(tc.source, tc.id)
		if err != nil || got != tc.want {
			t.Errorf("HasDelivery(%s, %s) = %v, %v; want %v", tc.source, tc.id, got, err, tc.want)
		}
	}
	if st, _ := s.Stats(); st.Deliveries != 1 {
		t.Errorf("Stats().Deliveries = %d, want 1", st.Deliveries)
	}
}

// holdWriteLock takes the database's write lock from another connection, so
// the writer blocks in BEGIN and Submits pile up in its queue.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := conn.ExecContext(context.Background(), `ROLLBACK`); err != nil {
			t.Error(err)
		}
		conn.Close()
		db.Close()
	}
}

func TestGroupCommit(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	const n = 100
	release := holdWriteLock(t, s.Path())
	chans := make([]<-chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			d := &pipeline.Delivery{Source: pipeline.SourceMailerLite, ID: fmt.Sprint(i), Event: "campaign.sent", ReceivedAt: t0, Body: []byte("{}")}
			chans[i] = s.Submit(d, []*pipeline.Run{testRun(int64(i+1), "site", pipeline.StatusPending, pipeline.SourceMailerLite, t0)})
		})
	}
	wg.Wait()
	// Queued is as good as journaled for dedup: a redelivery racing its
	// original must not be applied twice.
	if ok, err := s.HasDelivery(pipeline.SourceMailerLite, "42"); !ok || err != nil {
		t.Errorf("HasDelivery of a queued delivery = %v, %v; want true", ok, err)
	}
	release()
	for i, ch := range chans {
		if err := <-ch; err != nil {
			t.Fatalf("Submit %d: %v", i, err)
		}
	}
	// The writer took at most one request before blocking on the lock;
	// everything queued behind it shares the next commit.
	if got := s.commits.Load(); got > 2 {
		t.Errorf("%d Submits took %d commits, want at most 2", n, got)
	}
	if st, _ := s.Stats(); st.Runs != n || st.Deliveries != n {
		t.Errorf("Stats = %+v, want %d runs and deliveries", st, n)
	}
}

func TestSubmitOrder(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	release := holdWriteLock(t, s.Path())
	// Queued together, so they land in one transaction: the last wins.
	var chans []<-chan error
	for _, st := range []pipeline.Status{pipeline.StatusPending, pipeline.StatusRunning, pipeline.StatusFailed, pipeline.StatusSuccess} {
		chans = append(chans, s.Submit(nil, []*pipeline.Run{testRun(1, "site", st, pipeline.SourceGitHub, t0)}))
	}
	release()
	for _, ch := range chans {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Run(1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != pipeline.StatusSuccess {
		t.Errorf("status = %s, want the last submitted, success", got.Status)
	}
	// The status column follows the JSON, or status filters would lie.
	if runs, _ := s.ListRuns(pipeline.RunQuery{Statuses: []pipeline.Status{pipeline.StatusRunning}, Limit: 10}); len(runs) != 0 {
		t.Errorf("running runs = %v, want none", runIDs(runs))
	}
	if st, _ := s.Stats(); st.Runs != 1 {
		t.Errorf("Stats().Runs = %d, want 1", st.Runs)
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
			q.BeforeID != 0 && r.ID >= q.BeforeID:
			continue
		}
		ids = append(ids, r.ID)
	}
	return ids
}

func TestListRuns(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	runs := seedRuns(240)
	if err := s.BulkLoad(runs); err != nil {
		t.Fatal(err)
	}
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
	for _, q := range queries {
		name := fmt.Sprintf("status=%v,pipeline=%s,trigger=%s,since=%v,until=%v", q.Statuses, q.Pipeline, q.Trigger, !q.Since.IsZero(), !q.Until.IsZero())
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
				res, err := s.ListRuns(q)
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
	if res, err := s.ListRuns(pipeline.RunQuery{Limit: 0}); err != nil || len(res) != 0 {
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
	if err := s.BulkLoad(seedRuns(50)); err != nil {
		t.Fatal(err)
	}
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
		{"FindGitHubRun", `SELECT data FROM runs WHERE github_run_id = ? AND github_run_attempt = ? ORDER BY id DESC LIMIT 1`, []any{1, 1}, "runs_github"},
		{"ActiveRuns", `SELECT data FROM runs WHERE status IN ` + activeStatuses + ` ORDER BY id`, nil, "runs_status"},
		{"LastSuccessRuns", pipelinesCTE + `SELECT r.data FROM p JOIN runs r ON r.id = (
			SELECT id FROM runs WHERE pipeline = p.name AND status = ? ORDER BY id DESC LIMIT 1)`, []any{"success"}, "runs_pipeline_status"},
		{"prune runs by age", `SELECT id FROM runs WHERE created_at < ? LIMIT ?`, []any{1, 1}, "runs_created_at"},
		{"prune deliveries by age", `SELECT rowid FROM deliveries WHERE received_at < ? LIMIT ?`, []any{1, 1}, "deliveries_received_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if plan := explain(t, s, tc.query, tc.args...); !strings.Contains(plan, tc.want) {
				t.Errorf("plan lacks %q:\n%s", tc.want, plan)
			}
		})
	}
}

func TestFindGitHubRun(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	run, _ := fixtureRun(t)
	rerun := run.Clone()
	rerun.ID = 8
	rerun.GitHub.RunAttempt = 2
	submit(t, s, nil, run, rerun, testRun(9, "site", pipeline.StatusPending, pipeline.SourceSupabase, t0))
	for _, tc := range []struct {
		runID   int64
		attempt int
		want    int64 // 0: none
	}{
		{run.GitHub.RunID, 1, 7},
		{run.GitHub.RunID, 2, 8},
		{run.GitHub.RunID, 3, 0},
		{1, 1, 0},
	} {
		got, err := s.FindGitHubRun(tc.runID, tc.attempt)
		if err != nil {
			t.Fatal(err)
		}
		var gotID int64
		if got != nil {
			gotID = got.ID
		}
		if gotID != tc.want {
			t.Errorf("FindGitHubRun(%d, %d) = run %d, want %d", tc.runID, tc.attempt, gotID, tc.want)
		}
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
	for _, tc := range []struct {
		name string
		fn   func() ([]*pipeline.Run, error)
		want []int64
	}{
		{"ActiveRuns", s.ActiveRuns, []int64{4, 6, 7}},
		{"LastFinishedRuns", s.LastFinishedRuns, []int64{5, 2}}, // docs, site; shop has none
		{"LastSuccessRuns", s.LastSuccessRuns, []int64{3, 1}},
	} {
		got, err := tc.fn()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(runIDs(got), tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, runIDs(got), tc.want)
		}
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
	if err := s.BulkLoad(runs); err != nil {
		t.Fatal(err)
	}
	if err := s.prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, r := range runs {
		if !r.Status.Terminal() || r.ID > 2500-98 {
			want = append(want, r.ID)
		}
	}
	got, err := s.ListRuns(pipeline.RunQuery{Limit: 500})
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
	if id, err := s.MaxRunID(); err != nil || id != 2500 {
		t.Errorf("MaxRunID = %d, %v; want 2500", id, err)
	}
}

func TestRetentionByAge(t *testing.T) {
	clock := &fakeClock{now: t0}
	s := openTest(t, t.TempDir(), Options{Retention: 90 * 24 * time.Hour, Now: clock.Now})
	day := 24 * time.Hour
	ages := []time.Duration{100 * day, 91 * day, 89 * day, 1 * day}
	for i, age := range ages {
		// The oldest is still running: age pruning takes it too.
		st := pipeline.StatusSuccess
		if i == 0 {
			st = pipeline.StatusRunning
		}
		submit(t, s, &pipeline.Delivery{Source: pipeline.SourceSupabase, ID: fmt.Sprint(i), Event: "INSERT", ReceivedAt: t0.Add(-age), Body: []byte("{}")},
			testRun(int64(i+1), "site", st, pipeline.SourceSupabase, t0.Add(-age)))
	}
	for _, tc := range []struct {
		now        time.Time
		wantRuns   []int64
		wantDelivs []string
	}{
		{t0, []int64{4, 3}, []string{"2", "3"}},
		{t0.Add(2 * day), []int64{4}, []string{"3"}},
		{t0.Add(100 * day), nil, nil},
	} {
		clock.Set(tc.now)
		if err := s.prune(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, err := s.ListRuns(pipeline.RunQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(runIDs(got), append([]int64{}, tc.wantRuns...)) {
			t.Errorf("at %v: runs %v, want %v", tc.now, runIDs(got), tc.wantRuns)
		}
		var delivs []string
		for i := range ages {
			if ok, _ := s.HasDelivery(pipeline.SourceSupabase, fmt.Sprint(i)); ok {
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
	if id, err := s.MaxRunID(); err != nil || id != 4 {
		t.Errorf("MaxRunID after pruning everything = %d, %v; want 4", id, err)
	}
}

func TestMaxRunID(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	if id, err := s.MaxRunID(); err != nil || id != 0 {
		t.Errorf("empty MaxRunID = %d, %v", id, err)
	}
	submit(t, s, nil, testRun(41, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0), testRun(40, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0))
	if _, err := s.wdb.Exec(`DELETE FROM runs`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, Options{})
	if id, err := s.MaxRunID(); err != nil || id != 41 {
		t.Errorf("MaxRunID after deleting every run and reopening = %d, %v; want 41", id, err)
	}
	if st, _ := s.Stats(); st.Runs != 0 {
		t.Errorf("Stats().Runs after deleting every run = %d, want 0", st.Runs)
	}
}

func TestCheckpointWhileRunning(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	fileSize := func() int64 {
		fi, err := os.Stat(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := fileSize()
	// Random bodies: the WAL grows by what is submitted.
	const n = 24
	body := randomBytes(256 << 10)
	for i := range n {
		submit(t, s, &pipeline.Delivery{Source: pipeline.SourceGitHub, ID: fmt.Sprint(i), Event: "push", ReceivedAt: t0, Body: body})
	}
	// The writer never checkpoints, so only the checkpointer can move
	// these pages into the main file.
	deadline := time.Now().Add(10 * time.Second)
	for s.checkpoints.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.checkpoints.Load() == 0 {
		t.Fatalf("no checkpoint after %d bytes were committed", n*len(body))
	}
	if after := fileSize(); after-before < checkpointBytes {
		t.Errorf("main file grew from %d to %d bytes; want the checkpointed WAL (%d+ bytes) in it", before, after, checkpointBytes)
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
		if _, err := s.Run(1); err != nil {
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
		submit(t, s, &pipeline.Delivery{Source: pipeline.SourceGitHub, ID: "new", Event: "workflow_run", ReceivedAt: t0, Body: body},
			testRun(2, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0), testRun(3, "site", pipeline.StatusRunning, pipeline.SourceGitHub, t0))
		if st, _ := s.Stats(); st.Runs != 3 || st.Deliveries != 2 {
			t.Errorf("Stats after a write = %+v, want 3 runs and 2 deliveries", st)
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
		if err := s.BulkLoad(seedRuns(200)); err != nil {
			t.Fatal(err)
		}
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

// TestWriteFailureRecovers makes the disk "full" the way SQLite itself sees
// it: max_page_count caps the file at its current size, so the next write
// fails with SQLITE_FULL, the error a full disk gives. Running as root rules
// out permission tricks, and this needs no special file system.
func TestWriteFailureRecovers(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	submit(t, s, nil, testRun(1, "site", pipeline.StatusPending, pipeline.SourceGitHub, t0))
	if _, err := s.wdb.Exec(`PRAGMA max_page_count = 1`); err != nil {
		t.Fatal(err)
	}
	// A big body, so the write needs new pages.
	big := &pipeline.Delivery{Source: pipeline.SourceGitHub, ID: "big", Event: "push", ReceivedAt: t0, Body: randomBytes(256 << 10)}
	err := <-s.Submit(big, []*pipeline.Run{testRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0)})
	if !errors.Is(err, pipeline.ErrUnavailable) {
		t.Fatalf("Submit on a full disk = %v, want ErrUnavailable", err)
	}
	if s.Healthy() == nil {
		t.Error("Healthy() = nil after a failed write")
	}
	if s.Errors() != 1 {
		t.Errorf("Errors() = %d after one failed write, want 1", s.Errors())
	}
	if ok, _ := s.HasDelivery(pipeline.SourceGitHub, "big"); ok {
		t.Error("failed delivery reported as journaled")
	}
	if r, _ := s.Run(1); r.Status != pipeline.StatusPending {
		t.Errorf("run status = %s after a failed write, want pending", r.Status)
	}

	if _, err := s.wdb.Exec(`PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatal(err)
	}
	submit(t, s, big, testRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0))
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() = %v after a successful commit", err)
	}
	if ok, _ := s.HasDelivery(pipeline.SourceGitHub, "big"); !ok {
		t.Error("retried delivery not journaled")
	}
	if st, _ := s.Stats(); st.Runs != 1 || st.Deliveries != 1 {
		t.Errorf("Stats = %+v, want 1 run and 1 delivery", st)
	}
}

func TestBackup(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	run, d := fixtureRun(t)
	submit(t, s, d, run, testRun(8, "docs", pipeline.StatusRunning, pipeline.SourceMailerLite, t0))
	backupDir := t.TempDir()
	dst := filepath.Join(backupDir, FileName)
	if err := s.Backup(context.Background(), dst); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if err := s.Backup(context.Background(), dst); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Backup over an existing file = %v, want refusal", err)
	}
	// The store keeps working after a backup.
	submit(t, s, nil, testRun(9, "docs", pipeline.StatusPending, pipeline.SourceMailerLite, t0))

	b := openTest(t, backupDir, Options{})
	got, err := b.ListRuns(pipeline.RunQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(runIDs(got), []int64{8, 7}) || !reflect.DeepEqual(got[1], run) {
		t.Errorf("backup runs = %v, want [8 7] with run 7 intact", runIDs(got))
	}
	if ok, _ := b.HasDelivery(d.Source, d.ID); !ok {
		t.Error("backup lacks the delivery")
	}
}

func TestCloseDrainsQueue(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	release := holdWriteLock(t, s.Path())
	const n = 50
	var chans []<-chan error
	for i := range n {
		chans = append(chans, s.Submit(nil, []*pipeline.Run{testRun(int64(i+1), "site", pipeline.StatusPending, pipeline.SourceGitHub, t0)}))
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	// Release the writer only once Close has shut the queue, so the
	// requests are provably still queued when Close starts.
	for {
		s.mu.RLock()
		c := s.closed
		s.mu.RUnlock()
		if c {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-s.Submit(nil, []*pipeline.Run{testRun(99, "site", pipeline.StatusPending, pipeline.SourceGitHub, t0)}); !errors.Is(err, pipeline.ErrUnavailable) {
		t.Errorf("Submit after Close = %v, want ErrUnavailable", err)
	}
	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, ch := range chans {
		if err := <-ch; err != nil {
			t.Errorf("queued Submit %d: %v", i, err)
		}
	}
	// Close checkpoints: everything is in the main file.
	if fi, err := os.Stat(s.Path() + "-wal"); err == nil && fi.Size() > 0 {
		t.Errorf("WAL holds %d bytes after Close", fi.Size())
	}
	s = openTest(t, dir, Options{})
	if st, _ := s.Stats(); st.Runs != n {
		t.Errorf("runs after reopening = %d, want %d", st.Runs, n)
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
	if err := BackupDir(context.Background(), t.TempDir(), filepath.Join(t.TempDir(), "x.db")); err == nil || !strings.Contains(err.Error(), FileName) {
		t.Errorf("BackupDir of an empty directory = %v, want an error naming %s", err, FileName)
	}
	restored := t.TempDir()
	if err := os.Rename(dst, filepath.Join(restored, FileName)); err != nil {
		t.Fatal(err)
	}
	b := openTest(t, restored, Options{})
	if got, err := b.Run(run.ID); err != nil || !reflect.DeepEqual(got, run) {
		t.Fatalf("restored run = %+v, %v", got, err)
	}
}
