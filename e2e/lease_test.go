package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
)

// leaderLease is the replicas' --storage.leader-lease (the default).
const leaderLease = 5 * time.Second

// TestReplicaFrozenLeaderIsReplaced: a leader that stops working without
// dying (SIGSTOP: a stuck disk, a long pause) keeps its connection and its
// lock, but not its lease: the other replica ends its sessions and leads
// within the lease and 2 s; deliveries to it are applied, nothing
// acknowledged is lost, and once thawed the old leader applies nothing and
// says it does not lead.
func TestReplicaFrozenLeaderIsReplaced(t *testing.T) {
	a, b, dbURL, _ := twoReplicas(t)
	leader := waitOneLeader(t, 5*time.Second, a, b)
	other := a
	if leader == a {
		other = b
	}

	l := startLoad(newBalancer(a, b), "sigstop", 30_000_000, 100, 100_000)
	time.Sleep(2 * time.Second)
	frozen := time.Now()
	if err := leader.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = leader.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	for !leads(other) {
		if time.Since(frozen) > leaderLease+2*time.Second {
			thaw()
			l.finish()
			t.Fatalf("no new leader %v after SIGSTOP of the leader", leaderLease+2*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	takeover := time.Since(frozen)
	// The balancer's clients are stuck on the frozen replica by now (as a
	// sender would be until its timeout): deliveries straight to the new
	// leader are applied within their answer from the takeover on.
	direct := newBalancer(other)
	for i := range 20 {
		d := runDelivery("direct", 31_000_000+int64(i))
		code, outcome, err := direct.post(other.url, d)
		if err != nil || code != http.StatusAccepted || outcome != "accepted" {
			t.Errorf("delivery %d to the new leader after the takeover: %d %q %v, want 202 accepted", i, code, outcome, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	thaw()
	// The thawed leader finds its sessions ended and its lease taken: it
	// stops at its next renewal, about a second.
	time.Sleep(2 * time.Second)
	checkStaysOneLeader(t, 2*time.Second, a, b)
	l.finish()
	if !leads(other) {
		t.Errorf("the replica that took over no longer leads after the old leader thawed")
	}
	l.checkRefusedNone(t)
	n := checkExactlyOnce(t, other, dbURL, l.acked)
	t.Logf("SIGSTOP of the leader at 100/s (lease %v): the other replica led after %v and answered the 20 deliveries sent to it then accepted; %d sent through both, %d acknowledged, 0 lost, %d refused by both, %d retried",
		leaderLease, takeover.Round(time.Millisecond), len(l.results), n, len(l.refused), l.retried())
}

// TestReplicaRestoreIntoLiveDatabase: a dump restored into the live
// database under running replicas (pg_restore --clean, what the docs say
// not to do without stopping them) leaves the leader fenced out; within
// seconds exactly one replica leads and applies again, and what was
// acknowledged after the restore is applied.
func TestReplicaRestoreIntoLiveDatabase(t *testing.T) {
	bin := pgtest.BinDir
	if _, err := os.Stat(filepath.Join(bin, "pg_restore")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pg_restore not installed: %v", err)
		}
		t.Skipf("pg_restore not installed: %v", err)
	}
	a, b, dbURL, _ := twoReplicas(t)
	waitOneLeader(t, 5*time.Second, a, b)
	bal := newBalancer(a, b)
	before := startLoad(bal, "dumped", 40_000_000, 0, 50)
	before.finish()
	waitApplied(t, a)

	dump := filepath.Join(t.TempDir(), "pipeline.dump")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_dump"), "--format=custom", "--file="+dump, dbURL).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	// What arrives between the dump and the restore is lost with the
	// restore: that is what restoring an older state means.
	between := startLoad(bal, "between", 41_000_000, 0, 20)
	between.finish()
	if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_restore"), "--clean", "--if-exists", "--single-transaction", "--dbname="+dbURL, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore --clean: %v\n%s", err, out)
	}
	restored := time.Now()

	after := startLoad(bal, "restored", 42_000_000, 50, 400)
	leader := waitSteadyLeader(t, 10*time.Second, a, b)
	settled := time.Since(restored)
	after.finish()
	after.checkRefusedNone(t)
	n := checkExactlyOnce(t, leader, dbURL, after.acked)
	applying, ok := after.firstAppliedAfter(restored)
	if !ok {
		t.Errorf("no delivery sent after the restore was applied within its answer")
	}
	t.Logf("pg_restore --clean under two running replicas: one leader %v after the restore, first delivery applied within its answer after %v; %d acknowledged after the restore, all applied once",
		settled.Round(time.Millisecond), applying.Round(time.Millisecond), n)
}

// waitSteadyLeader waits until exactly one replica leads and keeps leading
// for 2 s, with the other at pipeline_exporter_leader 0, and returns it.
// A leader that finds the database restored under it steps down at its
// next renewal, and one replica leads again after it: the count may pass
// through 0 on the way.
func waitSteadyLeader(t *testing.T, within time.Duration, replicas ...*exporter) *exporter {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var leader *exporter
		steady := true
		for end := time.Now().Add(2 * time.Second); steady && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			var leaders []*exporter
			for _, r := range replicas {
				if leads(r) {
					leaders = append(leaders, r)
				}
			}
			steady = len(leaders) == 1 && (leader == nil || leaders[0] == leader)
			if steady {
				leader = leaders[0]
			}
		}
		if steady {
			checkStaysOneLeader(t, 500*time.Millisecond, replicas...)
			return leader
		}
	}
	t.Fatalf("no replica led steadily for 2s within %v", within)
	return nil
}

// TestWebhookAnsweredWithinFiveSecondsWhenBlocked: a transaction of
// another session holds the state row (every commit of the applier waits
// for it) or an exclusive lock on the log table, for 12 s. Every webhook,
// to the leader as to the follower, is answered within 5 s: `queued` when
// the delivery is durable in the log, else 503 with nothing stored. Once
// the lock is gone every acknowledged delivery is applied once.
func TestWebhookAnsweredWithinFiveSecondsWhenBlocked(t *testing.T) {
	for _, lock := range []struct {
		name, sql string
		// durable says whether the log can take a delivery meanwhile.
		durable bool
	}{
		{"state row", `SELECT 1 FROM state WHERE id = 1 FOR UPDATE`, true},
		{"log table", `LOCK TABLE log IN ACCESS EXCLUSIVE MODE`, false},
	} {
		t.Run(lock.name, func(t *testing.T) {
			a, b, dbURL, _ := twoReplicas(t)
			leader := waitOneLeader(t, 5*time.Second, a, b)
			follower := a
			if leader == a {
				follower = b
			}
			conn := dbConn(t, dbURL)
			ctx := context.Background()
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, lock.sql); err != nil {
				t.Fatal(err)
			}
			held := time.Now()
			type result struct {
				replica string
				s       sent
				id      string
				runID   int64
			}
			var (
				mu      sync.Mutex
				results []result
				wg      sync.WaitGroup
			)
			for i := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					target, name := leader, "leader"
					if i%2 == 1 {
						target, name = follower, "follower"
					}
					runID := int64(50_000_000 + i)
					d := runDelivery("blocked", runID)
					time.Sleep(time.Duration(i) * 200 * time.Millisecond)
					s := sent{start: time.Now()}
					s.code, s.outcome, s.err = newBalancer(target).post(target.url, d)
					s.end = time.Now()
					mu.Lock()
					results = append(results, result{name, s, d.headers["X-GitHub-Delivery"], runID})
					mu.Unlock()
				}()
			}
			wg.Wait()
			if held := time.Since(held); held < 8*time.Second {
				t.Fatalf("the lock was held for %v only; the test needs it held while the deliveries arrive", held)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}

			acked := map[string]int64{}
			var slowest time.Duration
			codes := map[string]int{}
			for _, r := range results {
				took := r.s.end.Sub(r.s.start)
				slowest = max(slowest, took)
				codes[fmt.Sprintf("%s %d %s", r.replica, r.s.code, r.s.outcome)]++
				switch {
				case r.s.err != nil:
					t.Errorf("%s: %v after %v", r.replica, r.s.err, took)
				case took > 5*time.Second:
					t.Errorf("%s answered %d after %v, want within 5s", r.replica, r.s.code, took)
				case r.s.code == http.StatusAccepted:
					acked[r.id] = r.runID
				case r.s.code == http.StatusServiceUnavailable && !lock.durable:
				default:
					t.Errorf("%s answered %d %q, want 202 (or 503 while the log is locked)", r.replica, r.s.code, r.s.outcome)
				}
			}
			rows := logRows(t, conn)
			for _, r := range results {
				if r.s.code == http.StatusServiceUnavailable && rows[r.id].count != 0 {
					t.Errorf("delivery %s answered 503 but stored", r.id)
				}
			}
			n := checkExactlyOnce(t, leader, dbURL, acked)
			t.Logf("%s locked by another session for 8s+: %d webhooks to the leader and the follower, slowest answer %v; answers %v; %d acknowledged, all applied once after",
				lock.name, len(results), slowest.Round(time.Millisecond), codes, n)
		})
	}
}

