package poller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/internal/fakehooks"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// memLog is the delivery log as the Reconciler sees it: what it holds, and
// the entries ingested, in order. A second entry with a key is a duplicate.
type memLog struct {
	mu      sync.Mutex
	held    map[string]bool
	entries []*pipeline.Entry
}

func newMemLog(guids ...string) *memLog {
	l := &memLog{held: map[string]bool{}}
	for _, g := range guids {
		l.held[g] = true
	}
	return l
}

func (l *memLog) KnownDeliveries(_ context.Context, source pipeline.Source, ids []string) (map[string]bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	known := map[string]bool{}
	for _, id := range ids {
		if source == pipeline.SourceGitHub && l.held[id] {
			known[id] = true
		}
	}
	return known, nil
}

func (l *memLog) Ingest(_ context.Context, e *pipeline.Entry) (pipeline.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[e.DeliveryID] {
		return pipeline.Result{Outcome: pipeline.OutcomeDuplicate}, nil
	}
	l.held[e.DeliveryID] = true
	l.entries = append(l.entries, e)
	return pipeline.Result{Outcome: pipeline.OutcomeAccepted}, nil
}

func (l *memLog) ingested() []*pipeline.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*pipeline.Entry(nil), l.entries...)
}

const (
	testHookID = 109948940 // hook_id of the published ping
	testOrg    = "octo-org"
)

// outageStart is when the deliveries of the tests begin.
var outageStart = time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)

// runDeliveries are the three deliveries of one run, as GitHub records
// them a second apart from at: workflow_run requested, its job completed,
// workflow_run completed; ids and guids follow n.
func runDeliveries(n int, at time.Time) []fakehooks.Delivery {
	runID := int64(500000 + n)
	ts := func(i int) string { return at.Add(time.Duration(i) * time.Second).Format(time.RFC3339) }
	requested := fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/requested.json"), map[string]any{
		"workflow_run.id": runID, "workflow_run.created_at": ts(0), "workflow_run.updated_at": ts(0),
	})
	job := fixtures.MustEdit(fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json"), map[string]any{
		"workflow_job.run_id": runID, "workflow_job.id": runID*10 + 1,
		"workflow_job.created_at": ts(0), "workflow_job.started_at": ts(0), "workflow_job.completed_at": ts(1),
	})
	completed := fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/completed.json"), map[string]any{
		"workflow_run.id": runID, "workflow_run.created_at": ts(0), "workflow_run.updated_at": ts(2),
	})
	d := func(i int, event, action string, body []byte) fakehooks.Delivery {
		return fakehooks.Delivery{
			ID: int64(n*10 + i), GUID: fmt.Sprintf("guid-%d-%d", n, i), Event: event, Action: action,
			DeliveredAt: at.Add(time.Duration(i) * time.Second), StatusCode: 502, Payload: body,
		}
	}
	return []fakehooks.Delivery{
		d(0, "workflow_run", "requested", requested),
		d(1, "workflow_job", "completed", job),
		d(2, "workflow_run", "completed", completed),
	}
}

type reconcileTest struct {
	clock *fakeClock
	gh    *fakehooks.Server
	log   *memLog
	reg   *prometheus.Registry
	logs  *bytes.Buffer
	r     *Reconciler
}

func newReconcileTest(t *testing.T, log *memLog, hooks ...Hook) *reconcileTest {
	t.Helper()
	gh := fakehooks.New()
	t.Cleanup(gh.Close)
	clock := newFakeClock(outageStart.Add(2 * time.Hour))
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	r := NewReconciler(ReconcilerOptions{
		APIURL:   gh.URL,
		Token:    func() string { return testToken },
		Hooks:    hooks,
		Interval: time.Minute,
		Now:      clock.Now,
	}, log, log, reg, slog.New(slog.NewTextHandler(&logs, nil)))
	return &reconcileTest{clock: clock, gh: gh, log: log, reg: reg, logs: &logs, r: r}
}

// lists and gets count the requests since the last call.
func (rt *reconcileTest) requests() (lists, gets int) {
	for _, r := range rt.gh.Requests() {
		if strings.HasSuffix(r.Path, "/deliveries") {
			lists++
		} else {
			gets++
		}
	}
	return lists, gets
}

