package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
)

// The replica tests run two instances of the real binary on one real
// PostgreSQL 15 database (docs/operations.md, "Several instances on PostgreSQL") and send them
// signed GitHub deliveries through a client that behaves like a load
// balancer: a request a replica refuses (connection refused or reset, or a
// 5xx) is sent again to the other replica. A delivery is lost when it got
// a 2xx and is not applied exactly once; refused when every replica
// refused it.

// balancer spreads requests over replica addresses round robin and
// retries a refused request on the next replica.
type balancer struct {
	urls   []string
	next   atomic.Uint64
	client *http.Client
}

func newBalancer(replicas ...*exporter) *balancer {
	b := &balancer{client: &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 32},
	}}
	for _, r := range replicas {
		b.urls = append(b.urls, r.url)
	}
	return b
}

// sent is what became of one delivery.
type sent struct {
	code    int
	outcome string
	// tries is how many replicas were asked: more than one when the first
	// refused.
	tries int
	err   error
	start time.Time
	end   time.Time
}

func (b *balancer) send(d delivery) sent {
	s := sent{start: time.Now()}
	first := int(b.next.Add(1))
	for i := range b.urls {
		s.tries = i + 1
		s.code, s.outcome, s.err = b.post(b.urls[(first+i)%len(b.urls)], d)
		if s.err == nil && s.code < 500 {
			break
		}
	}
	s.end = time.Now()
	return s
}

