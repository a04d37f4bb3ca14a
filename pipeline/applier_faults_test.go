package pipeline

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// faultyStorage is a Storage in memory whose commits fail, or block until
// their context ends, on demand; it keeps the log, which entries are
// applied, and how often the Applier restored.
type faultyStorage struct {
	mu       sync.Mutex
	log      []*Entry // committed entries, in sequence order
	applied  map[int64]bool
	restores int
	// failCommits makes the next commits fail with failWith.
	failCommits int
	failWith    error
	// block makes Begin wait until its context ends.
	block bool
}

func newFaultyStorage() *faultyStorage { return &faultyStorage{applied: map[int64]bool{}} }

func (f *faultyStorage) Begin(ctx context.Context) (StorageTx, error) {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &faultyTx{f: f}, nil
}

func (f *faultyStorage) Unapplied(_ context.Context, limit int) ([]*Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*Entry
	for _, e := range f.log {
		if !f.applied[e.Seq] && len(out) < limit {
			c := *e
			out = append(out, &c)
		}
	}
	return out, nil
}

func (f *faultyStorage) Restore(context.Context) (*Restored, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	return &Restored{}, nil
}

func (f *faultyStorage) count() (entries, applied, restores int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.log), len(f.applied), f.restores
}

type faultyTx struct {
	f       *faultyStorage
	entries []*Entry
	applied []AppliedEntry
}

func (t *faultyTx) Append(entries []*Entry) error {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	next := int64(len(t.f.log))
	for _, e := range entries {
		e.Seq = 0
		dup := false
		for _, l := range append(t.f.log, t.entries...) {
			if e.DeliveryID != "" && l.Source == e.Source && l.DeliveryID == e.DeliveryID {
				dup = true
			}
		}
		if !dup {
			next++
			e.Seq = next
			t.entries = append(t.entries, e)
		}
	}
	return nil
}
func (t *faultyTx) MarkApplied(a []AppliedEntry) error {
	t.applied = append(t.applied, a...)
	return nil
}
func (*faultyTx) SaveRuns([]*Run) error                  { return nil }
func (*faultyTx) SaveHeld([]HeldJob) error               { return nil }
func (*faultyTx) SaveDiscovered([]Discovered) error      { return nil }
func (*faultyTx) FindGitHubRun(int64, int) (*Run, error) { return nil, nil }
func (*faultyTx) Rollback() error                        { return nil }
func (t *faultyTx) Commit() error {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	if t.f.failCommits > 0 {
		t.f.failCommits--
		return t.f.failWith
	}
	t.f.log = append(t.f.log, t.entries...)
	for _, a := range t.applied {
		t.f.applied[a.Seq] = true
	}
	return nil
}

func delivery(id string) *Entry {
	return &Entry{Source: SourceGitHub, DeliveryID: id, Kind: "ping", ReceivedAt: time.Now()}
}

