package poller

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	testAccount = "023e105f4ecef8ad9ca31a8372d0c353"
	testProject = "this-is-my-project-01" // project_name of the published example
	testCFToken = "cf-test-token"
	pagesPath   = "/client/v4/accounts/" + testAccount + "/pages/projects/" + testProject + "/deployments"
)

// fakePages answers the Pages deployments list with the published example.
type fakePages struct {
	t      *testing.T
	server *httptest.Server

	mu   sync.Mutex
	body map[string]any
	// faults answer the next requests instead of the API, in order.
	faults   []http.HandlerFunc
	requests int
	// requested receives a value per request, for tests that wait on one.
	requested chan struct{}
}

func newFakePages(t *testing.T) *fakePages {
	f := &fakePages{t: t, body: fixtures.MustDecode(fixtures.MustLoad("cloudflare/pages/list-deployments.api-reference-example.json")), requested: make(chan struct{}, 100)}
	f.server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.server.Close)
	return f
}

func (f *fakePages) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer func() { f.requested <- struct{}{} }()
	f.requests++
	if len(f.faults) > 0 {
		fault := f.faults[0]
		f.faults = f.faults[1:]
		f.mu.Unlock()
		fault(w, r)
		return
	}
	defer f.mu.Unlock()
	if r.URL.Path != pagesPath {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+testCFToken {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(f.body)
}

// deployment returns the listed deployment, to edit.
func (f *fakePages) deployment() map[string]any {
	return f.body["result"].([]any)[0].(map[string]any)
}

type pagesTest struct {
	clock  *fakeClock
	fake   *fakePages
	sink   *recordingSink
	reg    *prometheus.Registry
	poller *PagesPoller
}

func newPagesTest(t *testing.T, adjust func(*PagesOptions)) *pagesTest {
	clock := newFakeClock(time.Date(2021, 3, 9, 1, 0, 0, 0, time.UTC))
	fake := newFakePages(t)
	sink := &recordingSink{}
	reg := prometheus.NewRegistry()
	opts := PagesOptions{
		APIURL:    fake.server.URL + "/client/v4/",
		AccountID: testAccount,
		Token:     func() string { return testCFToken },
		Projects:  []string{testProject, testProject},
		Interval:  time.Minute,
		Now:       clock.Now,
		Sleep:     func(context.Context, time.Duration) error { t.Error("unexpected Sleep"); return nil },
	}
	if adjust != nil {
		adjust(&opts)
	}
	return &pagesTest{clock: clock, fake: fake, sink: sink, reg: reg, poller: NewPages(opts, sink, reg, slog.New(slog.DiscardHandler))}
}

// poll makes one pass the way each turn of Run does, recording its outcome
// in Status and the metrics, and returns the pass's error.
func (pt *pagesTest) poll(ctx context.Context) error {
	_, err := pt.poller.sched.poll(ctx, pt.poller.pass)
	return err
}

func TestPagesDeploymentBecomesEvent(t *testing.T) {
	pt := newPagesTest(t, nil)
	if err := pt.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	// Values from fixtures/cloudflare/pages/list-deployments.api-reference-example.json.
	want := []pipeline.Event{pipeline.PagesDeploymentEvent{
		Project: testProject,
		Deployment: pipeline.PagesDeployment{
			Project:      testProject,
			DeploymentID: "f64788e9-fccd-4d4a-a28a-cb84f88f6",
			URL:          "https://f64788e9.ninjakittens.pages.dev",
			Environment:  "preview",
			CommitHash:   "ad9ccd918a81025731e10e40267e11273a263421",
			Stages: []pipeline.PagesStage{
				{Name: "queued", Status: "active", StartedOn: at("2021-06-03T15:38:15.608194Z"), EndedOn: at("2021-06-03T15:39:03.134378Z")},
				{Name: "initialize", Status: "idle"},
				{Name: "clone_repo", Status: "idle"},
				{Name: "build", Status: "idle"},
				{Name: "deploy", Status: "idle"},
			},
		},
		LatestStage: pipeline.PagesStage{Name: "deploy", Status: "success", StartedOn: at("2021-03-09T00:55:03.923456Z"), EndedOn: at("2021-03-09T00:58:59.045655Z")},
		CreatedOn:   *at("2021-03-09T00:55:03.923456Z"),
	}}
	calls := pt.sink.Calls()
	if len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
		t.Errorf("Apply calls %#v\nwant one with %#v", calls, want)
	}
	// The project is listed twice in the options (two pipelines share it)
	// but polled once.
	if pt.fake.requests != 1 {
		t.Errorf("%d requests, want 1", pt.fake.requests)
	}
}

