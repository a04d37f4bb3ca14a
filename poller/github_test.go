package poller

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

func TestGitHubPolledRunBecomesWebhookEvents(t *testing.T) {
	gt := newGitHubTest(t, nil)
	if err := gt.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls := gt.sink.Calls()
	if len(calls) != 1 {
		t.Fatalf("got %d Apply calls, want 1 (the run with its jobs)", len(calls))
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Values from fixtures/github/rest/actions/list-workflow-runs-for-repo.json
	// and list-jobs-for-workflow-run.json (run_id pointed at the run).
	want := []pipeline.Event{
		pipeline.WorkflowRunEvent{
			Repository:   testRepo,
			RunID:        30433642,
			RunAttempt:   1,
			WorkflowID:   159038,
			WorkflowPath: ".github/workflows/build.yml@main",
			Name:         "Build",
			HeadBranch:   "master",
			HeadSHA:      "acb5820ced9479c074f688cc328bf03f341a511d",
			Event:        "push",
			Status:       "queued",
			HTMLURL:      "https://github.com/octo-org/octo-repo/actions/runs/30433642",
			CreatedAt:    at("2020-01-22T19:33:08Z"),
			UpdatedAt:    at("2020-01-22T19:33:08Z"),
			RunStartedAt: at("2020-01-22T19:33:08Z"),
			HeadCommitAt: at("2020-01-22T19:33:05Z"),
		},
		pipeline.WorkflowJobEvent{
			Repository:   testRepo,
			RunID:        30433642,
			RunAttempt:   1,
			JobID:        399444496,
			Name:         "build",
			WorkflowName: "CI",
			HeadBranch:   "main",
			HeadSHA:      "f83a356604ae3c5d03e1b46ef4d1ca77d64a90b0",
			Status:       "completed",
			Conclusion:   "success",
			HTMLURL:      "https://github.com/octo-org/octo-repo/runs/29679449/jobs/399444496",
			StartedAt:    at("2020-01-20T17:42:40Z"),
			CompletedAt:  at("2020-01-20T17:44:39Z"),
		},
	}
	if !reflect.DeepEqual(calls[0], want) {
		t.Errorf("events:\n got %#v\nwant %#v", calls[0], want)
	}
	wantPaths := []string{
		"/repos/octo-org/octo-repo/actions/runs?per_page=100",
		"/repos/octo-org/octo-repo/actions/runs/30433642/attempts/1/jobs?per_page=100",
	}
	if got := gt.fake.requestPaths(); !slices.Equal(got, wantPaths) {
		t.Errorf("requests %q, want %q", got, wantPaths)
	}
}

// TestGitHubUnchangedPollsCostNothing measures the figure of issue 4: the
// requests and rate-limit points of 10 polls of an unchanged repository, and
// of a poll after one new run.
func TestGitHubUnchangedPollsCostNothing(t *testing.T) {
	gt := newGitHubTest(t, nil)
	ctx := context.Background()
	if err := gt.poll(ctx); err != nil {
		t.Fatal(err)
	}
	reqs0, nm0 := gt.fake.counts()
	points0 := gt.fake.points()
	remaining0 := testutil.ToFloat64(gt.poller.api.metrics.rateRemaining.WithLabelValues())

	const polls = 10
	for range polls {
		gt.clock.Advance(time.Minute)
		if err := gt.poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	reqs, nm := gt.fake.counts()
	requests, notModified, points := reqs-reqs0, nm-nm0, gt.fake.points()-points0
	t.Logf("%d polls of an unchanged repository: %d API requests (%d answered 304), %d rate-limit points", polls, requests, notModified, points)
	if requests != polls || notModified != polls || points != 0 {
		t.Errorf("%d polls of an unchanged repository: %d requests, %d 304s, %d points; want %d, %d, 0", polls, requests, notModified, points, polls, polls)
	}
	if got := len(gt.sink.Calls()); got != 1 {
		t.Errorf("unchanged polls sent events: %d Apply calls in all, want 1", got)
	}
	if got := testutil.ToFloat64(gt.poller.api.metrics.requests.WithLabelValues("github", "runs", "304")); got != polls {
		t.Errorf(`poll_requests_total{endpoint="runs",code="304"} = %v, want %d`, got, polls)
	}
	if got := testutil.ToFloat64(gt.poller.api.metrics.rateRemaining.WithLabelValues()); got != remaining0 {
		t.Errorf("rate limit remaining moved from %v to %v on 304s", remaining0, got)
	}

	// One new run: one list request and one jobs request, for the new run only.
	runs := makeRuns(t, 30433643, 1, fixtureRunCreated.Add(5*time.Minute), 0)
	gt.fake.setRuns(append(runs, gt.fake.runs...))
	before := len(gt.fake.requestPaths())
	points0 = gt.fake.points()
	if err := gt.poll(ctx); err != nil {
		t.Fatal(err)
	}
	paths := gt.fake.requestPaths()[before:]
	points = gt.fake.points() - points0
	t.Logf("poll after one new run: %d API requests, %d rate-limit points", len(paths), points)
	wantPaths := []string{
		"/repos/octo-org/octo-repo/actions/runs?per_page=100",
		"/repos/octo-org/octo-repo/actions/runs/30433643/attempts/1/jobs?per_page=100",
	}
	if !slices.Equal(paths, wantPaths) || points != 2 {
		t.Errorf("poll after one new run: requests %q, %d points; want %q, 2 points", paths, points, wantPaths)
	}
	if got, want := gt.sink.sentRunIDs(), []int64{30433642, 30433643}; !slices.Equal(got, want) {
		t.Errorf("runs sent %v, want %v (the unchanged run not again)", got, want)
	}
}

func TestGitHubChangedRunIsSentAgain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		change   func(run map[string]any)
		jobsPath string
	}{
		{
			name:     "status",
			change:   func(r map[string]any) { r["status"] = "in_progress" },
			jobsPath: "/repos/octo-org/octo-repo/actions/runs/30433642/attempts/1/jobs?per_page=100",
		},
		{
			name: "conclusion",
			change: func(r map[string]any) {
				r["status"], r["conclusion"] = "completed", "failure"
				r["updated_at"] = "2020-01-22T19:35:00Z"
			},
			jobsPath: "/repos/octo-org/octo-repo/actions/runs/30433642/attempts/1/jobs?per_page=100",
		},
		{
			name:     "updated_at",
			change:   func(r map[string]any) { r["updated_at"] = "2020-01-22T19:34:00Z" },
			jobsPath: "/repos/octo-org/octo-repo/actions/runs/30433642/attempts/1/jobs?per_page=100",
		},
		{
			name:     "re-run attempt",
			change:   func(r map[string]any) { r["run_attempt"] = 2 },
			jobsPath: "/repos/octo-org/octo-repo/actions/runs/30433642/attempts/2/jobs?per_page=100",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gt := newGitHubTest(t, nil)
			ctx := context.Background()
			if err := gt.poll(ctx); err != nil {
				t.Fatal(err)
			}
			run := clone(t, gt.fake.runs[0])
			tc.change(run)
			gt.fake.setRuns([]map[string]any{run})
			before := len(gt.fake.requestPaths())
			if err := gt.poll(ctx); err != nil {
				t.Fatal(err)
			}
			paths := gt.fake.requestPaths()[before:]
			if len(paths) != 2 || paths[1] != tc.jobsPath {
				t.Errorf("requests %q, want the run list then %s", paths, tc.jobsPath)
			}
			calls := gt.sink.Calls()
			if len(calls) != 2 {
				t.Fatalf("%d Apply calls, want 2", len(calls))
			}
			got := calls[1][0].(pipeline.WorkflowRunEvent)
			if got.Status != run["status"] || got.RunAttempt != int(toFloat(run["run_attempt"])) || got.UpdatedAt.Format(time.RFC3339) != run["updated_at"] {
				t.Errorf("second event %+v does not carry the change", got)
			}
			if len(calls[1]) != 2 {
				t.Errorf("second Apply has %d events, want the run and its job", len(calls[1]))
			}
		})
	}
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case int:
		return float64(n)
	}
	return -1
}