// TestReplicaTermsEndingUnderLoad: the leader's lock session is ended
// every second (its term ends mid-request) while 100 deliveries a second
// arrive and both replicas reload their configuration every second. No
// answer takes 5 s, no delivery is refused by both replicas, none sent for
// the first time is answered `duplicate`, every acknowledged one is
// applied once, and after a renewal period at most one replica leads.
func TestReplicaTermsEndingUnderLoad(t *testing.T) {
	a, b, dbURL, _ := twoReplicas(t)
	waitOneLeader(t, 5*time.Second, a, b)
	conn := dbConn(t, dbURL)
	ctx := context.Background()

	l := startLoad(newBalancer(a, b), "terms", 60_000_000, 100, 100_000)
	ended := 0
	for range 8 {
		time.Sleep(time.Second)
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(k.pid)) FROM pg_locks k
			WHERE k.locktype = 'advisory' AND k.granted
			AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		ended += n
		for _, r := range []*exporter{a, b} {
			r.reload(http.StatusOK)
		}
	}
	l.finish()
	if ended == 0 {
		t.Fatal("no leader's lock session was ended: the query found no advisory lock held")
	}
	time.Sleep(2 * time.Second)
	checkStaysOneLeader(t, time.Second, a, b)

	var slowest time.Duration
	outcomes := map[string]int{}
	for _, s := range l.results {
		slowest = max(slowest, s.end.Sub(s.start))
		outcomes[s.outcome]++
		if s.outcome == "duplicate" {
			t.Errorf("a delivery sent once was answered duplicate (%d, %d tries)", s.code, s.tries)
		}
	}
	for _, s := range l.results {
		// A refused delivery is retried on the other replica: a sent's
		// time spans its tries, each within 5 s.
		if took := s.end.Sub(s.start); took > time.Duration(s.tries)*5*time.Second {
			t.Errorf("a delivery took %v over %d tries, more than 5s each", took, s.tries)
		}
	}
	l.checkRefusedNone(t)
	n := checkExactlyOnce(t, waitOneLeader(t, 5*time.Second, a, b), dbURL, l.acked)
	t.Logf("leader's lock session ended %d times in 8s, both replicas reloaded every second, at 100/s: %d sent, %d acknowledged, all applied once, %d retried on the other replica, slowest %v over its tries; outcomes %v",
		ended, len(l.results), n, l.retried(), slowest.Round(time.Millisecond), outcomes)
}