// TestReconcileOutage is an outage of 120 deliveries (40 runs) of which
// the exporter received 15 directly before it went down: the first pass
// lists both pages, fetches exactly the 105 missing ingested deliveries,
// and appends them oldest first under their guids, at their delivery
// time, marked recovered; a delivery GitHub redelivered is recovered once,
// at its first attempt; an event the exporter reads nothing from is
// skipped and counted. A later pass costs one list request.
func TestReconcileOutage(t *testing.T) {
	var all []fakehooks.Delivery
	for n := range 40 {
		all = append(all, runDeliveries(n, outageStart.Add(time.Duration(n)*time.Minute))...)
	}
	// Received directly: the first five runs.
	var received []string
	for _, d := range all[:15] {
		received = append(received, d.GUID)
	}
	log := newMemLog(received...)
	hook := Hook{Repository: testRepo, ID: testHookID}
	rt := newReconcileTest(t, log, hook)
	path := fakehooks.RepoHook(testRepo, testHookID)
	rt.gh.Add(path, all...)
	// The last run's completion was redelivered by hand, in vain.
	redelivered := all[len(all)-1]
	redelivered.ID, redelivered.Redelivery, redelivered.DeliveredAt = 9999, true, redelivered.DeliveredAt.Add(30*time.Minute)
	rt.gh.Add(path, redelivered)
	// Not an event the exporter reads.
	rt.gh.Add(path, fakehooks.Delivery{ID: 8888, GUID: "guid-deployment", Event: "deployment_status", Action: "created",
		DeliveredAt: outageStart.Add(time.Minute), Payload: fixtures.MustLoad("github/deployment_status/payload.json")})

	if err := rt.r.pass(context.Background()); err != nil {
		t.Fatalf("pass: %v", err)
	}
	lists, gets := rt.requests()
	if lists != 2 || gets != 105 {
		t.Errorf("first pass made %d list and %d get requests, want 2 (122 deliveries) and 105", lists, gets)
	}
	got := rt.log.ingested()
	if len(got) != 105 {
		t.Fatalf("%d deliveries ingested, want 105", len(got))
	}
	for i, e := range got {
		want := all[15+i]
		if e.DeliveryID != want.GUID || e.Source != pipeline.SourceGitHub || e.Kind != want.Event || !e.ReceivedAt.Equal(want.DeliveredAt) {
			t.Fatalf("entry %d: %s %s %s at %v, want %s %s at %v (oldest first, at the first attempt)", i, e.Source, e.DeliveryID, e.Kind, e.ReceivedAt, want.GUID, want.Event, want.DeliveredAt)
		}
		if len(e.Events) != 1 {
			t.Fatalf("entry %d has %d events, want 1", i, len(e.Events))
		}
		switch ev := e.Events[0].(type) {
		case pipeline.WorkflowRunEvent:
			if !ev.Recovered || ev.DeliveryID != want.GUID {
				t.Errorf("entry %d: run event recovered %v delivery %q", i, ev.Recovered, ev.DeliveryID)
			}
		case pipeline.WorkflowJobEvent:
			if !ev.Recovered {
				t.Errorf("entry %d: job event not marked recovered", i)
			}
		default:
			t.Errorf("entry %d: event %T", i, ev)
		}
		doc := fixtures.MustDecode(e.Body)
		if want := fixtures.MustDecode(want.Payload); fmt.Sprint(doc) != fmt.Sprint(want) {
			t.Errorf("entry %d: body is not the payload GitHub sent", i)
		}
	}
	name := hook.Name()
	if v := testutil.ToFloat64(rt.r.recovered.WithLabelValues(name)); v != 105 {
		t.Errorf("recovered_total = %v, want 105", v)
	}
	if v := testutil.ToFloat64(rt.r.skipped.WithLabelValues(name, skipEvent)); v != 1 {
		t.Errorf(`skipped_total{reason="event"} = %v, want 1`, v)
	}
	if v := testutil.ToFloat64(newMetrics(rt.reg).requests.WithLabelValues("github", "deliveries", "200")); v != 107 {
		t.Errorf(`poll_requests_total{endpoint="deliveries",code="200"} = %v, want 107`, v)
	}
	st := rt.r.Status()
	if len(st) != 1 || st[0].Hook != "octo-org/octo-repo#109948940" || st[0].LastPass == nil || st[0].LastPassRecovered != 105 ||
		st[0].Recovered != 105 || st[0].Skipped != 1 || st[0].LastError != "" {
		t.Errorf("status %+v", st)
	}

	// Five minutes on, nothing new: one list request, nothing fetched,
	// nothing counted again.
	rt.clock.Advance(5 * time.Minute)
	if err := rt.r.pass(context.Background()); err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if lists, gets := rt.requests(); lists != 1 || gets != 0 {
		t.Errorf("a pass with nothing new made %d list and %d get requests, want 1 and 0", lists, gets)
	}
	if n := len(rt.log.ingested()); n != 105 {
		t.Errorf("%d deliveries ingested after the second pass, want still 105", n)
	}
	if v := testutil.ToFloat64(rt.r.skipped.WithLabelValues(name, skipEvent)); v != 1 {
		t.Errorf(`skipped_total{reason="event"} = %v after the second pass, want still 1`, v)
	}

	// A delivery missed since: the next pass finds it on the first page.
	late := runDeliveries(99, rt.clock.Now().Add(-time.Minute))[:1]
	rt.gh.Add(path, late...)
	rt.clock.Advance(5 * time.Minute)
	if err := rt.r.pass(context.Background()); err != nil {
		t.Fatalf("third pass: %v", err)
	}
	if lists, gets := rt.requests(); lists != 1 || gets != 1 {
		t.Errorf("a pass with one missed delivery made %d list and %d get requests, want 1 and 1", lists, gets)
	}
	if got := rt.log.ingested(); got[len(got)-1].DeliveryID != late[0].GUID {
		t.Errorf("last ingested %s, want %s", got[len(got)-1].DeliveryID, late[0].GUID)
	}
}

