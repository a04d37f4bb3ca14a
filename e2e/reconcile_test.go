package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/internal/fakehooks"
	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
)

const (
	hookRepo = "octo-org/octo-repo"
	hookID   = 109948940
)

// hookConfig is coreConfig with a github section that reads the hook's
// deliveries back from the fake GitHub every interval (0: never).
func hookConfig(apiURL, interval string) string {
	return `
github:
  owner: octo-org
  repo: octo-repo
  token: e2e-token
  api_url: ` + apiURL + `
  poll_interval: 0
  hooks:
    - { repository: ` + hookRepo + `, id: ` + fmt.Sprint(hookID) + ` }
  reconcile_interval: ` + interval + `
` + coreConfig
}

// outage is 40 runs of the published examples, 120 deliveries, with what
// GitHub records of each: ids, guids (the delivery ids) and delivery times
// ten seconds apart, ending an hour ago.
func outage(t *testing.T) ([]delivery, []fakehooks.Delivery) {
	var sent []delivery
	for i := range 40 {
		conclusion := "success"
		if i%4 == 3 {
			conclusion = "failure"
		}
		sent = append(sent, exampleRun(t, 7000+int64(i), conclusion)...)
	}
	first := time.Now().Add(-time.Hour - time.Duration(len(sent))*10*time.Second).Truncate(time.Second)
	recorded := make([]fakehooks.Delivery, len(sent))
	for i, d := range sent {
		var action struct {
			Action string `json:"action"`
		}
		if err := json.Unmarshal(d.body, &action); err != nil {
			t.Fatal(err)
		}
		recorded[i] = fakehooks.Delivery{
			ID: int64(1000 + i), GUID: d.headers["X-GitHub-Delivery"], Event: d.headers["X-GitHub-Event"], Action: action.Action,
			DeliveredAt: first.Add(time.Duration(i) * 10 * time.Second), Payload: d.body,
		}
	}
	return sent, recorded
}

// runsWithoutRecovery is the run JSON of every run, without what differs
// between a run received whole and one read back: the recovered marks and
// when the exporter first saw it.
func runsWithoutRecovery(t *testing.T, e *exporter) ([]map[string]any, int) {
	t.Helper()
	a := e.get("/api/pipeline-runs?limit=500")
	var l struct {
		Data struct {
			Runs []map[string]any `json:"runs"`
		} `json:"data"`
	}
	a.decode(t, &l)
	marks := 0
	unmark := func(v any) {
		if m, ok := v.(map[string]any); ok {
			if m["recovered"] == true {
				marks++
			}
			delete(m, "recovered")
		}
	}
	for _, r := range l.Data.Runs {
		delete(r, "seen_at")
		unmark(r["trigger"])
		unmark(r["github"])
		if ts, ok := r["triggers"].([]any); ok {
			for _, tr := range ts {
				unmark(tr)
			}
		}
	}
	return l.Data.Runs, marks
}