func TestGitHubBackfill(t *testing.T) {
	gt := newGitHubTest(t, func(o *GitHubOptions) { o.BackfillWindow = 25 * time.Hour })
	ctx := context.Background()
	newest := gt.clock.Now().Add(-time.Minute)
	// 250 runs, one every 10 minutes from a minute ago: runs 0..149 (newest
	// first) lie inside the 25h window, so a first poll needs pages 1 and 2
	// but not 3.
	gt.fake.setRuns(makeRuns(t, 1000, 250, newest, 10*time.Minute))
	if err := gt.poll(ctx); err != nil {
		t.Fatal(err)
	}
	ids := gt.sink.sentRunIDs()
	if len(ids) != 150 || ids[0] != 1100 || ids[149] != 1249 || !slices.IsSorted(ids) {
		t.Errorf("first poll sent %d runs %v..., want the 150 inside the window, oldest first", len(ids), ids[:min(len(ids), 3)])
	}
	assertListPages(t, gt.fake.requestPaths(), 1, 2)

	// Unchanged: page 1 only, answered 304.
	before := len(gt.fake.requestPaths())
	if err := gt.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if paths := gt.fake.requestPaths()[before:]; len(paths) != 1 {
		t.Errorf("unchanged poll made requests %q, want one", paths)
	}

	// A gap: 120 runs happened while the exporter was down. Page 1 is all
	// new, page 2 is partly known, so the poll stops after page 2.
	gt.clock.Advance(20 * time.Hour)
	runs := append(makeRuns(t, 2000, 120, gt.clock.Now().Add(-time.Minute), time.Minute), gt.fake.runs...)
	gt.fake.setRuns(runs)
	before = len(gt.fake.requestPaths())
	sentBefore := len(gt.sink.sentRunIDs())
	if err := gt.poll(ctx); err != nil {
		t.Fatal(err)
	}
	ids = gt.sink.sentRunIDs()[sentBefore:]
	if len(ids) != 120 || ids[0] != 2000 || ids[119] != 2119 {
		t.Errorf("poll after the gap sent %d runs, want the 120 missed ones, oldest first", len(ids))
	}
	assertListPages(t, gt.fake.requestPaths()[before:], 1, 2)
	if n := len(gt.poller.runs[testRepo]); n > 100+150+120 {
		t.Errorf("poller remembers %d runs; runs outside the window and off page 1 should be forgotten", n)
	}
}