// TestReconcileRefusedHook: GitHub refuses one hook (403: the token lacks
// the permission; 404: a wrong id). The other hook is reconciled as
// usual, the pass does not fail (no backoff), the refusal is in the hook's
// status with the fix in the log, once however many passes refuse it.
func TestReconcileRefusedHook(t *testing.T) {
	for _, code := range []int{http.StatusForbidden, http.StatusNotFound} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			refused := Hook{Repository: testRepo, ID: testHookID}
			org := Hook{Organization: testOrg, ID: 42}
			rt := newReconcileTest(t, newMemLog(), refused, org)
			rt.gh.Fail(fakehooks.RepoHook(testRepo, testHookID), code)
			rt.gh.Add(fakehooks.OrgHook(testOrg, 42), runDeliveries(1, outageStart)...)
			for range 3 {
				if err := rt.r.pass(context.Background()); err != nil {
					t.Fatalf("pass: %v", err)
				}
				rt.clock.Advance(time.Minute)
			}
			if n := len(rt.log.ingested()); n != 3 {
				t.Errorf("%d deliveries of the organization's hook ingested, want 3", n)
			}
			st := rt.r.Status()
			if st[0].LastPass != nil || !strings.Contains(st[0].LastError, fmt.Sprint(code)) {
				t.Errorf("refused hook status %+v, want no pass and the %d", st[0], code)
			}
			if st[1].LastPass == nil || st[1].LastError != "" || st[1].Recovered != 3 {
				t.Errorf("organization hook status %+v", st[1])
			}
			logs := rt.logs.String()
			if n := strings.Count(logs, "GitHub refuses to list the deliveries of a hook"); n != 1 {
				t.Errorf("refusal logged %d times, want once:\n%s", n, logs)
			}
			want := map[int]string{http.StatusForbidden: "admin:repo_hook", http.StatusNotFound: "github.hooks"}[code]
			if !strings.Contains(logs, want) {
				t.Errorf("the log does not say how to fix it (%s):\n%s", want, logs)
			}

			// Fixed: logged as working again, and its deliveries recovered.
			rt.gh.Fail(fakehooks.RepoHook(testRepo, testHookID), 0)
			rt.gh.Add(fakehooks.RepoHook(testRepo, testHookID), runDeliveries(2, outageStart)...)
			if err := rt.r.pass(context.Background()); err != nil {
				t.Fatalf("pass: %v", err)
			}
			if st := rt.r.Status(); st[0].LastError != "" || st[0].Recovered != 3 {
				t.Errorf("fixed hook status %+v", st[0])
			}
			if !strings.Contains(rt.logs.String(), "GitHub lists the deliveries of the hook again") {
				t.Errorf("no log line for the fixed hook")
			}
		})
	}
}

