package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// terminateLeader ends the backend that holds the leader lock, as a
// PostgreSQL restart, a network cut or an operator would.
func terminateLeader(t *testing.T, url string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND ((classid::bigint << 32) | objid::bigint) = $1`, leaderLock).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d backends hold the leader lock, want 1", n)
	}
}

func entry(id string) *pipeline.Entry {
	return &pipeline.Entry{
		Source: pipeline.SourceGitHub, DeliveryID: id, Kind: "workflow_run", ReceivedAt: at(0),
		Body: []byte(`{}`), Events: []pipeline.Event{pipeline.WorkflowRunEvent{Repository: "acme/site", RunID: 1, RunAttempt: 1}},
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestLeaderFailover: one of two contenders leads; when its lock
// connection is terminated it stops leading and the other leads within
// 5 s, continuing with the entries the first left unapplied.
func TestLeaderFailover(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := open(t, url, Options{}), open(t, url, Options{})
	lostA := lead(t, a)

	first, second := entry("d1"), entry("d2")
	commit(t, a, func(tx pipeline.StorageTx) error {
		if err := tx.Append([]*pipeline.Entry{first, second}); err != nil {
			return err
		}
		return tx.MarkApplied([]pipeline.AppliedEntry{{Seq: first.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}}})
	})

	type result struct {
		lost <-chan struct{}
		err  error
		at   time.Time
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bLeads := make(chan result, 1)
	go func() {
		lost, err := b.Lead(ctx)
		bLeads <- result{lost, err, time.Now()}
	}()
	select {
	case r := <-bLeads:
		t.Fatalf("a second leader while the first holds the lock: %v", r.err)
	case <-time.After(time.Second):
	}
	if _, err := b.Begin(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower Begin: %v, want ErrNotLeader", err)
	}

	cut := time.Now()
	terminateLeader(t, url)
	var r result
	select {
	case r = <-bLeads:
	case <-time.After(5 * time.Second):
		t.Fatal("no new leader within 5 s of the leader's connection ending")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	failover := r.at.Sub(cut)
	select {
	case <-lostA:
	case <-time.After(2 * time.Second):
		t.Fatal("the deposed leader did not notice within 2 s")
	}
	noticed := time.Since(cut)
	t.Logf("failover: new leader %v after the old one's connection was terminated; the old one knew within %v", failover.Round(time.Millisecond), noticed.Round(time.Millisecond))
	if _, err := a.Begin(ctx); !errors.Is(err, ErrNotLeader) {
		t.Errorf("deposed leader Begin: %v, want ErrNotLeader", err)
	}
	if isClosed(r.lost) {
		t.Fatal("the new leader reports its leadership lost")
	}

	left, err := b.Unapplied(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Seq != second.Seq {
		t.Fatalf("new leader finds %d unapplied entries, want only seq %d", len(left), second.Seq)
	}
	commit(t, b, func(tx pipeline.StorageTx) error {
		return tx.MarkApplied([]pipeline.AppliedEntry{{Seq: second.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}}})
	})

	// The deposed store may stand again, and leads once the other resigns.
	aLeads := make(chan error, 1)
	go func() {
		_, err := a.Lead(ctx)
		aLeads <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if len(aLeads) != 0 {
		t.Fatal("two leaders")
	}
	resigned := time.Now()
	b.Close()
	if err := <-aLeads; err != nil {
		t.Fatal(err)
	}
	t.Logf("hand-over after Close: %v", time.Since(resigned).Round(time.Millisecond))
	if !isClosed(r.lost) {
		t.Error("Close did not end the leadership")
	}
}

// TestDeposedLeaderCommitFails: a leader that has not yet noticed that it
// lost the lock cannot commit, because the new leader moved the epoch.
func TestDeposedLeaderCommitFails(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := open(t, url, Options{}), open(t, url, Options{})
	lostA := lead(t, a)
	e := entry("d1")
	commit(t, a, func(tx pipeline.StorageTx) error { return tx.Append([]*pipeline.Entry{e}) })

	staleEpoch := a.epoch.Load()
	tx, err := a.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.MarkApplied([]pipeline.AppliedEntry{{Seq: e.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}}}); err != nil {
		t.Fatal(err)
	}
	terminateLeader(t, url)
	lead(t, b)
	<-lostA
	// Pretend the watcher had not noticed: only the check in the commit
	// stands between the old leader and a second applier.
	a.epoch.Store(staleEpoch)
	err = tx.Commit()
	if !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), "epoch") {
		t.Fatalf("deposed leader's commit: %v, want ErrNotLeader from the epoch check", err)
	}
	t.Logf("deposed commit refused: %v", err)
	left, err := b.Unapplied(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Seq != e.Seq {
		t.Errorf("after the refused commit, unapplied %d entries; want the entry still waiting", len(left))
	}
	// And without pretending, the deposed store refuses by itself.
	a.epoch.Store(0)
	if _, err := a.Begin(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Begin after losing the lock: %v", err)
	}
}

// TestSameDeliveryTwoStores sends each delivery to two replicas at the same
// moment: one entry per delivery.
func TestSameDeliveryTwoStores(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := open(t, url, Options{}), open(t, url, Options{})
	lead(t, a)
	const n = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	appended := map[string]int{}
	for i := range n {
		id := fmt.Sprintf("d%d", i)
		start := make(chan struct{})
		for j, s := range []*Store{a, b} {
			wg.Go(func() {
				e := entry(id)
				<-start
				var err error
				if j == 0 && i%2 == 0 {
					// The leader appends in its own transaction half the time.
					tx, berr := s.Begin(context.Background())
					if berr != nil {
						t.Error(berr)
						return
					}
					if err = tx.Append([]*pipeline.Entry{e}); err == nil {
						err = tx.Commit()
					} else {
						tx.Rollback()
					}
				} else {
					err = s.AppendShared(context.Background(), e)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if e.Seq != 0 {
					mu.Lock()
					appended[id]++
					mu.Unlock()
				}
			})
		}
		close(start)
	}
	wg.Wait()
	for i := range n {
		if id := fmt.Sprintf("d%d", i); appended[id] != 1 {
			t.Errorf("delivery %s appended %d times, want 1", id, appended[id])
		}
	}
	if lag, err := a.Lag(context.Background()); err != nil || lag != n {
		t.Errorf("Lag = %d, %v; want %d", lag, err, n)
	}
}

// TestFollowerWaitsForTheLeader: a follower appends, the leader hears of it,
// applies and commits, and the follower's WaitResult returns the outcome.
func TestFollowerWaitsForTheLeader(t *testing.T) {
	url := pgtest.NewDatabase(t)
	leader, follower := open(t, url, Options{}), open(t, url, Options{})
	lead(t, leader)
	ctx := context.Background()
	// Let both listeners start, and drain their first wake-ups.
	time.Sleep(300 * time.Millisecond)
	for len(leader.Appended()) > 0 {
		<-leader.Appended()
	}

	e := entry("d1")
	if err := follower.AppendShared(ctx, e); err != nil {
		t.Fatal(err)
	}
	if e.Seq == 0 {
		t.Fatal("AppendShared left Seq 0 for a new delivery")
	}
	dup := entry("d1")
	if err := follower.AppendShared(ctx, dup); err != nil || dup.Seq != 0 {
		t.Fatalf("duplicate AppendShared: seq %d, %v; want 0, nil", dup.Seq, err)
	}
	select {
	case <-leader.Appended():
	case <-time.After(2 * time.Second):
		t.Fatal("the leader was not told of the append")
	}
	if lag, err := follower.Lag(ctx); err != nil || lag != 1 {
		t.Fatalf("Lag = %d, %v; want 1", lag, err)
	}

	type waited struct {
		res pipeline.Result
		ok  bool
		err error
		at  time.Time
	}
	done := make(chan waited, 1)
	go func() {
		res, ok, err := follower.WaitResult(ctx, pipeline.SourceGitHub, "d1")
		done <- waited{res, ok, err, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond)
	want := pipeline.Result{Outcome: pipeline.OutcomeAccepted, RunIDs: []int64{4, 7}}
	committed := time.Now()
	commit(t, leader, func(tx pipeline.StorageTx) error {
		entries, err := leader.Unapplied(ctx, 10)
		if err != nil || len(entries) != 1 {
			return fmt.Errorf("Unapplied: %d entries, %w", len(entries), err)
		}
		return tx.MarkApplied([]pipeline.AppliedEntry{{Seq: entries[0].Seq, Result: want}})
	})
	w := <-done
	if w.err != nil || !w.ok || w.res.Outcome != want.Outcome || !slices.Equal(w.res.RunIDs, want.RunIDs) {
		t.Fatalf("WaitResult = %+v, %v, %v; want %+v", w.res, w.ok, w.err, want)
	}
	t.Logf("follower heard the outcome %v after the leader's commit", w.at.Sub(committed).Round(time.Millisecond))
	if w.at.Sub(committed) > resultPoll {
		t.Errorf("the outcome took %v, longer than the poll interval: the notification did not wake the waiter", w.at.Sub(committed))
	}
	if lag, err := follower.Lag(ctx); err != nil || lag != 0 {
		t.Errorf("Lag after applying = %d, %v; want 0", lag, err)
	}

	ignored := entry("d2")
	if err := follower.AppendShared(ctx, ignored); err != nil {
		t.Fatal(err)
	}
	commit(t, leader, func(tx pipeline.StorageTx) error {
		return tx.MarkApplied([]pipeline.AppliedEntry{{Seq: ignored.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeIgnored, Reason: "no pipeline"}}})
	})
	if res, ok, err := follower.WaitResult(ctx, pipeline.SourceGitHub, "d2"); err != nil || !ok || res.Outcome != pipeline.OutcomeIgnored || res.Reason != "no pipeline" {
		t.Errorf("WaitResult of an ignored entry: %+v, %v, %v", res, ok, err)
	}

	// Nobody applies: the follower answers "queued" after ResultWait.
	if err := follower.AppendShared(ctx, entry("d3")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, ok, err := follower.WaitResult(ctx, pipeline.SourceGitHub, "d3")
	if err != nil || ok {
		t.Errorf("WaitResult with no applier: %+v, %v, %v; want not ok", res, ok, err)
	}
	if d := time.Since(start); d < ResultWait || d > ResultWait+time.Second {
		t.Errorf("WaitResult with no applier returned after %v, want about %v", d, ResultWait)
	}
	// A caller that goes away stops the wait with its error.
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, _, err := follower.WaitResult(cctx, pipeline.SourceGitHub, "d3"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitResult with an ending context: %v", err)
	}
	if _, _, err := follower.WaitResult(ctx, pipeline.SourceGitHub, "nope"); err == nil {
		t.Error("WaitResult of a delivery not in the log succeeded")
	}
}

// TestPingFailsWhenTheDatabaseGoes: /-/ready follows Ping.
func TestPingFailsWhenTheDatabaseGoes(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := open(t, url, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	srv := pgtest.Shared(t)
	admin, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var db string
	if err := s.pool.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" WITH ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db); err != nil {
		t.Fatal(err)
	}
	err = s.Ping(ctx)
	if !errors.Is(err, pipeline.ErrUnavailable) {
		t.Fatalf("Ping with the database gone: %v, want ErrUnavailable", err)
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" WITH ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after the database came back: %v", err)
	}
}