func TestPagesOnlyNewOrChangedDeploymentsAreSent(t *testing.T) {
	pt := newPagesTest(t, nil)
	ctx := context.Background()
	for range 3 {
		if err := pt.poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(pt.sink.Calls()); got != 1 {
		t.Fatalf("three polls of an unchanged project made %d Apply calls, want 1", got)
	}

	// The build moves on: the deployment is sent again.
	pt.fake.mu.Lock()
	stage := pt.fake.deployment()["stages"].([]any)[1].(map[string]any)
	stage["status"], stage["started_on"] = "active", "2021-06-03T15:39:03.134378Z"
	pt.fake.mu.Unlock()
	if err := pt.poll(ctx); err != nil {
		t.Fatal(err)
	}
	calls := pt.sink.Calls()
	if len(calls) != 2 {
		t.Fatalf("%d Apply calls after a change, want 2", len(calls))
	}
	if got := calls[1][0].(pipeline.PagesDeploymentEvent).Deployment.Stages[1].Status; got != "active" {
		t.Errorf("changed event has initialize stage %q, want active", got)
	}
	if got := testutil.ToFloat64(newMetrics(pt.reg).requests.WithLabelValues("cloudflare", "deployments", "200")); got != 4 {
		t.Errorf(`poll_requests_total{source="cloudflare",endpoint="deployments",code="200"} = %v, want 4`, got)
	}
}

func TestPagesTriggerPollsAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pt := newPagesTest(t, func(o *PagesOptions) {
		// An interval the test never sees end: only Trigger can start
		// the second poll.
		o.Sleep = func(ctx context.Context, _ time.Duration) error {
			<-ctx.Done()
			return ctx.Err()
		}
	})
	done := make(chan struct{})
	go func() {
		pt.poller.Run(ctx)
		close(done)
	}()
	waitRequest := func() {
		t.Helper()
		select {
		case <-pt.fake.requested:
		case <-time.After(10 * time.Second):
			t.Fatal("no request to the Pages API")
		}
	}
	waitRequest() // the immediate first poll
	pt.poller.Trigger()
	waitRequest()
	cancel()
	<-done
}

func TestPagesRateLimitedRetryAfter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sleep := &recordingSleep{stopAfter: 2, cancel: cancel}
	pt := newPagesTest(t, func(o *PagesOptions) { o.Sleep = sleep.Sleep })
	sleep.clock = pt.clock
	pt.fake.faults = append(pt.fake.faults, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"success":false,"errors":[{"code":971,"message":"Please wait and consider throttling your request speed"}],"messages":[],"result":null}`))
	})
	pt.poller.Run(ctx)
	if waits := sleep.Waits(); len(waits) != 2 || waits[0] != 2*time.Minute || waits[1] != time.Minute {
		t.Errorf("waits %v, want [2m0s 1m0s]: Retry-After, then the interval", waits)
	}
	if got := len(pt.sink.Calls()); got != 1 {
		t.Errorf("%d Apply calls, want 1 after the limit passed", got)
	}
}

func TestPagesErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault http.HandlerFunc
	}{
		{"success false", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"success":false,"errors":[{"code":8000007,"message":"Project not found."}],"messages":[],"result":null}`))
		}},
		{"malformed JSON", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"success":true,"result":[{"id":`))
		}},
		{"403", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}`))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt := newPagesTest(t, nil)
			pt.fake.faults = append(pt.fake.faults, tc.fault)
			if err := pt.poll(context.Background()); err == nil {
				t.Fatal("a poll succeeded on a bad answer")
			}
			if st := pt.poller.Status(); st.LastError == "" || st.LastSuccess != nil {
				t.Errorf("status %+v, want the error recorded", st)
			}
			if err := pt.poll(context.Background()); err != nil {
				t.Fatalf("poll after the fault: %v", err)
			}
			if got := len(pt.sink.Calls()); got != 1 {
				t.Errorf("%d Apply calls, want 1", got)
			}
		})
	}
}

func TestTokenBucket(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := tokenBucket{capacity: cloudflareBurst, perSecond: cloudflarePerSecond, tokens: cloudflareBurst}
	burst := func(at time.Duration) {
		t.Helper()
		for i := range cloudflareBurst {
			if d := b.reserve(start.Add(at)); d != 0 {
				t.Fatalf("request %d of the burst at +%v waits %v, want 0", i+1, at, d)
			}
		}
	}
	burst(0)
	for _, tc := range []struct {
		at   time.Duration
		want time.Duration
	}{
		{0, 250 * time.Millisecond},           // one over Cloudflare's 1200 per 5 minutes
		{0, 500 * time.Millisecond},           // reservations queue up
		{time.Second, 0},                      // 4 tokens refilled, 2 owed: 1 left after this one
		{time.Second, 0},                      //
		{time.Second, 250 * time.Millisecond}, //
	} {
		if got := b.reserve(start.Add(tc.at)); got != tc.want {
			t.Errorf("reserve at +%v waits %v, want %v", tc.at, got, tc.want)
		}
	}
	// A quiet hour refills the bucket to the burst, never beyond.
	burst(time.Hour)
	if got := b.reserve(start.Add(time.Hour)); got != 250*time.Millisecond {
		t.Errorf("request after a refilled burst waits %v, want 250ms", got)
	}
	// A clock stepping back neither refills nor drains the bucket.
	if got := b.reserve(start); got != 500*time.Millisecond {
		t.Errorf("request after the clock stepped back waits %v, want 500ms", got)
	}
}

func TestPagesWaitsForTheTokenBucket(t *testing.T) {
	var waits []time.Duration
	pt := newPagesTest(t, func(o *PagesOptions) {
		o.Sleep = func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			return nil
		}
	})
	pt.poller.bucket.tokens = 0 // as after a burst of 1200 requests
	pt.poller.bucket.last = pt.clock.Now()
	if err := pt.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(waits) != 1 || waits[0] != 250*time.Millisecond {
		t.Errorf("waits %v, want one of 250ms before the request", waits)
	}
}