// assertListPages checks which pages of the run list were requested.
func assertListPages(t *testing.T, paths []string, want ...int) {
	t.Helper()
	var got []int
	for _, p := range paths {
		switch {
		case p == "/repos/octo-org/octo-repo/actions/runs?per_page=100":
			got = append(got, 1)
		case strings.HasPrefix(p, "/repos/octo-org/octo-repo/actions/runs?per_page=100&page="):
			got = append(got, int(p[len(p)-1]-'0'))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("run list pages requested %v, want %v", got, want)
	}
}

func TestGitHubApplyFailureIsRetried(t *testing.T) {
	gt := newGitHubTest(t, nil)
	ctx := context.Background()
	gt.sink.err = pipeline.ErrUnavailable
	if err := gt.poll(ctx); !errors.Is(err, pipeline.ErrUnavailable) {
		t.Fatalf("poll = %v, want the sink's error", err)
	}
	gt.sink.err = nil
	points := gt.fake.points()
	if err := gt.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := gt.sink.sentRunIDs(); !slices.Equal(got, []int64{30433642}) {
		t.Errorf("runs sent after the sink recovered: %v, want the run that failed", got)
	}
	// The list answers 304 (its body is replayed), only the jobs cost a point.
	if got := gt.fake.points() - points; got != 1 {
		t.Errorf("retry cost %d points, want 1", got)
	}
}

// rateLimitBody is GitHub's documented answer body for an exhausted primary
// rate limit.
const rateLimitBody = `{"message":"API rate limit exceeded for user ID 1.","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}`

const secondaryLimitBody = `{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/free-pro-team@latest/rest/overview/resources-in-the-rest-api#secondary-rate-limits"}`

func TestGitHubFaultsBackOffAndResume(t *testing.T) {
	const interval = time.Minute
	for _, tc := range []struct {
		name  string
		fault func(f *fakeGitHub) http.HandlerFunc
		// code is the poll_requests_total code the fault is counted under.
		code string
		// count is that counter after the fault and the next poll; 1
		// unless the next poll's good answer has the same code.
		count float64
		// wait checks the wait after the fault.
		minWait, maxWait time.Duration
		timeout          bool
	}{
		{
			name: "500",
			fault: func(*fakeGitHub) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) {
					http.Error(w, `{"message":"Server Error"}`, http.StatusInternalServerError)
				}
			},
			code: "500", minWait: interval, maxWait: 2 * interval,
		},
		{
			name: "malformed JSON",
			fault: func(*fakeGitHub) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Content-Type", "application/json; charset=utf-8")
					w.Header().Set("ETag", `W/"truncated"`)
					w.Write([]byte(`{"total_count": 1, "workflow_runs": [{"id": 30433642,`))
				}
			},
			code: "200", count: 2, minWait: interval, maxWait: 2 * interval,
		},
		{
			name: "timeout",
			fault: func(*fakeGitHub) http.HandlerFunc {
				return func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
			},
			code: "error", minWait: interval, maxWait: 2 * interval, timeout: true,
		},
		{
			name: "403 primary limit, reset in 10m",
			fault: func(f *fakeGitHub) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) {
					h := w.Header()
					h.Set("Content-Type", "application/json; charset=utf-8")
					h.Set("X-RateLimit-Limit", "5000")
					h.Set("X-RateLimit-Remaining", "0")
					h.Set("X-RateLimit-Used", "5000")
					h.Set("X-RateLimit-Reset", strconv.FormatInt(f.clock.Now().Add(10*time.Minute).Unix(), 10))
					h.Set("X-RateLimit-Resource", "core")
					w.WriteHeader(http.StatusForbidden)
					w.Write([]byte(rateLimitBody))
				}
			},
			code: "403", minWait: 10 * time.Minute, maxWait: 10 * time.Minute,
		},
		{
			name: "403 secondary limit with retry-after",
			fault: func(*fakeGitHub) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Content-Type", "application/json; charset=utf-8")
					w.Header().Set("Retry-After", "90")
					w.WriteHeader(http.StatusForbidden)
					w.Write([]byte(secondaryLimitBody))
				}
			},
			code: "403", minWait: 90 * time.Second, maxWait: 90 * time.Second,
		},
		{
			name: "429 with retry-after",
			fault: func(*fakeGitHub) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Content-Type", "application/json; charset=utf-8")
					w.Header().Set("Retry-After", "30")
					w.WriteHeader(http.StatusTooManyRequests)
					w.Write([]byte(secondaryLimitBody))
				}
			},
			code: "429", minWait: 30 * time.Second, maxWait: 30 * time.Second,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var sleep *recordingSleep
			gt := newGitHubTest(t, func(o *GitHubOptions) {
				sleep = &recordingSleep{clock: nil, stopAfter: 2, cancel: cancel}
				o.Sleep = sleep.Sleep
				o.Interval = interval
				if tc.timeout {
					// The one real wait of these tests: a client timeout
					// needs a clock the HTTP client itself reads.
					o.HTTPClient = &http.Client{Timeout: 200 * time.Millisecond}
				}
			})
			sleep.clock = gt.clock
			gt.fake.addFault(tc.fault(gt.fake))

			gt.poller.Run(ctx)

			waits := sleep.Waits()
			if len(waits) != 2 {
				t.Fatalf("Run slept %d times, want 2", len(waits))
			}
			if waits[0] < tc.minWait || waits[0] > tc.maxWait {
				t.Errorf("wait after the fault %v, want within [%v, %v]", waits[0], tc.minWait, tc.maxWait)
			}
			if waits[1] != interval {
				t.Errorf("wait after the next success %v, want the poll interval %v", waits[1], interval)
			}
			if got, want := testutil.ToFloat64(gt.poller.api.metrics.requests.WithLabelValues("github", "runs", tc.code)), max(tc.count, 1); got != want {
				t.Errorf(`poll_requests_total{endpoint="runs",code=%q} = %v, want %v`, tc.code, got, want)
			}
			if got := gt.sink.sentRunIDs(); !slices.Equal(got, []int64{30433642}) {
				t.Errorf("runs sent %v: polling did not resume after the fault", got)
			}
			if gt.fake.conditional[1] {
				t.Error("the request after the fault carried If-None-Match for a body that was never usable")
			}
			st := gt.poller.Status()
			if st.LastError == "" || st.LastErrorAt == nil || st.LastSuccess == nil || !st.LastSuccess.After(*st.LastErrorAt) {
				t.Errorf("status %+v does not show the error followed by a success", st)
			}
			if st.NextPoll == nil || !st.NextPoll.Equal(st.LastSuccess.Add(interval)) {
				t.Errorf("status next poll %v, want one interval after the last success %v", st.NextPoll, st.LastSuccess)
			}
		})
	}
}