// TestRecoverOutage: an exporter that received the first 15 of 120
// deliveries and was down for the other 105 (GitHub recorded them as
// failed) reads them back at its next start, exactly once: its runs, jobs
// included, are those of an exporter that received everything, marked
// recovered. What it received is never fetched; a pass with nothing new
// lists one page; the original arriving late is a duplicate.
func TestRecoverOutage(t *testing.T) {
	gh := fakehooks.New()
	defer gh.Close()
	hook := fakehooks.RepoHook(hookRepo, hookID)
	sent, recorded := outage(t)

	// The exporter that received everything.
	whole := startExporter(t, writeConfig(t, hookConfig(gh.URL, "0")), filepath.Join(t.TempDir(), "data"))
	for _, d := range sent {
		whole.mustPost(d, http.StatusAccepted)
	}
	want, _ := runsWithoutRecovery(t, whole)
	if len(want) != 40 {
		t.Fatalf("%d runs from the whole stream, want 40", len(want))
	}

	// The exporter that went down after 15 deliveries.
	cfg := writeConfig(t, hookConfig(gh.URL, "1s"))
	data := filepath.Join(t.TempDir(), "data")
	e := startExporter(t, cfg, data)
	for _, d := range sent[:15] {
		e.mustPost(d, http.StatusAccepted)
	}
	for i := range recorded[:15] {
		recorded[i].StatusCode = http.StatusAccepted
	}
	gh.Add(hook, recorded[:15]...)
	time.Sleep(1500 * time.Millisecond) // a pass over what it has
	e.stop(syscall.SIGTERM)
	gh.Add(hook, recorded[15:]...) // failed to connect: StatusCode 0
	restarted := time.Now()
	e = startExporter(t, cfg, data)

	deadline := time.Now().Add(30 * time.Second)
	for {
		if v, _ := e.metric(`pipeline_exporter_github_deliveries_recovered_total{hook="octo-org/octo-repo#109948940"}`); v == "105" {
			t.Logf("105 deliveries recovered %v after the restart", time.Since(restarted).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			v, _ := e.metric(`pipeline_exporter_github_deliveries_recovered_total{hook="octo-org/octo-repo#109948940"}`)
			t.Fatalf("recovered_total = %q after 30s, want 105; status %s", v, e.get("/api/status").body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got, marks := runsWithoutRecovery(t, e)
	if !reflect.DeepEqual(got, want) {
		for i := range min(len(got), len(want)) {
			if !reflect.DeepEqual(got[i], want[i]) {
				g, _ := json.Marshal(got[i])
				w, _ := json.Marshal(want[i])
				t.Fatalf("runs differ from those received whole (%d and %d runs); first difference:\n got %s\nwant %s", len(got), len(want), g, w)
			}
		}
		t.Fatalf("%d runs, want %d", len(got), len(want))
	}
	// Runs 6-40 were opened by a recovered delivery: their trigger, the
	// first in triggers[], and their github object say so.
	if marks != 35*3 {
		t.Errorf("%d recovered marks, want %d", marks, 35*3)
	}

	received := map[string]bool{}
	for _, d := range recorded[:15] {
		received[fmt.Sprintf("%s/deliveries/%d", hook, d.ID)] = true
	}
	gets := 0
	for _, r := range gh.Requests() {
		if strings.Contains(r.Path, "/deliveries/") {
			gets++
			if received[r.Path] {
				t.Errorf("fetched %s, which the exporter had received", r.Path)
			}
		}
	}
	if gets != 105 {
		t.Errorf("%d deliveries fetched, want the 105 missed", gets)
	}

	// Passes with nothing new: one first page each, nothing fetched.
	time.Sleep(2500 * time.Millisecond)
	later := gh.Requests()
	if len(later) == 0 {
		t.Fatal("no pass in 2.5s with reconcile_interval 1s")
	}
	for _, r := range later {
		if strings.Contains(r.Path, "/deliveries/") || r.Cursor != "" {
			t.Errorf("a pass with nothing new asked %s cursor %q", r.Path, r.Cursor)
		}
	}
	if v, _ := e.metric(`pipeline_exporter_poll_requests_total{code="200",endpoint="deliveries",source="github"}`); v == "" {
		t.Error(`no pipeline_exporter_poll_requests_total{endpoint="deliveries"}`)
	}
	if _, ok := e.metric(`pipeline_exporter_github_reconcile_last_success_timestamp_seconds{hook="octo-org/octo-repo#109948940"}`); !ok {
		t.Error("no pipeline_exporter_github_reconcile_last_success_timestamp_seconds")
	}

	// The original arrives late: a duplicate.
	a := e.mustPost(sent[60], http.StatusOK)
	if !strings.Contains(string(a.body), `"outcome":"duplicate"`) {
		t.Errorf("late original answered %s, want duplicate", a.body)
	}
	var status struct {
		Data struct {
			Hooks []struct {
				Hook      string     `json:"hook"`
				LastPass  *time.Time `json:"last_pass"`
				Recovered int        `json:"recovered"`
				LastError string     `json:"last_error"`
			} `json:"hooks"`
		} `json:"data"`
	}
	e.get("/api/status").decode(t, &status)
	if h := status.Data.Hooks; len(h) != 1 || h[0].Hook != "octo-org/octo-repo#109948940" || h[0].LastPass == nil || h[0].Recovered != 105 || h[0].LastError != "" {
		t.Errorf("/api/status hooks = %+v", h)
	}
	if page := string(e.get("/runs/40").body); !strings.Contains(page, `class="recovered"`) {
		t.Error("the page of a recovered run does not say so")
	}
}

// TestRecoverRefusedHook: a token without the webhook permission gets 403;
// the exporter logs once how to fix it and shows it in /api/status.
func TestRecoverRefusedHook(t *testing.T) {
	gh := fakehooks.New()
	defer gh.Close()
	gh.Fail(fakehooks.RepoHook(hookRepo, hookID), http.StatusForbidden)
	e := startExporter(t, writeConfig(t, hookConfig(gh.URL, "1s")), filepath.Join(t.TempDir(), "data"))
	time.Sleep(2500 * time.Millisecond)
	if n := strings.Count(e.logs.String(), "GitHub refuses to list the deliveries of a hook"); n != 1 {
		t.Errorf("refusal logged %d times over several passes, want once:\n%s", n, e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "admin:repo_hook") {
		t.Error("the log does not name the permission")
	}
	body := string(e.get("/api/status").body)
	if !strings.Contains(body, `"last_error":"list the deliveries of hook octo-org/octo-repo#109948940`) || !strings.Contains(body, "403") {
		t.Errorf("/api/status does not show the refusal: %s", body)
	}
	if code := readyCode(e); code != http.StatusOK {
		t.Errorf("/-/ready = %d with a refused hook", code)
	}
}

// TestRecoverOnlyOnLeader: two replicas on PostgreSQL with the same hooks;
// only the leader asks GitHub and appends what it recovers; when it dies
// the other, on gaining the leadership, reads back what was missed
// meanwhile. Every delivery is in the log once.
func TestRecoverOnlyOnLeader(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	gh := fakehooks.New()
	defer gh.Close()
	hook := fakehooks.RepoHook(hookRepo, hookID)
	_, recorded := outage(t)
	gh.Add(hook, recorded[:60]...)

	cfg := writeConfig(t, hookConfig(gh.URL, "1s"))
	a := startReplica(t, cfg, dbURL, freeAddr(t))
	b := startReplica(t, cfg, dbURL, freeAddr(t))
	leader := waitOneLeader(t, 10*time.Second, a, b)
	follower := map[*exporter]*exporter{a: b, b: a}[leader]

	waitRuns := func(e *exporter, n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for len(e.allRuns("&status=success,failed")) != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d finished runs after 30s, want %d", len(e.allRuns("&status=success,failed")), n)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitRuns(follower, 20)
	time.Sleep(1500 * time.Millisecond) // more passes
	if v, _ := leader.metric(`pipeline_exporter_github_deliveries_recovered_total{hook="octo-org/octo-repo#109948940"}`); v != "60" {
		t.Errorf("the leader recovered %q, want 60", v)
	}
	for _, series := range []string{
		`pipeline_exporter_github_deliveries_recovered_total{hook="octo-org/octo-repo#109948940"}`,
		`pipeline_exporter_poll_requests_total{code="200",endpoint="deliveries",source="github"}`,
	} {
		if v, ok := follower.metric(series); ok {
			t.Errorf("the follower has %s %s: it asked GitHub", series, v)
		}
	}
	if body := string(follower.get("/api/status").body); !strings.Contains(body, `"hooks":[]`) {
		t.Errorf("follower /api/status hooks: %s", body)
	}

	// The leader dies; GitHub records 60 more deliveries nobody received.
	leader.stop(syscall.SIGKILL)
	gh.Add(hook, recorded[60:]...)
	waitOneLeader(t, 15*time.Second, follower)
	waitRuns(follower, 40)

	conn := dbConn(t, dbURL)
	rows := logRows(t, conn)
	for _, d := range recorded {
		if r, ok := rows[d.GUID]; !ok || r.count != 1 || !r.applied {
			t.Errorf("delivery %s in the log: %+v, want once and applied", d.GUID, r)
		}
	}
	if v, _ := follower.metric(`pipeline_exporter_github_deliveries_recovered_total{hook="octo-org/octo-repo#109948940"}`); v != "60" {
		t.Errorf("the new leader recovered %q, want the 60 missed since", v)
	}
}
