package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// fakeRuns is an in-memory history that filters like the store and
// records the last query it was asked. With block set, queries wait for
// their context to end or for block to be closed.
type fakeRuns struct {
	runs  []*pipeline.Run // oldest first
	err   error
	query *pipeline.RunQuery
	block chan struct{}
	// waiting receives a value as each query starts to wait on block.
	waiting chan struct{}
	mu      sync.Mutex // guards query
}

func (f *fakeRuns) wait(ctx context.Context) error {
	if f.block == nil {
		return nil
	}
	if f.waiting != nil {
		f.waiting <- struct{}{}
	}
	select {
	case <-f.block:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeRuns) Run(ctx context.Context, id int64) (*pipeline.Run, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	if f.err != nil {
		return nil, f.err
	}
	for _, r := range f.runs {
		if r.ID == id {
			return r, nil
		}
	}
	return nil, pipeline.ErrNotFound
}

func (f *fakeRuns) ListRuns(ctx context.Context, q pipeline.RunQuery) ([]*pipeline.Run, error) {
	f.mu.Lock()
	f.query = &q
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	if f.err != nil {
		return nil, f.err
	}
	var out []*pipeline.Run
	for _, r := range slices.Backward(f.runs) {
		switch {
		case len(out) == q.Limit,
			q.BeforeID != 0 && r.ID >= q.BeforeID,
			len(q.Statuses) > 0 && !slices.Contains(q.Statuses, r.Status),
			q.Pipeline != "" && r.Pipeline != q.Pipeline,
			q.Trigger != "" && r.Trigger.Source != q.Trigger,
			!q.Since.IsZero() && r.CreatedAt.Before(q.Since),
			!q.Until.IsZero() && r.CreatedAt.After(q.Until),
			q.MinDuration > 0 && r.DurationSeconds < q.MinDuration.Seconds():
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// fixtureRun builds a finished run from the published workflow_run
// payload's values, as the tracker would.
func fixtureRun(t *testing.T, id int64) *pipeline.Run {
	t.Helper()
	p := fixtures.MustDecode(fixtures.MustLoad("github/workflow_run/completed.json"))
	created, updated, started := p.Time("workflow_run.created_at"), p.Time("workflow_run.updated_at"), p.Time("workflow_run.run_started_at")
	event, sha := p.String("workflow_run.event"), p.String("workflow_run.head_sha")
	return &pipeline.Run{
		ID:        id,
		Pipeline:  "site",
		Status:    pipeline.StatusSuccess,
		Trigger:   pipeline.Trigger{Source: pipeline.SourceGitHub, Event: event, ReceivedAt: created, SHA: sha},
		Triggers:  []pipeline.Trigger{{Source: pipeline.SourceGitHub, Event: event, ReceivedAt: created, SHA: sha}},
		CreatedAt: created, StartedAt: &started, FinishedAt: &updated,
		DurationSeconds: updated.Sub(created).Seconds(),
		GitHub: &pipeline.GitHubRun{
			Repository: p.String("repository.full_name"), RunID: p.Int("workflow_run.id"),
			RunAttempt: int(p.Int("workflow_run.run_attempt")), WorkflowID: p.Int("workflow_run.workflow_id"),
			Workflow: "test.yml", HTMLURL: p.String("workflow_run.html_url"),
			HeadSHA: sha, HeadBranch: p.String("workflow_run.head_branch"), Event: event,
			Status: p.String("workflow_run.status"), Conclusion: p.String("workflow_run.conclusion"),
			CreatedAt: created, UpdatedAt: updated,
		},
		Stages: []pipeline.Stage{{Name: pipeline.StageTrigger, Status: pipeline.StatusSuccess, StartedAt: &created, FinishedAt: &created}},
		SeenAt: created,
	}
}

// history returns n runs with ids 1..n, one minute apart, cycling through
// pipelines, statuses and trigger sources.
func history(t *testing.T, n int) *fakeRuns {
	base := fixtureRun(t, 1)
	statuses := []pipeline.Status{pipeline.StatusSuccess, pipeline.StatusFailed, pipeline.StatusTimedOut}
	f := &fakeRuns{}
	for i := range n {
		r := base.Clone()
		r.ID = int64(i + 1)
		r.Pipeline = []string{"site", "newsletter"}[i%2]
		r.Status = statuses[i%3]
		r.Trigger.Source = pipeline.Sources[i%4]
		r.Triggers = []pipeline.Trigger{r.Trigger}
		r.CreatedAt = base.CreatedAt.Add(time.Duration(i) * time.Minute)
		r.DurationSeconds = float64(60 * (i % 5))
		f.runs = append(f.runs, r)
	}
	return f
}

func get(t *testing.T, h http.Handler, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q, want application/json", target, ct)
	}
	return rec.Code, rec.Body.String()
}

func newHandler(runs Runs) http.Handler {
	return newHandlerWith(runs, Options{})
}

func newHandlerWith(runs Runs, opts Options) http.Handler {
	return New(runs, fixedStatus{"version": "1.0.0"}, slog.New(slog.DiscardHandler), opts)
}

func ids(runs []*pipeline.Run) []int64 {
	out := make([]int64, len(runs))
	for i, r := range runs {
		out[i] = r.ID
	}
	return out
}

type listAnswer struct {
	Status string `json:"status"`
	Data   struct {
		Runs       []*pipeline.Run `json:"runs"`
		NextCursor *string         `json:"next_cursor"`
	} `json:"data"`
}

func TestListRunsParameters(t *testing.T) {
	since := time.Date(2020, 10, 5, 16, 40, 24, 0, time.UTC)
	until := time.Date(2020, 10, 5, 16, 45, 24, 500_000_000, time.UTC)
	tests := []struct {
		name  string
		query string
		// wantQuery is what the store is asked (Limit is one more than
		// the page); nil when the request must not reach the store.
		wantQuery *pipeline.RunQuery
		wantIDs   []int64
		wantErr   string
	}{
		{
			name:      "defaults",
			query:     "",
			wantQuery: &pipeline.RunQuery{Limit: 21},
			wantIDs:   []int64{30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11},
		},
		{
			name:      "status list",
			query:     "status=failed,timed_out&limit=3",
			wantQuery: &pipeline.RunQuery{Statuses: []pipeline.Status{"failed", "timed_out"}, Limit: 4},
			wantIDs:   []int64{30, 29, 27},
		},
		{
			name:      "status repeated",
			query:     "status=failed&status=timed_out&limit=3",
			wantQuery: &pipeline.RunQuery{Statuses: []pipeline.Status{"failed", "timed_out"}, Limit: 4},
			wantIDs:   []int64{30, 29, 27},
		},
		{
			name:      "every run status is accepted",
			query:     "status=pending,running,success,failed,cancelled,timed_out&limit=1",
			wantQuery: &pipeline.RunQuery{Statuses: pipeline.RunStatuses, Limit: 2},
			wantIDs:   []int64{30},
		},
		{name: "unknown status", query: "status=failed,broken", wantErr: `unknown status "broken": want one of pending, running, success, failed, cancelled, timed_out`},
		{name: "stage status is not a run status", query: "status=skipped", wantErr: `unknown status "skipped": want one of pending, running, success, failed, cancelled, timed_out`},
		{name: "empty status item", query: "status=failed,", wantErr: `unknown status "": want one of pending, running, success, failed, cancelled, timed_out`},
		{
			name:      "pipeline",
			query:     "pipeline=newsletter&limit=2",
			wantQuery: &pipeline.RunQuery{Pipeline: "newsletter", Limit: 3},
			wantIDs:   []int64{30, 28},
		},
		{
			name:      "unknown pipeline is an empty list",
			query:     "pipeline=nope",
			wantQuery: &pipeline.RunQuery{Pipeline: "nope", Limit: 21},
			wantIDs:   []int64{},
		},
		{
			name:      "trigger",
			query:     "trigger=mailerlite&limit=2",
			wantQuery: &pipeline.RunQuery{Trigger: pipeline.SourceMailerLite, Limit: 3},
			wantIDs:   []int64{27, 23},
		},
		{name: "unknown trigger", query: "trigger=gitlab", wantErr: `unknown trigger "gitlab": want one of github, supabase, mailerlite, cloudflare`},
		{
			name:      "since and until as RFC3339",
			query:     "since=2020-10-05T16:40:24Z&until=2020-10-05T18:45:24.5%2B02:00",
			wantQuery: &pipeline.RunQuery{Since: since, Until: until, Limit: 21},
			wantIDs:   []int64{13, 12, 11, 10, 9, 8},
		},
		{
			name:      "since and until as unix seconds",
			query:     fmt.Sprintf("since=%d&until=%d.5", since.Unix(), until.Unix()),
			wantQuery: &pipeline.RunQuery{Since: since, Until: until, Limit: 21},
			wantIDs:   []int64{13, 12, 11, 10, 9, 8},
		},
		{name: "bad since", query: "since=yesterday", wantErr: `invalid since "yesterday": want RFC3339 or unix seconds`},
		{name: "bad until", query: "until=2020-10-05", wantErr: `invalid until "2020-10-05": want RFC3339 or unix seconds`},
		{name: "until out of range", query: "until=1e300", wantErr: `invalid until "1e300": want RFC3339 or unix seconds`},
		{name: "until NaN", query: "until=NaN", wantErr: `invalid until "NaN": want RFC3339 or unix seconds`},
		{name: "since after until", query: "since=1601916024&until=1601916000", wantErr: "since must not be after until"},
		{name: "limit too small", query: "limit=0", wantErr: "limit must be between 1 and 500"},
		{name: "limit too large", query: "limit=501", wantErr: "limit must be between 1 and 500"},
		{name: "limit not a number", query: "limit=ten", wantErr: "limit must be between 1 and 500"},
		{
			name:      "limit at the maximum",
			query:     "limit=500&pipeline=site",
			wantQuery: &pipeline.RunQuery{Pipeline: "site", Limit: 501},
			wantIDs:   []int64{29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1},
		},
		{
			name:      "cursor",
			query:     "cursor=" + encodeCursor(4),
			wantQuery: &pipeline.RunQuery{BeforeID: 4, Limit: 21},
			wantIDs:   []int64{3, 2, 1},
		},
		{name: "cursor not base64url", query: "cursor=NA==", wantErr: `invalid cursor "NA=="`},
		{name: "cursor not an id", query: "cursor=YWJj", wantErr: `invalid cursor "YWJj"`},
		{name: "cursor zero", query: "cursor=MA", wantErr: `invalid cursor "MA"`},
		{name: "cursor over 1 KiB is not echoed", query: "cursor=" + strings.Repeat("MT", 513), wantErr: "cursor longer than 1024 bytes"},
		{
			name:    "cursor of 1 KiB",
			query:   "cursor=" + strings.Repeat("x", 1024),
			wantErr: `invalid cursor "` + strings.Repeat("x", 64) + `"...`,
		},
		{
			name:      "100 status values",
			query:     "status=" + strings.Repeat("failed,", 99) + "failed&limit=1",
			wantQuery: &pipeline.RunQuery{Statuses: slices.Repeat([]pipeline.Status{"failed"}, 100), Limit: 2},
			wantIDs:   []int64{29},
		},
		{name: "101 status values in a list", query: "status=" + strings.Repeat("failed,", 100) + "failed", wantErr: "too many status values: at most 100"},
		{name: "1000 repeated status values", query: strings.Repeat("status=failed&", 1000), wantErr: "too many status values: at most 100"},
		{
			name:      "min_duration as a duration",
			query:     "min_duration=3m&limit=3",
			wantQuery: &pipeline.RunQuery{MinDuration: 3 * time.Minute, Limit: 4},
			wantIDs:   []int64{30, 29, 25},
		},
		{
			name:      "min_duration in seconds",
			query:     "min_duration=180.5&limit=2",
			wantQuery: &pipeline.RunQuery{MinDuration: 180*time.Second + 500*time.Millisecond, Limit: 3},
			wantIDs:   []int64{30, 25},
		},
		{name: "min_duration negative", query: "min_duration=-1m", wantErr: `invalid min_duration "-1m": want a duration (15m, 90s) or seconds, at most a year`},
		{name: "min_duration not a duration", query: "min_duration=slow", wantErr: `invalid min_duration "slow": want a duration (15m, 90s) or seconds, at most a year`},
		{name: "min_duration past a year", query: "min_duration=1e12", wantErr: `invalid min_duration "1e12": want a duration (15m, 90s) or seconds, at most a year`},
		{name: "since before 2000", query: "since=1999-12-31T23:59:59Z", wantErr: "since must be between 2000-01-01 and a year from now"},
		{name: "since at 0", query: "since=0", wantErr: "since must be between 2000-01-01 and a year from now"},
		{name: "until more than a year ahead", query: fmt.Sprintf("until=%d", time.Now().AddDate(1, 0, 1).Unix()), wantErr: "until must be between 2000-01-01 and a year from now"},
		{name: "long bad since is cut", query: "since=" + strings.Repeat("9", 100) + "x", wantErr: `invalid since "` + strings.Repeat("9", 64) + `"...: want RFC3339 or unix seconds`},
		{name: "bad escape in a filter", query: "pipeline=other%ZZ", wantErr: `invalid pipeline "other%ZZ": bad %-escape`},
		{name: "bad escape at the end", query: "limit=2&status=failed%2", wantErr: `invalid status "failed%2": bad %-escape`},
		{name: "NUL in a filter", query: "pipeline=%00", wantErr: `invalid pipeline "%00": holds a NUL or invalid UTF-8`},
		{name: "invalid UTF-8 in a filter", query: "pipeline=site%FF", wantErr: `invalid pipeline "site%FF": holds a NUL or invalid UTF-8`},
		{name: "invalid UTF-8 in a status", query: "status=failed%C3", wantErr: `invalid status "failed%C3": holds a NUL or invalid UTF-8`},
		{name: "NUL in a trigger", query: "trigger=github%00", wantErr: `invalid trigger "github%00": holds a NUL or invalid UTF-8`},
		{name: "bad escape in a name", query: "pipe%ZZline=site", wantErr: `invalid query parameter name "pipe%ZZline"`},
		{name: "bad escape in an unknown parameter", query: "limit=1&foo=%G0", wantErr: `invalid foo "%G0": bad %-escape`},
		{name: "long name is cut", query: strings.Repeat("p", 100) + "=%00", wantErr: `invalid "` + strings.Repeat("p", 64) + `"... "%00": holds a NUL or invalid UTF-8`},
		{
			name:      "semicolon is part of the value",
			query:     "pipeline=a;b",
			wantQuery: &pipeline.RunQuery{Pipeline: "a;b", Limit: 21},
			wantIDs:   []int64{},
		},
		{
			name:      "escaped filter",
			query:     "pipeline=news%6Cetter&limit=2",
			wantQuery: &pipeline.RunQuery{Pipeline: "newsletter", Limit: 3},
			wantIDs:   []int64{30, 28},
		},
		{
			name:      "unknown parameters are ignored",
			query:     "limit=1&foo=bar",
			wantQuery: &pipeline.RunQuery{Limit: 2},
			wantIDs:   []int64{30},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runs := history(t, 30)
			code, body := get(t, newHandler(runs), "/api/pipeline-runs?"+tc.query)
			if tc.wantErr != "" {
				msg, _ := json.Marshal(tc.wantErr)
				want := `{"status":"error","errorType":"bad_data","error":` + string(msg) + `}`
				if code != http.StatusBadRequest || body != string(want) {
					t.Errorf("got %d %s, want 400 %s", code, body, want)
				}
				if runs.query != nil {
					t.Errorf("store was asked %+v for a bad request", *runs.query)
				}
				return
			}
			if code != http.StatusOK {
				t.Fatalf("got %d %s, want 200", code, body)
			}
			if runs.query == nil || !reflect.DeepEqual(*runs.query, *tc.wantQuery) {
				t.Errorf("store asked %+v, want %+v", runs.query, *tc.wantQuery)
			}
			var ans listAnswer
			if err := json.Unmarshal([]byte(body), &ans); err != nil {
				t.Fatal(err)
			}
			if ans.Status != "success" || !slices.Equal(ids(ans.Data.Runs), tc.wantIDs) {
				t.Errorf("got %s runs %v, want success %v", ans.Status, ids(ans.Data.Runs), tc.wantIDs)
			}
		})
	}
}

func TestListRunsPagination(t *testing.T) {
	tests := []struct {
		name  string
		runs  int
		limit int
		pages [][]int64
	}{
		{name: "last page short", runs: 7, limit: 3, pages: [][]int64{{7, 6, 5}, {4, 3, 2}, {1}}},
		{name: "last page full", runs: 6, limit: 3, pages: [][]int64{{6, 5, 4}, {3, 2, 1}}},
		{name: "one page", runs: 2, limit: 3, pages: [][]int64{{2, 1}}},
		{name: "empty", runs: 0, limit: 3, pages: [][]int64{{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler(history(t, tc.runs))
			target := fmt.Sprintf("/api/pipeline-runs?limit=%d", tc.limit)
			for i, want := range tc.pages {
				code, body := get(t, h, target)
				var ans listAnswer
				if err := json.Unmarshal([]byte(body), &ans); err != nil || code != http.StatusOK {
					t.Fatalf("page %d: got %d %s (%v)", i, code, body, err)
				}
				if ans.Data.Runs == nil || !slices.Equal(ids(ans.Data.Runs), want) {
					t.Fatalf("page %d: got runs %v, want %v (and [] rather than null)", i, ids(ans.Data.Runs), want)
				}
				last := i == len(tc.pages)-1
				if got := ans.Data.NextCursor != nil; got == last {
					t.Fatalf("page %d: next_cursor present %v, want %v", i, got, !last)
				}
				if !last {
					target = fmt.Sprintf("/api/pipeline-runs?limit=%d&cursor=%s", tc.limit, *ans.Data.NextCursor)
				}
			}
		})
	}
}

func TestGetRun(t *testing.T) {
	runs := history(t, 3)
	run, err := json.Marshal(runs.runs[1])
	if err != nil {
		t.Fatal(err)
	}
	// The stored run's fields, then page_url.
	run = append(run[:len(run)-1], `,"page_url":"/runs/2"}`...)
	tests := []struct {
		target   string
		wantCode int
		wantBody string
	}{
		{"/api/pipeline-runs/2", http.StatusOK, `{"status":"success","data":` + string(run) + `}`},
		{"/api/pipeline-runs/4", http.StatusNotFound, `{"status":"error","errorType":"not_found","error":"run 4 not found"}`},
		{"/api/pipeline-runs/abc", http.StatusBadRequest, `{"status":"error","errorType":"bad_data","error":"invalid run id \"abc\""}`},
		{"/api/pipeline-runs/0", http.StatusBadRequest, `{"status":"error","errorType":"bad_data","error":"invalid run id \"0\""}`},
		{"/api/pipeline-runs/99999999999999999999", http.StatusBadRequest, `{"status":"error","errorType":"bad_data","error":"invalid run id \"99999999999999999999\""}`},
	}
	h := newHandler(runs)
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			code, body := get(t, h, tc.target)
			if code != tc.wantCode || body != tc.wantBody {
				t.Errorf("got %d %s\nwant %d %s", code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

// TestRunJSON pins the run fields the HTTP API documentation names, from a run built out of
// a published workflow_run payload.
func TestRunJSON(t *testing.T) {
	_, body := get(t, newHandler(&fakeRuns{runs: []*pipeline.Run{fixtureRun(t, 1)}}), "/api/pipeline-runs/1")
	var ans struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	gh, _ := ans.Data["github"].(map[string]any)
	trigger, _ := ans.Data["trigger"].(map[string]any)
	got := map[string]any{
		"id": ans.Data["id"], "pipeline": ans.Data["pipeline"], "status": ans.Data["status"],
		"created_at": ans.Data["created_at"], "finished_at": ans.Data["finished_at"],
		"duration_seconds": ans.Data["duration_seconds"], "trigger.source": trigger["source"],
		"github.run_id": gh["run_id"], "github.html_url": gh["html_url"], "github.head_sha": gh["head_sha"],
	}
	want := map[string]any{
		"id": 1.0, "pipeline": "site", "status": "success",
		"created_at": "2020-10-05T16:33:24Z", "finished_at": "2020-10-05T16:33:49Z",
		"duration_seconds": 25.0, "trigger.source": "github",
		"github.run_id": 289782451.0, "github.html_url": "https://github.com/octo-org/octo-repo/actions/runs/289782451",
		"github.head_sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("run JSON fields\n got %v\nwant %v", got, want)
	}
}

func TestStoreUnavailable(t *testing.T) {
	h := newHandler(&fakeRuns{err: errors.New("database is locked")})
	const want = `{"status":"error","errorType":"unavailable","error":"run history unavailable"}`
	for _, target := range []string{"/api/pipeline-runs", "/api/pipeline-runs/1"} {
		code, body := get(t, h, target)
		if code != http.StatusServiceUnavailable || body != want {
			t.Errorf("GET %s: got %d %s, want 503 %s", target, code, body, want)
		}
	}
}

func TestStatus(t *testing.T) {
	code, body := get(t, newHandler(&fakeRuns{}), "/api/status")
	if want := `{"status":"success","data":{"version":"1.0.0"}}`; code != http.StatusOK || body != want {
		t.Errorf("got %d %s, want 200 %s", code, body, want)
	}
}

// TestPageURL: every run in the JSON links to its page, made absolute with
// the external URL and under its path prefix.
func TestPageURL(t *testing.T) {
	tests := []struct {
		external string
		want     string
	}{
		{"", "/runs/3"},
		{"https://ci.example.com", "https://ci.example.com/runs/3"},
		{"https://ci.example.com/", "https://ci.example.com/runs/3"},
		{"https://example.com/pipelines/", "https://example.com/pipelines/runs/3"},
	}
	for _, tc := range tests {
		t.Run(tc.external, func(t *testing.T) {
			var opts Options
			if tc.external != "" {
				u, err := url.Parse(tc.external)
				if err != nil {
					t.Fatal(err)
				}
				opts.ExternalURL = u
			}
			h := newHandlerWith(history(t, 3), opts)
			var one struct {
				Data struct {
					PageURL string `json:"page_url"`
				} `json:"data"`
			}
			if _, body := get(t, h, "/api/pipeline-runs/3"); json.Unmarshal([]byte(body), &one) != nil || one.Data.PageURL != tc.want {
				t.Errorf("run page_url %q, want %q", one.Data.PageURL, tc.want)
			}
			var list struct {
				Data struct {
					Runs []struct {
						ID      int64  `json:"id"`
						PageURL string `json:"page_url"`
					} `json:"runs"`
				} `json:"data"`
			}
			if _, body := get(t, h, "/api/pipeline-runs?limit=1"); json.Unmarshal([]byte(body), &list) != nil ||
				len(list.Data.Runs) != 1 || list.Data.Runs[0].PageURL != tc.want {
				t.Errorf("list page_url %+v, want %q", list.Data.Runs, tc.want)
			}
		})
	}
}

// TestConcurrencyCap: past MaxRequests requests in flight the API answers
// 503 with Retry-After after maxWait, and serves again once their slots
// have rested.
func TestConcurrencyCap(t *testing.T) {
	runs := history(t, 3)
	runs.block = make(chan struct{})
	runs.waiting = make(chan struct{}, 2)
	h := newHandlerWith(runs, Options{MaxRequests: 2, QueryTimeout: time.Minute})
	srv := httptest.NewServer(h)
	defer srv.Close()

	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + "/api/pipeline-runs")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	// Wait until both hold their slot.
	for range 2 {
		select {
		case <-runs.waiting:
		case <-time.After(5 * time.Second):
			t.Fatal("the two requests did not start")
		}
	}
	for _, target := range []string{"/api/pipeline-runs", "/api/pipeline-runs/1", "/api/status"} {
		resp, err := http.Get(srv.URL + target)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		const want = `{"status":"error","errorType":"unavailable","error":"too many concurrent API requests"}`
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || string(body) != want {
			t.Errorf("GET %s past the cap: %d Retry-After %q %s", target, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	close(runs.block)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusOK {
			t.Errorf("a request within the cap got %d", code)
		}
	}
	// The slots rest at most maxRest after their requests.
	deadline := time.Now().Add(maxRest + time.Second)
	for {
		code, _ := get(t, h, "/api/pipeline-runs/1")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the flood: %d, want 200", maxRest+time.Second, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQueryTimeout: a history query that takes longer than QueryTimeout is
// abandoned with 503.
func TestQueryTimeout(t *testing.T) {
	runs := history(t, 3)
	runs.block = make(chan struct{})
	defer close(runs.block)
	h := newHandlerWith(runs, Options{QueryTimeout: 20 * time.Millisecond})
	const want = `{"status":"error","errorType":"timeout","error":"run history query took longer than 20ms"}`
	for _, target := range []string{"/api/pipeline-runs", "/api/pipeline-runs/1"} {
		start := time.Now()
		code, body := get(t, h, target)
		if code != http.StatusServiceUnavailable || body != want {
			t.Errorf("GET %s: %d %s, want 503 %s", target, code, body, want)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("GET %s took %v", target, took)
		}
	}
}

// fixedStatus is a StatusReporter that always reports itself.
type fixedStatus map[string]string

func (s fixedStatus) Status(context.Context) any { return s }