func TestGitHubRateLimitSendsNothingUntilReset(t *testing.T) {
	gt := newGitHubTest(t, nil)
	ctx := context.Background()
	reset := gt.clock.Now().Add(10 * time.Minute)
	gt.fake.addFault(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("X-RateLimit-Limit", "5000")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Used", "5000")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
		h.Set("X-RateLimit-Resource", "core")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(rateLimitBody))
	})
	var rl *rateLimitedError
	wait, err := gt.poller.sched.poll(ctx, gt.poller.pass)
	if !errors.As(err, &rl) || !rl.until.Equal(reset) {
		t.Fatalf("poll = %v, want rate limited until %v", err, reset)
	}
	st := gt.poller.Status()
	if wait != 10*time.Minute || st.NextPoll == nil || !st.NextPoll.Equal(reset) {
		t.Errorf("next poll in %v at %v, want at the reset %v", wait, st.NextPoll, reset)
	}
	if st.RateLimit == nil || st.RateLimit.Remaining != 0 || st.RateLimit.Limit != 5000 || st.RateLimit.Used != 5000 || !st.RateLimit.Reset.Equal(reset) {
		t.Errorf("status rate limit %+v, want 0 of 5000 remaining until %v", st.RateLimit, reset)
	}
	if got := testutil.ToFloat64(gt.poller.api.metrics.rateReset.WithLabelValues()); got != float64(reset.Unix()) {
		t.Errorf("rate limit reset gauge %v, want %v", got, reset.Unix())
	}

	gt.clock.Advance(9 * time.Minute)
	requests, _ := gt.fake.counts()
	if wait, err := gt.poller.sched.poll(ctx, gt.poller.pass); !errors.As(err, &rl) || wait != time.Minute {
		t.Fatalf("poll before the reset = %v, next in %v; want rate limited for the minute left", err, wait)
	}
	if after, _ := gt.fake.counts(); after != requests {
		t.Errorf("%d requests sent before the reset, want none", after-requests)
	}

	gt.clock.Advance(time.Minute)
	if err := gt.poll(ctx); err != nil {
		t.Fatalf("poll at the reset = %v, want success", err)
	}
	if got := gt.sink.sentRunIDs(); !slices.Equal(got, []int64{30433642}) {
		t.Errorf("runs sent %v after the reset", got)
	}
}

