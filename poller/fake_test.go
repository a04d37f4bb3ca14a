package poller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	testRepo  = "octo-org/octo-repo" // the repository of the published examples
	testToken = "ghp_test-token"
)

// The published answers of the two REST operations the poller uses.
const (
	runsFixture = "github/rest/actions/list-workflow-runs-for-repo.json"
	jobsFixture = "github/rest/actions/list-jobs-for-workflow-run.json"
)

// fixtureRunCreated is created_at of the run in runsFixture.
var fixtureRunCreated = time.Date(2020, 1, 22, 19, 33, 8, 0, time.UTC)

// fakeClock is the poller's clock in tests; it moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recordingSleep is a Sleep that advances the fake clock instead of waiting,
// records each wait, and cancels the poller after `stopAfter` waits.
type recordingSleep struct {
	clock     *fakeClock
	stopAfter int
	cancel    context.CancelFunc

	mu    sync.Mutex
	waits []time.Duration
}

func (s *recordingSleep) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	n := len(s.waits)
	s.mu.Unlock()
	s.clock.Advance(d)
	if n >= s.stopAfter {
		s.cancel()
		return context.Canceled
	}
	return ctx.Err()
}

func (s *recordingSleep) Waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// recordingSink keeps every Apply call; err, when set, fails them.
type recordingSink struct {
	mu    sync.Mutex
	calls [][]pipeline.Event
	err   error
}

func (s *recordingSink) Apply(_ context.Context, events []pipeline.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.calls = append(s.calls, append([]pipeline.Event(nil), events...))
	return nil
}

func (s *recordingSink) Calls() [][]pipeline.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]pipeline.Event(nil), s.calls...)
}

// sentRunIDs lists the run ids of the WorkflowRunEvents sent, in order.
func (s *recordingSink) sentRunIDs() []int64 {
	var ids []int64
	for _, call := range s.Calls() {
		for _, ev := range call {
			if r, ok := ev.(pipeline.WorkflowRunEvent); ok {
				ids = append(ids, r.RunID)
			}
		}
	}
	return ids
}

// clone deep-copies decoded JSON.
func clone(t testing.TB, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeGitHub answers the two REST operations the poller uses with the
// published examples and the headers GitHub sends: ETag, x-ratelimit-*,
// x-github-api-version-selected, Link, content-type. Like GitHub, it does
// not count an authorised request answered 304 against the rate limit.
type fakeGitHub struct {
	t      testing.TB
	clock  *fakeClock
	server *httptest.Server

	mu sync.Mutex
	// runs are the repository's runs, newest first.
	runs    []map[string]any
	jobs    map[string]any // the published jobs example, used for every run
	limit   int
	used    int
	resetAt time.Time
	// faults answer the next requests instead of the API, in order.
	faults []http.HandlerFunc

	requests    int
	notModified int
	paths       []string
	conditional []bool // whether each request carried If-None-Match
}

var jobsPath = regexp.MustCompile(`^/repos/octo-org/octo-repo/actions/runs/(\d+)/attempts/(\d+)/jobs$`)

func newFakeGitHub(t testing.TB, clock *fakeClock) *fakeGitHub {
	f := &fakeGitHub{
		t:       t,
		clock:   clock,
		jobs:    fixtures.MustDecode(fixtures.MustLoad(jobsFixture)),
		limit:   5000,
		resetAt: clock.Now().Add(time.Hour).Truncate(time.Second),
	}
	for _, r := range fixtures.MustDecode(fixtures.MustLoad(runsFixture))["workflow_runs"].([]any) {
		f.runs = append(f.runs, r.(map[string]any))
	}
	f.server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.server.Close)
	return f
}

// points is what the requests so far cost against the rate limit.
func (f *fakeGitHub) points() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.used
}

func (f *fakeGitHub) counts() (requests, notModified int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests, f.notModified
}

func (f *fakeGitHub) requestPaths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.paths...)
}

func (f *fakeGitHub) addFault(h http.HandlerFunc) {
	f.mu.Lock()
	f.faults = append(f.faults, h)
	f.mu.Unlock()
}

// setRuns replaces the listed runs (newest first).
func (f *fakeGitHub) setRuns(runs []map[string]any) {
	f.mu.Lock()
	f.runs = runs
	f.mu.Unlock()
}

func (f *fakeGitHub) rateHeaders(h http.Header) {
	h.Set("X-RateLimit-Limit", strconv.Itoa(f.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(f.limit-f.used))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(f.resetAt.Unix(), 10))
	h.Set("X-RateLimit-Used", strconv.Itoa(f.used))
	h.Set("X-RateLimit-Resource", "core")
}