func (b *balancer) post(base string, d delivery) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, base+d.path, bytes.NewReader(d.body))
	if err != nil {
		return 0, "", err
	}
	for k, v := range d.headers {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	var a struct {
		Data struct {
			Outcome string `json:"outcome"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &a)
	return resp.StatusCode, a.Data.Outcome, nil
}

// runDelivery is a signed workflow_run "requested" delivery that opens a
// run of its own: the published example with the given run id and fresh
// timestamps.
func runDelivery(prefix string, runID int64) delivery {
	now := time.Now().UTC().Format(time.RFC3339)
	body := fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/requested.json"), map[string]any{
		"workflow_run.id": runID, "workflow_run.created_at": now, "workflow_run.updated_at": now,
	})
	return githubDelivery(githubSecret, "workflow_run", fmt.Sprintf("%s-%d", prefix, runID), body)
}

// load is a paced stream of distinct deliveries from 16 clients.
type load struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	acked   map[string]int64 // delivery id → run id, answered 2xx
	results []sent
	refused []string // delivery ids refused by every replica
	bad     []string // answers that are neither 2xx nor a refusal
}

// startLoad sends rate deliveries a second (as fast as 16 clients can
// when rate is 0) through b until stopped or max were sent; run ids start
// after firstRunID.
func startLoad(b *balancer, prefix string, firstRunID int64, rate, max int) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{}), acked: map[string]int64{}}
	work := make(chan int64)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runID := range work {
				d := runDelivery(prefix, runID)
				s := b.send(d)
				id := d.headers["X-GitHub-Delivery"]
				l.mu.Lock()
				l.results = append(l.results, s)
				switch {
				case s.err == nil && s.code >= 200 && s.code < 300:
					l.acked[id] = runID
				case s.err != nil || s.code >= 500:
					l.refused = append(l.refused, fmt.Sprintf("%s (%d %v)", id, s.code, s.err))
				default:
					l.bad = append(l.bad, fmt.Sprintf("%s: %d", id, s.code))
				}
				l.mu.Unlock()
			}
		}()
	}
	go func() {
		defer close(l.done)
		defer wg.Wait()
		defer close(work)
		var pace <-chan time.Time
		if rate > 0 {
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			pace = tick.C
		}
		for i := int64(1); i <= int64(max); i++ {
			if pace != nil {
				select {
				case <-l.stop:
					return
				case <-pace:
				}
			}
			select {
			case <-l.stop:
				return
			case work <- firstRunID + i:
			}
		}
	}()
	return l
}

// finish stops the load and waits for the requests in flight.
func (l *load) finish() {
	close(l.stop)
	<-l.done
}

// retried counts deliveries a replica refused and the other took.
func (l *load) retried() int {
	n := 0
	for _, s := range l.results {
		if s.tries > 1 && s.err == nil && s.code < 300 {
			n++
		}
	}
	return n
}

// firstAppliedAfter is how long after t the first delivery sent after t
// was answered with the leader's outcome (not queued): when a leader was
// applying again.
func (l *load) firstAppliedAfter(t time.Time) (time.Duration, bool) {
	var first time.Time
	for _, s := range l.results {
		if s.start.After(t) && s.outcome == "accepted" && (first.IsZero() || s.end.Before(first)) {
			first = s.end
		}
	}
	return first.Sub(t), !first.IsZero()
}

// checkRefusedNone fails the test when a delivery was refused by every
// replica or answered other than 2xx or 5xx.
func (l *load) checkRefusedNone(t *testing.T) {
	t.Helper()
	if len(l.bad) > 0 {
		t.Errorf("%d unexpected answers, first: %s", len(l.bad), l.bad[0])
	}
	if len(l.refused) > 0 {
		t.Errorf("%d of %d deliveries refused by both replicas, first: %s", len(l.refused), len(l.results), l.refused[0])
	}
}

// waitApplied waits until the replica reports no log entry waiting for the
// leader.
func waitApplied(t *testing.T, e *exporter) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a := e.get("/api/status")
		var s struct {
			Data struct {
				Lag *int64 `json:"log_lag_entries"`
			} `json:"data"`
		}
		if a.code == http.StatusOK && json.Unmarshal(a.body, &s) == nil && s.Data.Lag != nil && *s.Data.Lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log entries still unapplied after 20s: %d %s", a.code, a.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkExactlyOnce fails the test unless every acknowledged delivery is in
// the shared log once and applied, and its run is in the surviving
// replica's /api once. It returns the number of acknowledged deliveries.
func checkExactlyOnce(t *testing.T, e *exporter, dbURL string, acked map[string]int64) int {
	t.Helper()
	waitApplied(t, e)
	runs := map[int64]int{}
	for _, r := range e.allRuns("") {
		if r.GitHub != nil {
			runs[r.GitHub.RunID]++
		}
	}
	log := logRows(t, dbConn(t, dbURL))
	lost := 0
	for id, runID := range acked {
		row := log[id]
		if row.count != 1 || !row.applied || runs[runID] != 1 {
			lost++
			if lost <= 5 {
				t.Errorf("delivery %s acknowledged: %d in the log (applied %v), run %d %d times in /api", id, row.count, row.applied, runID, runs[runID])
			}
		}
	}
	for runID, n := range runs {
		if n > 1 {
			t.Errorf("GitHub run %d is %d runs in /api", runID, n)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged deliveries not applied exactly once", lost, len(acked))
	}
	return len(acked)
}

// waitOneLeader waits until exactly one of the replicas says it leads and
// returns it.
func waitOneLeader(t *testing.T, within time.Duration, replicas ...*exporter) *exporter {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var leaders []*exporter
		for _, r := range replicas {
			if leads(r) {
				leaders = append(leaders, r)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d leaders after %v, want 1", len(leaders), within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkStaysOneLeader samples both replicas for d and fails the test when
// the number of leaders is ever other than one.
func checkStaysOneLeader(t *testing.T, d time.Duration, replicas ...*exporter) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		n := 0
		for _, r := range replicas {
			// A status that cannot be read says nothing about leading:
			// read it again, and say why, before counting the replica.
			lead, err := leaderStatus(r)
			for try := 0; err != nil && try < 3; try++ {
				t.Logf("%s: reading /api/status: %v; reading it again", r.url, err)
				time.Sleep(100 * time.Millisecond)
				lead, err = leaderStatus(r)
			}
			if err != nil {
				t.Fatalf("%s: /api/status unreadable: %v", r.url, err)
			}
			if lead {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d replicas lead, want exactly 1", n)
		}
	}
	for _, r := range replicas {
		want := "0"
		if leads(r) {
			want = "1"
		}
		if v, _ := r.metric("pipeline_exporter_leader"); v != want {
			t.Errorf("%s: pipeline_exporter_leader = %q, /api/status says %s", r.url, v, want)
		}
	}
}

// twoReplicas starts two replicas on a new database; cfg is their
// configuration file.
func twoReplicas(t *testing.T) (a, b *exporter, dbURL, cfg string) {
	t.Helper()
	dbURL = pgtest.NewDatabase(t)
	cfg = writeConfig(t, coreConfig)
	a = startReplica(t, cfg, dbURL, freeAddr(t))
	b = startReplica(t, cfg, dbURL, freeAddr(t))
	return a, b, dbURL, cfg
}

func TestReplicaKill9LeaderUnderLoad(t *testing.T) {
	a, b, dbURL, _ := twoReplicas(t)
	leader := waitOneLeader(t, 5*time.Second, a, b)
	survivor := a
	if leader == a {
		survivor = b
	}

	l := startLoad(newBalancer(a, b), "kill9", 10_000_000, 200, 3000)
	time.Sleep(2 * time.Second)
	killed := time.Now()
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var failover time.Duration
	for !leads(survivor) {
		if time.Since(killed) > 5*time.Second {
			l.finish()
			t.Fatalf("no new leader 5s after kill -9 of the leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	failover = time.Since(killed)
	time.Sleep(3 * time.Second)
	l.finish()

	if v, _ := survivor.metric("pipeline_exporter_leader"); v != "1" {
		t.Errorf("survivor's pipeline_exporter_leader = %q, want 1", v)
	}
	applying, ok := l.firstAppliedAfter(killed)
	if !ok {
		t.Errorf("no delivery sent after the kill was applied within its answer")
	}
	l.checkRefusedNone(t)
	n := checkExactlyOnce(t, survivor, dbURL, l.acked)
	t.Logf("kill -9 of the leader at 200/s: failover %v (survivor leads), %v to the first delivery applied within its answer; %d sent, %d acknowledged, 0 lost, %d refused by both, %d retried on the survivor",
		failover.Round(time.Millisecond), applying.Round(time.Millisecond), len(l.results), n, len(l.refused), l.retried())
}

func TestReplicaRollingRestartUnderLoad(t *testing.T) {
	a, b, dbURL, cfg := twoReplicas(t)
	waitOneLeader(t, 5*time.Second, a, b)

	l := startLoad(newBalancer(a, b), "rolling", 20_000_000, 200, 4000)
	time.Sleep(time.Second)
	var downtimes []time.Duration
	replicas := []*exporter{a, b}
	for i, r := range replicas {
		stopped := time.Now()
		if code := r.stop(syscall.SIGTERM); code != 0 {
			t.Errorf("exit code %d after SIGTERM", code)
		}
		replicas[i] = startReplica(t, cfg, dbURL, strings.TrimPrefix(r.url, "http://"))
		downtimes = append(downtimes, time.Since(stopped))
		time.Sleep(time.Second)
	}
	l.finish()

	l.checkRefusedNone(t)
	waitOneLeader(t, 5*time.Second, replicas...)
	n := checkExactlyOnce(t, replicas[0], dbURL, l.acked)
	t.Logf("rolling restart at 200/s (each replica SIGTERM, start, ready; out for %v): %d sent, %d acknowledged, 0 lost, %d refused by both, %d retried on the other replica",
		downtimes, len(l.results), n, len(l.refused), l.retried())
}

func TestReplicaSameDeliveryToBoth(t *testing.T) {
	a, b, dbURL, _ := twoReplicas(t)
	waitOneLeader(t, 5*time.Second, a, b)

	// Each delivery goes to both replicas at the same moment, as a sender
	// that timed out on one and retried on the other might.
	both := func(d delivery) []answer {
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			out   = make([]answer, 2)
		)
		for i, r := range []*exporter{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ans, err := r.post(d)
				if err != nil {
					t.Error(err)
				}
				out[i] = ans
			}()
		}
		close(start)
		wg.Wait()
		return out
	}
	const rounds = 20
	job := fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	for i := range int64(rounds) {
		runID := 30_000_000 + i
		jobBody := fixtures.MustEdit(job, map[string]any{"workflow_job.run_id": runID, "workflow_job.id": runID})
		for _, d := range []delivery{
			runDelivery("same", runID),
			githubDelivery(githubSecret, "workflow_job", fmt.Sprintf("same-job-%d", runID), jobBody),
		} {
			var outcomes []string
			for _, ans := range both(d) {
				var body struct {
					Data struct {
						Outcome string `json:"outcome"`
					} `json:"data"`
				}
				ans.decode(t, &body)
				outcomes = append(outcomes, fmt.Sprintf("%d %s", ans.code, body.Data.Outcome))
			}
			dup := 0
			for _, o := range outcomes {
				if o == "200 duplicate" {
					dup++
				} else if o != "202 accepted" && o != "202 queued" {
					t.Errorf("%s: answer %s", d.headers["X-GitHub-Delivery"], o)
				}
			}
			if dup != 1 {
				t.Errorf("%s sent to both replicas: answers %v, want one duplicate", d.headers["X-GitHub-Delivery"], outcomes)
			}
		}
	}

	waitApplied(t, a)
	log := logRows(t, dbConn(t, dbURL))
	if len(log) != 2*rounds {
		t.Errorf("%d deliveries in the log, want %d", len(log), 2*rounds)
	}
	for id, row := range log {
		if row.count != 1 || !row.applied {
			t.Errorf("delivery %s: %d entries (applied %v), want 1 applied", id, row.count, row.applied)
		}
	}
	runs := a.allRuns("")
	if len(runs) != rounds {
		t.Errorf("%d runs, want %d", len(runs), rounds)
	}
	for _, r := range runs {
		if got := stageNames(r); got != "trigger:success,linters:success" {
			t.Errorf("run %d stages = %s, want the job once", r.ID, got)
		}
	}
}

// leaderLockPID returns the PostgreSQL backend holding the leader's
// advisory lock in the test's database.
func leaderLockPID(t *testing.T, dbURL string) int {
	t.Helper()
	conn := dbConn(t, dbURL)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var pid int
		// The lock key 0x706970656c6561 ("pipelea") is split into classid
		// (high 32 bits) and objid (low 32 bits).
		err := conn.QueryRow(context.Background(), `SELECT pid FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND classid = x'706970'::int::oid AND objid = x'656c6561'::int::oid
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&pid)
		if err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backend holds the leader lock: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReplicaLeaderCutOffFromPostgres(t *testing.T) {
	a, b, dbURL, _ := twoReplicas(t)
	leader := waitOneLeader(t, 5*time.Second, a, b)
	l := startLoad(newBalancer(a, b), "cutoff", 40_000_000, 100, 2000)
	time.Sleep(time.Second)

	pid := leaderLockPID(t, dbURL)
	var terminated bool
	if err := dbConn(t, dbURL).QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, terminated, err)
	}
	cut := time.Now()
	// The deposed leader notices at its next renewal of the lease, or at
	// its next commit, which the new leader's epoch refuses, and stops its
	// applier.
	for logs := leader.logs.String(); !strings.Contains(logs, "Lost the leader lock") && !strings.Contains(logs, "gave up the leader lock"); logs = leader.logs.String() {
		if time.Since(cut) > 5*time.Second {
			t.Fatalf("the leader cut off from its lock did not stop applying within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopped := time.Since(cut)
	next := waitOneLeader(t, 5*time.Second, a, b)
	recovered := time.Since(cut)
	checkStaysOneLeader(t, 2*time.Second, a, b)
	l.finish()

	l.checkRefusedNone(t)
	n := checkExactlyOnce(t, next, dbURL, l.acked)
	if other := leaderLockPID(t, dbURL); other == pid {
		t.Errorf("the terminated backend %d still holds the leader lock", pid)
	}
	t.Logf("leader's lock connection terminated: it stopped applying after %v, one leader (the %s replica) after %v; %d acknowledged, all applied once, %d refused by both",
		stopped.Round(time.Millisecond), map[bool]string{true: "same", false: "other"}[next == leader], recovered.Round(time.Millisecond), n, len(l.refused))
}

func TestReplicaPostgresGoneMidLoad(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	proxy := newTCPProxy(t, hostOf(t, dbURL))
	proxy.up()
	viaProxy := withHost(t, dbURL, proxy.addr)
	cfg := writeConfig(t, coreConfig)
	a := startReplica(t, cfg, viaProxy, freeAddr(t))
	b := startReplica(t, cfg, viaProxy, freeAddr(t))
	waitOneLeader(t, 5*time.Second, a, b)

	l := startLoad(newBalancer(a, b), "gone", 50_000_000, 200, 3000)
	time.Sleep(1500 * time.Millisecond)
	proxy.down()
	wentDown := time.Now()
	// While the database is away the replicas say so: not ready, and
	// webhooks 503 so that a sender may retry.
	for _, r := range []*exporter{a, b} {
		for readyCode(r) != http.StatusServiceUnavailable {
			if time.Since(wentDown) > 5*time.Second {
				t.Fatalf("%s: /-/ready not 503 with the database gone", r.url)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	proxy.up()
	back := time.Now()
	for _, r := range []*exporter{a, b} {
		for readyCode(r) != http.StatusOK {
			if time.Since(back) > 10*time.Second {
				t.Fatalf("%s: not ready 10s after the database came back", r.url)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	readyAgain := time.Since(back)
	leader := waitOneLeader(t, 5*time.Second, a, b)
	leadAgain := time.Since(back)
	time.Sleep(2 * time.Second)
	l.finish()

	for _, r := range []*exporter{a, b} {
		select {
		case <-r.exited:
			t.Fatalf("%s exited: %v", r.url, r.cmd.ProcessState)
		default:
		}
	}
	if len(l.bad) > 0 {
		t.Errorf("%d answers neither 2xx nor 503, first: %s", len(l.bad), l.bad[0])
	}
	if len(l.refused) == 0 {
		t.Errorf("no delivery was refused while the database was gone")
	}
	for _, s := range l.results {
		if (s.err != nil || s.code >= 500) && s.code != http.StatusServiceUnavailable {
			t.Errorf("refused with %d %v, want 503 from a replica that is up", s.code, s.err)
			break
		}
	}
	ackedAfter := 0
	for _, s := range l.results {
		if s.start.After(back.Add(leadAgain)) && s.err == nil && s.code < 300 {
			ackedAfter++
		}
	}
	if ackedAfter == 0 {
		t.Errorf("no delivery acknowledged after the database came back")
	}
	checkStaysOneLeader(t, time.Second, a, b)
	n := checkExactlyOnce(t, leader, dbURL, l.acked)
	t.Logf("PostgreSQL gone for %v under 200/s: %d sent, %d refused (503) by both while it was gone, %d acknowledged, all applied once; ready again %v and one leader %v after it came back, without a restart",
		back.Sub(wentDown).Round(time.Millisecond), len(l.results), len(l.refused), n, readyAgain.Round(time.Millisecond), leadAgain.Round(time.Millisecond))
}

// TestReplicasAtFullSpeed: 16 clients sending as fast as they are answered
// through two replicas on PostgreSQL get no refusal, and every acknowledged
// delivery is applied exactly once. (Speed is make bench's to measure; the
// rate is only logged.)
func TestReplicasAtFullSpeed(t *testing.T) {
	const window = 4 * time.Second
	a, b, dbURL, _ := twoReplicas(t)
	waitOneLeader(t, 5*time.Second, a, b)
	l := startLoad(newBalancer(a, b), "full-speed", 60_000_000, 0, 1_000_000)
	start := time.Now()
	time.Sleep(window)
	l.finish()
	elapsed := time.Since(start)
	l.checkRefusedNone(t)
	if len(l.acked) == 0 {
		t.Fatal("nothing acknowledged")
	}
	checkExactlyOnce(t, a, dbURL, l.acked)
	t.Logf("%d deliveries acknowledged in %v through two replicas (%.0f/s)", len(l.acked), elapsed.Round(time.Millisecond), float64(len(l.acked))/elapsed.Seconds())
}

func TestReplicaPostgresDownAtStart(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	proxy := newTCPProxy(t, hostOf(t, dbURL))
	viaProxy := withHost(t, dbURL, proxy.addr)
	e := launchReplica(t, writeConfig(t, coreConfig), viaProxy, freeAddr(t))
	password := pgtest.Shared(t).Password()
	masked := strings.Replace(viaProxy, ":"+password+"@", ":xxxxx@", 1)

	// The listeners are up while the store is retried: the replica is
	// healthy but not ready, and webhooks are 503 so that a sender may
	// retry.
	deadline := time.Now().Add(10 * time.Second)
	for readyCode(e) != http.StatusServiceUnavailable || strings.Count(e.logs.String(), "PostgreSQL unavailable, retrying") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s with PostgreSQL down: /-/ready %d, want 503 and three retries logged", readyCode(e))
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := runDelivery("down", 80_000_001)
	if a, err := e.post(d); err != nil || a.code != http.StatusServiceUnavailable {
		t.Errorf("webhook with PostgreSQL down: %d %s %v, want 503", a.code, a.body, err)
	}
	if a := e.get("/-/healthy"); a.code != http.StatusOK {
		t.Errorf("/-/healthy = %d, want 200: the process is fine, its store is not", a.code)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, masked) {
		t.Errorf("logs do not name the URL %s", masked)
	}
	if strings.Contains(logs, password) {
		t.Errorf("logs contain the password")
	}
	var waits []string
	for _, line := range strings.Split(logs, "\n") {
		if _, w, ok := strings.Cut(line, "retry_in="); ok && strings.Contains(line, "PostgreSQL unavailable") {
			waits = append(waits, w)
		}
	}
	if len(waits) < 3 || waits[0] == waits[2] {
		t.Errorf("retry waits %v, want a growing backoff", waits)
	}
	select {
	case <-e.exited:
		t.Fatalf("exited with PostgreSQL down: %v", e.cmd.ProcessState)
	default:
	}

	proxy.up()
	up := time.Now()
	waitReady(t, e)
	if a, err := e.post(d); err != nil || a.code != http.StatusAccepted {
		t.Errorf("webhook once PostgreSQL is up: %d %s %v, want 202", a.code, a.body, err)
	}
	t.Logf("PostgreSQL down at start: 503 while retrying (waits %v), ready %v after it came up", waits, time.Since(up).Round(time.Millisecond))
}