// runApplier starts an Applier over st and returns it with the channel
// Run's error arrives on and the function that stops it.
func runApplier(t *testing.T, st Storage, opts ApplierOptions) (*Applier, <-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := NewApplier(ctx, st, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	done, returned := make(chan error, 1), make(chan struct{})
	go func() {
		done <- a.Run(ctx)
		close(returned)
	}()
	t.Cleanup(func() { cancel(); <-returned })
	return a, done, cancel
}

func TestApplierFailedCommitThenRestore(t *testing.T) {
	st := newFaultyStorage()
	st.failCommits, st.failWith = 1, errors.New("disk full")
	a, _, _ := runApplier(t, st, ApplierOptions{})
	ctx := context.Background()
	if _, err := a.Ingest(ctx, delivery("1")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ingest with a failing commit = %v, want ErrUnavailable", err)
	}
	res, err := a.Ingest(ctx, delivery("1"))
	if err != nil || res.Outcome != OutcomeIgnored {
		t.Fatalf("Ingest after the failure = %+v, %v; want applied (ignored: no events), not a duplicate", res, err)
	}
	if entries, applied, restores := st.count(); entries != 1 || applied != 1 || restores != 2 {
		t.Errorf("log %d entries, %d applied, %d restores; want 1, 1 and 2 (at start and after the failed commit)", entries, applied, restores)
	}
}

func TestApplierAbandonedSubmissionIsDropped(t *testing.T) {
	st := newFaultyStorage()
	ctx := context.Background()
	a, err := NewApplier(ctx, st, nil, ApplierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Run has not started: nothing takes the submission before its
	// context ends.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := a.Ingest(short, delivery("gone")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ingest = %v, want ErrUnavailable", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	if _, err := a.Ingest(ctx, delivery("kept")); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.log) != 1 || st.log[0].DeliveryID != "kept" {
		t.Errorf("log %v, want only the delivery whose submitter waited", st.log)
	}
}

func TestApplierStoppedAnswersAtOnce(t *testing.T) {
	st := newFaultyStorage()
	a, done, cancel := runApplier(t, st, ApplierOptions{})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after its context ended", err)
	}
	ctx := context.Background() // no deadline: only the Applier can answer
	start := time.Now()
	if _, err := a.Ingest(ctx, delivery("late")); !errors.Is(err, ErrStopped) {
		t.Errorf("Ingest after Run returned = %v, want ErrStopped", err)
	}
	if err := a.SetSpecs(ctx, nil, 0); !errors.Is(err, ErrStopped) {
		t.Errorf("SetSpecs after Run returned = %v, want ErrStopped", err)
	}
	if err := a.Apply(ctx, []Event{VerifyResultEvent{RunID: 1}}); !errors.Is(err, ErrStopped) {
		t.Errorf("Apply after Run returned = %v, want ErrStopped", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("answers took %v", took)
	}
	if entries, _, _ := st.count(); entries != 0 {
		t.Errorf("%d entries stored by a stopped Applier", entries)
	}
}

func TestApplierDrainsQueueOnShutdown(t *testing.T) {
	st := newFaultyStorage()
	st.block = true
	a, done, cancel := runApplier(t, st, ApplierOptions{})
	ctx := context.Background()
	// The first submission is taken into a blocked transaction; the
	// others wait in the queue when the Applier stops.
	errs := make(chan error, 10)
	for i := range 10 {
		go func() {
			_, err := a.Ingest(ctx, delivery(string(rune('a'+i))))
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	for range 10 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("Ingest = %v, want ErrUnavailable (stopped, or its transaction ended)", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a submission was left waiting after the Applier stopped")
		}
	}
}

func TestApplierStepTimeout(t *testing.T) {
	st := newFaultyStorage()
	st.block = true
	a, _, _ := runApplier(t, st, ApplierOptions{StepTimeout: 100 * time.Millisecond})
	start := time.Now()
	if _, err := a.Ingest(context.Background(), delivery("blocked")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ingest into a blocked transaction = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("answered after %v, want about the 100ms StepTimeout", took)
	}
}

func TestApplierFencedStops(t *testing.T) {
	st := newFaultyStorage()
	st.failCommits, st.failWith = 1, ErrFenced
	a, done, _ := runApplier(t, st, ApplierOptions{})
	if _, err := a.Ingest(context.Background(), delivery("1")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ingest = %v, want ErrUnavailable", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrFenced) {
			t.Errorf("Run = %v, want ErrFenced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run goes on after a commit was refused by another leader")
	}
}

func TestApplierBacklogOverMaxBatch(t *testing.T) {
	st := newFaultyStorage()
	// Appended by other replicas, not applied yet.
	for i := range 3*maxBatch + 10 {
		st.log = append(st.log, &Entry{Seq: int64(i + 1), Source: SourceGitHub, DeliveryID: "old" + string(rune(i)), Kind: "ping"})
	}
	a, _, _ := runApplier(t, st, ApplierOptions{SharedLog: true})
	if _, err := a.Ingest(context.Background(), delivery("new")); err != nil {
		t.Fatal(err)
	}
	if entries, applied, _ := st.count(); entries != 3*maxBatch+11 || applied != entries {
		t.Errorf("%d of %d entries applied once the new one was answered, want all", applied, entries)
	}
}
