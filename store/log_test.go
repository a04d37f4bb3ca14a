package store

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

func entry(source pipeline.Source, id string) *pipeline.Entry {
	return &pipeline.Entry{Source: source, DeliveryID: id, Kind: "INSERT", ReceivedAt: t0, Body: []byte(`{"id":"` + id + `"}`),
		Events: []pipeline.Event{pipeline.TriggerEvent{Trigger: pipeline.Trigger{Source: source, Event: "INSERT", DeliveryID: id, ReceivedAt: t0}, Table: "posts", Type: "INSERT"}}}
}

// TestLog covers the delivery log's promises: sequence numbers in append
// order, a (source, delivery id) key that makes a redelivery a duplicate
// within a transaction, across transactions and after reopening, entries
// without an id that never collide, a rollback that leaves nothing, and
// unapplied entries read back whole, in order.
func TestLog(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})

	tx, err := s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch := []*pipeline.Entry{entry(pipeline.SourceSupabase, "a"), entry(pipeline.SourceSupabase, "a"), entry(pipeline.SourceGitHub, "a"),
		{Source: pipeline.SourceGitHub, Kind: pipeline.KindPoll, ReceivedAt: t0}, {Source: pipeline.SourceGitHub, Kind: pipeline.KindPoll, ReceivedAt: t0}}
	if err := tx.Append(batch); err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, e := range batch {
		seqs = append(seqs, e.Seq)
	}
	// A sequence may have gaps; it only ever increases.
	if seqs[1] != 0 || seqs[0] < 1 || !slices.IsSorted(slices.Delete(slices.Clone(seqs), 1, 2)) || slices.Contains(seqs[2:], 0) {
		tx.Rollback()
		t.Fatalf("seqs %v, want increasing numbers and 0 for the second (supabase, a), a duplicate", seqs)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	// A rolled-back append leaves no entry and no key.
	tx, _ = s.Begin(ctx)
	if err := tx.Append([]*pipeline.Entry{entry(pipeline.SourceSupabase, "b")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if hasEntry(t, s, pipeline.SourceSupabase, "b") {
		t.Fatal("a rolled-back entry is in the log")
	}

	unapplied, err := s.Unapplied(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(unapplied) != 4 || unapplied[0].Seq != seqs[0] || !reflect.DeepEqual(unapplied[0].Events, batch[0].Events) ||
		string(unapplied[0].Body) != string(batch[0].Body) || !unapplied[0].ReceivedAt.Equal(t0) || unapplied[3].DeliveryID != "" {
		t.Fatalf("unapplied = %+v", unapplied)
	}
	if err := commit(s, nil); err != nil {
		t.Fatal(err)
	}
	tx, _ = s.Begin(ctx)
	if err := tx.MarkApplied([]pipeline.AppliedEntry{{Seq: seqs[0]}, {Seq: seqs[2]}}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTest(t, dir, Options{})
	if unapplied, _ = s.Unapplied(ctx, 10); len(unapplied) != 2 || unapplied[0].Seq != seqs[3] {
		t.Fatalf("after reopening, unapplied = %+v, want seqs %v", unapplied, seqs[3:])
	}
	again := []*pipeline.Entry{entry(pipeline.SourceSupabase, "a"), entry(pipeline.SourceSupabase, "b")}
	if err := commit(s, again); err != nil {
		t.Fatal(err)
	}
	if again[0].Seq != 0 || again[1].Seq <= seqs[4] {
		t.Errorf("after reopening: seqs %d %d, want 0 (duplicate) and one past %d", again[0].Seq, again[1].Seq, seqs[4])
	}
}

// TestRestoreState: the change sequence and the held job events committed
// with the runs come back after reopening.
func TestRestoreState(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	held := []pipeline.HeldJob{{Job: pipeline.WorkflowJobEvent{RunID: 30433642, RunAttempt: 1, JobID: 399444496, Name: "build", Status: "queued", CreatedAt: t0}, HeldAt: t0}}
	r1 := testRun(1, "site", pipeline.StatusRunning, pipeline.SourceGitHub, t0)
	r1.ChangeSeq = 7
	r2 := testRun(2, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0)
	r2.ChangeSeq = 8
	tx, _ := s.Begin(ctx)
	if err := tx.SaveRuns([]*pipeline.Run{r1, r2}); err != nil {
		t.Fatal(err)
	}
	if err := tx.SaveHeld(held); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, Options{})
	r, err := s.Restore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.MaxChangeSeq != 8 || r.MaxRunID != 2 || !reflect.DeepEqual(r.Held, held) || len(r.Active) != 1 || r.Active[0].ChangeSeq != 7 {
		t.Fatalf("restored %+v", r)
	}
	changed, err := s.ChangedAfter(ctx, 7, 10)
	if err != nil || len(changed) != 1 || changed[0].ID != 2 {
		t.Fatalf("ChangedAfter(7) = %v, %v; want run 2", runIDs(changed), err)
	}
}

// TestDirLock: a second exporter on the same storage directory is refused
// with the holder's PID; the lock goes with the process that held it.
func TestDirLock(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	_, err := Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), LockFileName) {
		t.Fatalf("second Open = %v, want a refusal naming PID %d and the lock file", err, os.Getpid())
	}
	s.Close()
	s = openTest(t, dir, Options{})
	s.Close()

	// A lock held by a process that was killed is released by the kernel.
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("flock(1) not installed")
	}
	cmd := exec.Command(flock, "-x", "-o", filepath.Join(dir, LockFileName), "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// flock(1) takes the lock a moment after it starts.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := Open(dir, Options{})
		if err != nil {
			break
		}
		s.Close()
		if time.Now().After(deadline) {
			t.Fatal("Open kept succeeding while flock(1) held the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// flock(1)'s child holds a copy of the locked descriptor from fork to
	// exec (-o closes it there): on a busy machine, a moment longer.
	for deadline = time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s, err := Open(dir, Options{})
		if err == nil {
			s.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Open after flock(1) was killed: %v", err)
		}
	}
}

// TestFileDeleted: the database file deleted under the running store
// refuses every transaction from then on and says so in Healthy.
func TestFileDeleted(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	submit(t, s, nil, testRun(1, "site", pipeline.StatusRunning, pipeline.SourceGitHub, t0))
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	if err := s.Healthy(); err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("Healthy() = %v, want the deletion", err)
	}
	if _, err := s.Begin(ctx); err == nil || !strings.Contains(err.Error(), s.Path()) {
		t.Errorf("Begin after deletion = %v, want a refusal naming the file", err)
	}
}

// TestWriteFailureRecovers makes the disk "full" the way SQLite itself sees
// it: max_page_count caps the file at its current size, so the next write
// fails with SQLITE_FULL, the error a full disk gives.
func TestWriteFailureRecovers(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	submit(t, s, nil, testRun(1, "site", pipeline.StatusPending, pipeline.SourceGitHub, t0))
	if _, err := s.wdb.Exec(`PRAGMA max_page_count = 1`); err != nil {
		t.Fatal(err)
	}
	big := &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: "big", Kind: "push", ReceivedAt: t0, Body: randomBytes(256 << 10)}
	if err := commit(s, []*pipeline.Entry{big}, testRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0)); err == nil {
		t.Fatal("commit on a full disk succeeded")
	}
	if s.Healthy() == nil || s.Errors() == 0 {
		t.Errorf("Healthy() = %v, Errors() = %d after a failed write", s.Healthy(), s.Errors())
	}
	if hasEntry(t, s, pipeline.SourceGitHub, "big") {
		t.Error("failed delivery is in the log")
	}
	if r, _ := s.Run(ctx, 1); r.Status != pipeline.StatusPending {
		t.Errorf("run status = %s after a failed write, want pending", r.Status)
	}
	if _, err := s.wdb.Exec(`PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatal(err)
	}
	big.Seq = 0
	if err := commit(s, []*pipeline.Entry{big}, testRun(1, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0)); err != nil {
		t.Fatal(err)
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() = %v after a successful commit", err)
	}
	if !hasEntry(t, s, pipeline.SourceGitHub, "big") {
		t.Error("retried delivery not in the log")
	}
}

func TestBackupErrors(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{})
	missing := filepath.Join(t.TempDir(), "no-such-folder", "backup.db")
	err := BackupDir(ctx, dir, missing)
	if err == nil || !strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "(14)") {
		t.Errorf("backup into a missing folder = %v, want it said in words", err)
	}
	if err := BackupDir(ctx, t.TempDir(), filepath.Join(t.TempDir(), "x.db")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backup of an empty directory = %v, want not exist", err)
	}
}

// TestWALStaysBounded: under a steady stream of commits the write-ahead
// log is checkpointed and restarted, not grown with every delivery.
func TestWALStaysBounded(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	body := randomBytes(20 << 10)
	for i := range 2000 { // about 40 MB of bodies, a commit each
		e := &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: strconv.Itoa(i), Kind: "workflow_run", ReceivedAt: t0, Body: body}
		if err := commit(s, []*pipeline.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(s.Path() + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 16<<20 {
		t.Errorf("WAL is %d MB after 40 MB of commits; want it checkpointed and restarted", fi.Size()>>20)
	}
}