func TestGitHubLastPointSpentWaitsForReset(t *testing.T) {
	gt := newGitHubTest(t, nil)
	ctx := context.Background()
	gt.fake.limit = 2 // the first poll's two requests spend it all
	if err := gt.poll(ctx); err != nil {
		t.Fatal(err)
	}
	requests, _ := gt.fake.counts()
	var rl *rateLimitedError
	if err := gt.poll(ctx); !errors.As(err, &rl) || !rl.until.Equal(gt.fake.resetAt) {
		t.Fatalf("poll with 0 remaining = %v, want rate limited until %v", err, gt.fake.resetAt)
	}
	if after, _ := gt.fake.counts(); after != requests {
		t.Errorf("%d requests sent with 0 remaining before the reset, want none", after-requests)
	}
}

func TestGitHubRateLimitAbsentUntilAnswered(t *testing.T) {
	gt := newGitHubTest(t, nil)
	names := []string{"pipeline_exporter_github_rate_limit_remaining", "pipeline_exporter_github_rate_limit_reset_timestamp_seconds"}
	if n, err := testutil.GatherAndCount(gt.reg, names...); err != nil || n != 0 {
		t.Errorf("before any answer: %d rate-limit series (err %v), want none", n, err)
	}
	if gt.poller.Status().RateLimit != nil {
		t.Error("status shows a rate limit before GitHub answered")
	}
	if err := gt.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(gt.reg, names...); err != nil || n != 2 {
		t.Errorf("after an answer: %d rate-limit series (err %v), want 2", n, err)
	}
	// Two requests (runs, jobs) so far: GitHub reported 4998 remaining.
	if got := testutil.ToFloat64(gt.poller.api.metrics.rateRemaining.WithLabelValues()); got != 4998 {
		t.Errorf("rate limit remaining %v, want 4998", got)
	}
}