// TestReconcileFailures: GitHub failing part way never appends a delivery
// twice and never loses one. A 502 on the second page of the list appends
// nothing (the pass cannot know the order); a 502 on a get ends the pass
// with what came before it appended; the next pass lists the same stretch
// again and fetches only what is still missing.
func TestReconcileFailures(t *testing.T) {
	var all []fakehooks.Delivery
	for n := range 50 {
		all = append(all, runDeliveries(n, outageStart.Add(time.Duration(n)*time.Minute))...)
	}
	log := newMemLog()
	rt := newReconcileTest(t, log, Hook{Repository: testRepo, ID: testHookID})
	path := fakehooks.RepoHook(testRepo, testHookID)
	rt.gh.Add(path, all...)

	rt.gh.FailPage(path, 2)
	if err := rt.r.pass(context.Background()); err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("pass with a failing second page: %v, want the 502", err)
	}
	if n := len(log.ingested()); n != 0 {
		t.Fatalf("%d ingested from an incomplete list, want 0", n)
	}
	rt.gh.FailPage(path, 0)
	rt.gh.FailGetsAfter(path, 40)
	rt.requests()
	rt.clock.Advance(time.Minute)
	if err := rt.r.pass(context.Background()); err == nil {
		t.Fatal("pass with failing gets succeeded")
	}
	if n := len(log.ingested()); n != 40 {
		t.Fatalf("%d ingested before the failing get, want 40", n)
	}
	if st := rt.r.Status()[0]; st.LastPass != nil || st.LastError == "" {
		t.Errorf("status after failures %+v, want no complete pass and the error", st)
	}
	rt.gh.FailGetsAfter(path, -1)
	rt.requests()
	rt.clock.Advance(time.Minute)
	if err := rt.r.pass(context.Background()); err != nil {
		t.Fatalf("pass: %v", err)
	}
	if lists, gets := rt.requests(); lists != 2 || gets != 110 {
		t.Errorf("resumed pass made %d list and %d get requests, want 2 and 110", lists, gets)
	}
	got := log.ingested()
	if len(got) != 150 {
		t.Fatalf("%d ingested in all, want 150", len(got))
	}
	for i, e := range got {
		if e.DeliveryID != all[i].GUID {
			t.Fatalf("entry %d is %s, want %s: each once, oldest first", i, e.DeliveryID, all[i].GUID)
		}
	}
}

// TestReconcileSkipsMalformed: a recorded payload the webhook handler
// would refuse is skipped and counted, and the pass goes on past it.
func TestReconcileSkipsMalformed(t *testing.T) {
	ds := runDeliveries(1, outageStart)
	ds[0].Payload = fixtures.MustEdit(ds[0].Payload, map[string]any{"workflow_run.created_at": "1970-01-01T00:00:00Z"})
	rt := newReconcileTest(t, newMemLog(), Hook{Organization: testOrg, ID: 42})
	rt.gh.Add(fakehooks.OrgHook(testOrg, 42), ds...)
	if err := rt.r.pass(context.Background()); err != nil {
		t.Fatalf("pass: %v", err)
	}
	if n := len(rt.log.ingested()); n != 2 {
		t.Errorf("%d ingested, want the 2 well-formed deliveries", n)
	}
	if v := testutil.ToFloat64(rt.r.skipped.WithLabelValues("octo-org#42", skipMalformed)); v != 1 {
		t.Errorf(`skipped_total{reason="malformed"} = %v, want 1`, v)
	}
}

// TestReconcileRateLimited: GitHub's 403 with no requests left is the rate
// limit, not a refused hook: the pass ends at once (the other hook is not
// asked), no refusal is logged, and the schedule waits until the reset.
func TestReconcileRateLimited(t *testing.T) {
	rt := newReconcileTest(t, newMemLog(), Hook{Repository: testRepo, ID: testHookID}, Hook{Organization: testOrg, ID: 42})
	reset := rt.clock.Now().Add(20 * time.Minute)
	rt.gh.RateLimit(reset)
	err := rt.r.pass(context.Background())
	var rl *rateLimitedError
	if !errors.As(err, &rl) || !rl.until.Equal(reset.Truncate(time.Second)) {
		t.Fatalf("pass: %v, want rate limited until %v", err, reset)
	}
	if lists, gets := rt.requests(); lists != 1 || gets != 0 {
		t.Errorf("%d list and %d get requests, want 1 (the second hook waits for the reset)", lists, gets)
	}
	if strings.Contains(rt.logs.String(), "refuses") {
		t.Errorf("a rate limit logged as a refused hook:\n%s", rt.logs.String())
	}
	if d := rt.r.sched.record(err); d != reset.Truncate(time.Second).Sub(rt.clock.Now()) {
		t.Errorf("next pass in %v, want at the reset", d)
	}
}