func (f *fakeGitHub) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	f.paths = append(f.paths, r.URL.RequestURI())
	f.conditional = append(f.conditional, r.Header.Get("If-None-Match") != "")
	if len(f.faults) > 0 {
		fault := f.faults[0]
		f.faults = f.faults[1:]
		f.mu.Unlock()
		fault(w, r)
		return
	}
	defer f.mu.Unlock()

	if r.Header.Get("Authorization") != "Bearer "+testToken {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var body any
	var link string
	switch m := jobsPath.FindStringSubmatch(r.URL.Path); {
	case r.URL.Path == "/repos/octo-org/octo-repo/actions/runs":
		perPage, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		page = max(page, 1)
		lo, hi := min((page-1)*perPage, len(f.runs)), min(page*perPage, len(f.runs))
		if hi < len(f.runs) {
			last := (len(f.runs) + perPage - 1) / perPage
			base := f.server.URL + r.URL.Path + "?per_page=" + strconv.Itoa(perPage)
			link = fmt.Sprintf(`<%s&page=%d>; rel="next", <%s&page=%d>; rel="last"`, base, page+1, base, last)
		}
		body = map[string]any{"total_count": len(f.runs), "workflow_runs": f.runs[lo:hi]}
	case m != nil:
		jobs := clone(f.t, f.jobs)
		runID, _ := strconv.ParseInt(m[1], 10, 64)
		// The published jobs example belongs to another run (29679449);
		// point it at the run asked for so the job belongs to it.
		for _, j := range jobs["jobs"].([]any) {
			j.(map[string]any)["run_id"] = runID
		}
		body = jobs
	default:
		w.WriteHeader(http.StatusNotFound)
		return
	}
	b, err := json.Marshal(body)
	if err != nil {
		f.t.Error(err)
		return
	}
	sum := sha256.Sum256(b)
	etag := `W/"` + hex.EncodeToString(sum[:]) + `"`

	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, max-age=60, s-maxage=60")
	h.Set("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")
	h.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	if r.Header.Get("If-None-Match") == etag {
		f.notModified++
		f.rateHeaders(h)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	f.used++
	f.rateHeaders(h)
	h.Set("Content-Type", "application/json; charset=utf-8")
	if link != "" {
		h.Set("Link", link)
	}
	w.Write(b)
}

// makeRuns returns n runs, newest first, created every step before newest.
// The published example has a single run; tests need many distinct runs,
// so each is a copy of it with its own id and times.
func makeRuns(t testing.TB, firstID int64, n int, newest time.Time, step time.Duration) []map[string]any {
	t.Helper()
	template := fixtures.MustDecode(fixtures.MustLoad(runsFixture))["workflow_runs"].([]any)[0].(map[string]any)
	runs := make([]map[string]any, n)
	for i := range runs {
		r := clone(t, template)
		id := firstID + int64(n-1-i)
		created := newest.Add(-time.Duration(i) * step).Format(time.RFC3339)
		r["id"] = id
		r["html_url"] = "https://github.com/octo-org/octo-repo/actions/runs/" + strconv.FormatInt(id, 10)
		r["created_at"], r["updated_at"], r["run_started_at"] = created, created, created
		runs[i] = r
	}
	return runs
}

type githubTest struct {
	clock  *fakeClock
	fake   *fakeGitHub
	sink   *recordingSink
	reg    *prometheus.Registry
	poller *GitHubPoller
}

// newGitHubTest builds a poller against a fake GitHub at a fake time shortly
// after the published run was created.
func newGitHubTest(t testing.TB, adjust func(*GitHubOptions)) *githubTest {
	t.Helper()
	clock := newFakeClock(fixtureRunCreated.Add(10 * time.Minute))
	fake := newFakeGitHub(t, clock)
	sink := &recordingSink{}
	reg := prometheus.NewRegistry()
	opts := GitHubOptions{
		APIURL:         fake.server.URL,
		Token:          func() string { return testToken },
		Repositories:   []string{testRepo},
		Interval:       time.Minute,
		BackfillWindow: 24 * time.Hour,
		Now:            clock.Now,
		Sleep:          func(context.Context, time.Duration) error { t.Error("unexpected Sleep"); return nil },
	}
	if adjust != nil {
		adjust(&opts)
	}
	return &githubTest{
		clock:  clock,
		fake:   fake,
		sink:   sink,
		reg:    reg,
		poller: NewGitHub(opts, sink, reg, slog.New(slog.DiscardHandler)),
	}
}

// poll makes one pass the way each turn of Run does, recording its outcome
// in Status and the metrics, and returns the pass's error.
func (gt *githubTest) poll(ctx context.Context) error {
	_, err := gt.poller.sched.poll(ctx, gt.poller.pass)
	return err
}