func TestMetricsRegistrationIsIdempotent(t *testing.T) {
	gt := newGitHubTest(t, nil)
	// A reload builds new pollers on the same registry.
	again := NewGitHub(GitHubOptions{APIURL: gt.fake.server.URL, Token: func() string { return testToken }, Repositories: []string{testRepo}, Now: gt.clock.Now}, gt.sink, gt.reg, slog.New(slog.DiscardHandler))
	NewPages(PagesOptions{}, gt.sink, gt.reg, slog.New(slog.DiscardHandler))
	if _, err := again.sched.poll(context.Background(), again.pass); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(gt.poller.api.metrics.requests.WithLabelValues("github", "runs", "200")); got != 1 {
		t.Errorf("the first poller's counter reads %v, want the second poller's request counted in it", got)
	}
}

func TestGitHubInvalidRepository(t *testing.T) {
	gt := newGitHubTest(t, func(o *GitHubOptions) { o.Repositories = []string{"no-slash", testRepo} })
	err := gt.poll(context.Background())
	if err == nil || !strings.Contains(err.Error(), `"no-slash"`) {
		t.Errorf("poll = %v, want an error naming the bad repository", err)
	}
	if got := gt.sink.sentRunIDs(); !slices.Equal(got, []int64{30433642}) {
		t.Errorf("runs sent %v: the valid repository must still be polled", got)
	}
}

// logRecorder keeps the message and level of every log record.
type logRecorder struct {
	mu      sync.Mutex
	records []string // "LEVEL message"
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Level.String()+" "+r.Message)
	return nil
}

func (l *logRecorder) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.records
	l.records = nil
	return out
}

// TestGitHubPollLogs checks the lines a person reads to see that polling
// works: the first success at info with what changed and the rate limit
// left, later ones at debug, the first success after a failure at info
// again, and a 401 named as GitHub rejecting the token.
func TestGitHubPollLogs(t *testing.T) {
	token := testToken
	gt := newGitHubTest(t, func(o *GitHubOptions) { o.Token = func() string { return token } })
	logs := &logRecorder{}
	gt.poller.logger = slog.New(logs)
	ctx := context.Background()

	steps := []struct {
		name    string
		before  func()
		wantErr string
		want    []string
	}{
		{"first success", nil, "", []string{"INFO Polled GitHub octo-org/octo-repo: 1 runs changed, rate limit 4998 left"}},
		{"unchanged", nil, "", []string{"DEBUG Polled GitHub octo-org/octo-repo: 0 runs changed, rate limit 4998 left"}},
		{"server error", func() {
			gt.fake.addFault(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
		}, "502", nil},
		{"recovered", nil, "", []string{"INFO Polled GitHub octo-org/octo-repo: 0 runs changed, rate limit 4998 left"}},
		{"revoked token", func() { token = "revoked" }, "GitHub rejected the token", nil},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		err := gt.poll(ctx)
		if s.wantErr == "" && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Fatalf("%s: error %v, want one containing %q", s.name, err, s.wantErr)
		}
		if got := logs.take(); !slices.Equal(got, s.want) {
			t.Errorf("%s: logged %q, want %q", s.name, got, s.want)
		}
	}
}
