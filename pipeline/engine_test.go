package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeJournal commits in submission order, immediately or, when hold is
// set, once release is called.
type fakeJournal struct {
	mu     sync.Mutex
	stored map[deliveryKey]bool
	hasErr error
	// fail holds the results of the next commits; past its end they succeed.
	fail      []error
	hold      bool
	held      []heldCommit
	writes    [][]*Run
	submitted chan struct{}
}

type heldCommit struct {
	d  *Delivery
	ch chan error
}

func newFakeJournal() *fakeJournal {
	return &fakeJournal{stored: make(map[deliveryKey]bool), submitted: make(chan struct{}, 1000)}
}

func (j *fakeJournal) HasDelivery(source Source, id string) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stored[deliveryKey{source, id}], j.hasErr
}

func (j *fakeJournal) Submit(d *Delivery, runs []*Run) <-chan error {
	j.mu.Lock()
	defer j.mu.Unlock()
	ch := make(chan error, 1)
	j.writes = append(j.writes, runs)
	j.submitted <- struct{}{}
	if j.hold {
		j.held = append(j.held, heldCommit{d, ch})
	} else {
		j.commit(d, ch)
	}
	return ch
}

func (j *fakeJournal) commit(d *Delivery, ch chan error) {
	var err error
	if len(j.fail) > 0 {
		err, j.fail = j.fail[0], j.fail[1:]
	}
	if err == nil && d != nil {
		j.stored[deliveryKey{d.Source, d.ID}] = true
	}
	ch <- err
}

func (j *fakeJournal) release() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, c := range j.held {
		j.commit(c.d, c.ch)
	}
	j.held, j.hold = nil, false
}

func (j *fakeJournal) writeCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.writes)
}

// recorder is an observer and verify starter that remembers its calls.
type recorder struct {
	mu       sync.Mutex
	updates  []Update
	verifies []int64
	finished chan Update
}

func newRecorder() *recorder { return &recorder{finished: make(chan Update, 100)} }

func (r *recorder) observe(u Update) {
	r.mu.Lock()
	r.updates = append(r.updates, u)
	r.mu.Unlock()
	if u.Finished {
		r.finished <- u
	}
}

func (r *recorder) verify(run *Run) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.verifies = append(r.verifies, run.ID)
}

func (r *recorder) seen() []Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.updates)
}

func newTestEngine(clock *fakeClock, j *fakeJournal, rec *recorder, specs ...Spec) *Engine {
	return NewEngine(NewTracker(specs, clock.Now, nil), j, EngineOptions{
		Observers:   []func(Update){rec.observe},
		StartVerify: rec.verify,
		Now:         clock.Now,
	})
}

func supabaseDelivery(id string) *Delivery {
	return &Delivery{Source: SourceSupabase, ID: id, Event: "INSERT", ReceivedAt: fixtureCreated}
}

func TestEngineIngest(t *testing.T) {
	other := supabaseTrigger("d1", fixtureCreated)
	other.Table = "comments"
	tests := []struct {
		name    string
		stored  bool
		event   Event
		outcome Outcome
		ids     []int64
		writes  int
	}{
		{name: "accepted", event: supabaseTrigger("d1", fixtureCreated), outcome: OutcomeAccepted, ids: []int64{1}, writes: 1},
		{name: "ignored is still stored", event: other, outcome: OutcomeIgnored, writes: 1},
		{name: "stored delivery", stored: true, event: supabaseTrigger("d1", fixtureCreated), outcome: OutcomeDuplicate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j, rec := newFakeJournal(), newRecorder()
			j.stored[deliveryKey{SourceSupabase, "d1"}] = tc.stored
			e := newTestEngine(&fakeClock{t: fixtureCreated}, j, rec, siteSpec())
			outcome, ids, err := e.Ingest(context.Background(), supabaseDelivery("d1"), []Event{tc.event})
			if err != nil || outcome != tc.outcome || !slices.Equal(ids, tc.ids) {
				t.Fatalf("Ingest = %s %v %v, want %s %v", outcome, ids, err, tc.outcome, tc.ids)
			}
			if j.writeCount() != tc.writes {
				t.Errorf("%d writes, want %d", j.writeCount(), tc.writes)
			}
			if got := len(rec.seen()); got != len(tc.ids) {
				t.Errorf("observers saw %d updates, want %d", got, len(tc.ids))
			}
			if tc.writes > 0 && !j.stored[deliveryKey{SourceSupabase, "d1"}] {
				t.Error("the delivery was not stored")
			}
		})
	}
}

func TestEngineDuplicateInFlight(t *testing.T) {
	j, rec := newFakeJournal(), newRecorder()
	j.hold = true
	e := newTestEngine(&fakeClock{t: fixtureCreated}, j, rec, siteSpec())
	type result struct {
		outcome Outcome
		err     error
	}
	first := make(chan result)
	go func() {
		o, _, err := e.Ingest(context.Background(), supabaseDelivery("d1"), []Event{supabaseTrigger("d1", fixtureCreated)})
		first <- result{o, err}
	}()
	<-j.submitted
	o, _, err := e.Ingest(context.Background(), supabaseDelivery("d1"), []Event{supabaseTrigger("d1", fixtureCreated)})
	if err != nil || o != OutcomeDuplicate {
		t.Fatalf("second Ingest while the first commits = %s %v, want duplicate", o, err)
	}
	if len(rec.seen()) != 0 {
		t.Fatal("observers called before the commit")
	}
	j.release()
	if r := <-first; r.err != nil || r.outcome != OutcomeAccepted {
		t.Fatalf("first Ingest = %s %v", r.outcome, r.err)
	}
	o, _, _ = e.Ingest(context.Background(), supabaseDelivery("d1"), []Event{supabaseTrigger("d1", fixtureCreated)})
	if o != OutcomeDuplicate || j.writeCount() != 1 || len(rec.seen()) != 1 {
		t.Fatalf("after the commit: %s, %d writes, %d observed", o, j.writeCount(), len(rec.seen()))
	}
}

func TestEngineUnavailable(t *testing.T) {
	t.Run("commit error", func(t *testing.T) {
		j, rec := newFakeJournal(), newRecorder()
		j.fail = []error{errors.New("disk full")}
		e := newTestEngine(&fakeClock{t: fixtureCreated}, j, rec, siteSpec())
		_, _, err := e.Ingest(context.Background(), supabaseDelivery("d1"), []Event{supabaseTrigger("d1", fixtureCreated)})
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Ingest error %v, want ErrUnavailable", err)
		}
		if len(rec.seen()) != 0 || j.stored[deliveryKey{SourceSupabase, "d1"}] {
			t.Fatal("observers called or delivery stored for a failed commit")
		}
		// The sender retries: the events change nothing now, but the run
		// the failed write lost is written with the retry and observed once.
		o, _, err := e.Ingest(context.Background(), supabaseDelivery("d1"), []Event{supabaseTrigger("d1", fixtureCreated)})
		if err != nil || o != OutcomeIgnored {
			t.Fatalf("retry = %s %v", o, err)
		}
		if w := j.writes[1]; len(w) != 1 || w[0].ID != 1 || w[0].Status != StatusPending {
			t.Fatalf("retry wrote %v, want run 1", w)
		}
		if ups := rec.seen(); len(ups) != 1 || ups[0].Run.ID != 1 {
			t.Fatalf("observed %d updates, want run 1 once", len(ups))
		}
	})
	t.Run("HasDelivery error", func(t *testing.T) {
		j, rec := newFakeJournal(), newRecorder()
		j.hasErr = errors.New("locked")
		e := newTestEngine(&fakeClock{t: fixtureCreated}, j, rec, siteSpec())
		if _, _, err := e.Ingest(context.Background(), supabaseDelivery("d1"), nil); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Ingest error %v, want ErrUnavailable", err)
		}
		if j.writeCount() != 0 {
			t.Error("wrote after failing to check the delivery")
		}
	})
	t.Run("Finder error", func(t *testing.T) {
		j, rec := newFakeJournal(), newRecorder()
		tr := NewTracker([]Spec{siteSpec()}, (&fakeClock{t: fixtureCreated}).Now, func(int64, int) (*Run, error) {
			return nil, errors.New("read failed")
		})
		e := NewEngine(tr, j, EngineOptions{Observers: []func(Update){rec.observe}})
		events := []Event{supabaseTrigger("d1", fixtureCreated), runEvent(t, "requested")}
		_, _, err := e.Ingest(context.Background(), supabaseDelivery("d1"), events)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Ingest error %v, want ErrUnavailable", err)
		}
		if j.stored[deliveryKey{SourceSupabase, "d1"}] || j.writeCount() != 1 || len(rec.seen()) != 1 {
			t.Fatalf("stored %v, %d writes, %d observed: want the trigger's run written without the delivery",
				j.stored[deliveryKey{SourceSupabase, "d1"}], j.writeCount(), len(rec.seen()))
		}
		if err := e.Apply(context.Background(), events[1:]); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Apply error %v, want ErrUnavailable", err)
		}
	})
	t.Run("context ends first", func(t *testing.T) {
		j, rec := newFakeJournal(), newRecorder()
		j.hold = true
		e := newTestEngine(&fakeClock{t: fixtureCreated}, j, rec, siteSpec())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := e.Ingest(ctx, supabaseDelivery("d1"), []Event{supabaseTrigger("d1", fixtureCreated)}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Ingest error %v, want ErrUnavailable", err)
		}
		j.release()
		// The commit is still handled: the next write waits its turn
		// behind it and the update is observed.
		if err := e.Apply(context.Background(), []Event{supabaseTrigger("d2", fixtureCreated)}); err != nil {
			t.Fatal(err)
		}
		if ups := rec.seen(); len(ups) != 2 {
			t.Fatalf("observed %d updates, want 2", len(ups))
		}
	})
}

func TestEngineCommitOrder(t *testing.T) {
	const n = 50
	j, rec := newFakeJournal(), newRecorder()
	j.hold = true
	e := newTestEngine(&fakeClock{t: fixtureCreated}, j, rec, siteSpec())
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("d%d", i)
			if _, _, err := e.Ingest(context.Background(), supabaseDelivery(id), []Event{supabaseTrigger(id, fixtureCreated)}); err != nil {
				errs <- err
			}
		}()
	}
	// Every Ingest submits while the earlier ones wait for their commit.
	for range n {
		<-j.submitted
	}
	j.release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// All triggers coalesce into run 1, one more trigger per write: the
	// observers must see the writes in commit order.
	ups := rec.seen()
	if len(ups) != n {
		t.Fatalf("observed %d updates, want %d", len(ups), n)
	}
	for i, u := range ups {
		if u.Run.ID != 1 || len(u.Run.Triggers) != i+1 {
			t.Fatalf("update %d: run %d with %d triggers, want run 1 with %d", i, u.Run.ID, len(u.Run.Triggers), i+1)
		}
	}
}

func TestEngineVerify(t *testing.T) {
	spec := siteSpec()
	spec.Verify = true
	j, rec := newFakeJournal(), newRecorder()
	e := newTestEngine(&fakeClock{t: fixtureCompleted}, j, rec, spec)
	if err := e.Apply(context.Background(), []Event{runEvent(t, "completed")}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.verifies, []int64{1}) {
		t.Fatalf("verify started for %v, want [1]", rec.verifies)
	}
	if got := e.ActiveRuns(); len(got) != 1 || got[0].Stage(StageVerify) == nil {
		t.Fatalf("active runs %v", got)
	}
	res := VerifyResultEvent{RunID: 1, Success: true, StartedAt: fixtureCompleted, FinishedAt: fixtureCompleted.Add(time.Second)}
	if err := e.Apply(context.Background(), []Event{res}); err != nil {
		t.Fatal(err)
	}
	if u := <-rec.finished; u.Run.Status != StatusSuccess {
		t.Fatalf("finished %s", u.Run.Status)
	}
	if s := e.Snapshot().Pipelines[0]; s.LastSuccess == nil || s.InProgress != 0 {
		t.Fatalf("snapshot %+v", s)
	}
	if err := e.Apply(context.Background(), []Event{res}); err != nil || j.writeCount() != 2 {
		t.Fatalf("a result for a finished run: %v, %d writes, want no third write", err, j.writeCount())
	}
}

func TestEngineRunExpires(t *testing.T) {
	clock := &fakeClock{t: fixtureCreated}
	j, rec := newFakeJournal(), newRecorder()
	e := newTestEngine(clock, j, rec, siteSpec())
	if _, _, err := e.Ingest(context.Background(), supabaseDelivery("d1"), []Event{supabaseTrigger("d1", fixtureCreated)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.Run(ctx)
		close(done)
	}()
	select {
	case u := <-rec.finished:
		if u.Run.Status != StatusTimedOut || u.Run.ID != 1 {
			t.Errorf("run %d %s, want 1 timed_out", u.Run.ID, u.Run.Status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not expire the pending run")
	}
	cancel()
	<-done
	if j.writeCount() != 2 {
		t.Errorf("%d writes, want the delivery and the timeout", j.writeCount())
	}
}

// fakeHistory is what a store returns at start.
type fakeHistory struct {
	active, lastFinished, lastSuccess []*Run
	maxID                             int64
	err                               error
}

func (h fakeHistory) ActiveRuns() ([]*Run, error)       { return h.active, h.err }
func (h fakeHistory) LastFinishedRuns() ([]*Run, error) { return h.lastFinished, nil }
func (h fakeHistory) LastSuccessRuns() ([]*Run, error)  { return h.lastSuccess, nil }
func (h fakeHistory) MaxRunID() (int64, error)          { return h.maxID, nil }

func TestEngineRestore(t *testing.T) {
	spec := siteSpec()
	spec.Verify = true
	verifying := &Run{
		ID: 5, Pipeline: "site", Status: StatusRunning, CreatedAt: fixtureCreated, SeenAt: fixtureCreated,
		GitHub: &GitHubRun{RunID: fixtureRunID, RunAttempt: 1, Status: ghCompleted, Conclusion: "success"},
		Stages: []Stage{
			{Name: StageTrigger, Status: StatusSuccess},
			{Name: StageVerify, Status: StatusRunning, StartedAt: timePtr(fixtureCompleted)},
		},
	}
	j, rec := newFakeJournal(), newRecorder()
	e := newTestEngine(&fakeClock{t: fixtureCompleted}, j, rec, spec)
	if err := e.Restore(fakeHistory{err: errors.New("no such table")}); err == nil {
		t.Fatal("Restore ignored a history error")
	}
	if err := e.Restore(fakeHistory{active: []*Run{verifying}, maxID: 9}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.verifies, []int64{5}) {
		t.Fatalf("verify restarted for %v, want [5]", rec.verifies)
	}
	e.SetSpecs([]Spec{spec})
	res := VerifyResultEvent{RunID: 5, Success: true, StartedAt: fixtureCompleted, FinishedAt: fixtureCompleted.Add(time.Second)}
	if err := e.Apply(context.Background(), []Event{res}); err != nil {
		t.Fatal(err)
	}
	if u := <-rec.finished; u.Run.ID != 5 || u.Run.Status != StatusSuccess {
		t.Fatalf("run %d %s", u.Run.ID, u.Run.Status)
	}
}

// gatedJournal is a fakeJournal whose next HasDelivery, once block is set,
// reads the stored deliveries and then waits for gate to close before
// answering: a slow read during which others commit.
type gatedJournal struct {
	*fakeJournal
	block   atomic.Bool
	reading chan struct{}
	gate    chan struct{}
	reads   atomic.Int32
}

func (j *gatedJournal) HasDelivery(source Source, id string) (bool, error) {
	j.reads.Add(1)
	stored, err := j.fakeJournal.HasDelivery(source, id)
	if j.block.CompareAndSwap(true, false) {
		j.reading <- struct{}{}
		<-j.gate
	}
	return stored, err
}

// TestEngineDuplicateCommittedDuringRead is a redelivery that read the
// Journal before its original committed and takes the lock after.
func TestEngineDuplicateCommittedDuringRead(t *testing.T) {
	tests := []struct {
		name      string
		recentMax int
		// originalFails makes the original's commit fail: the redelivery
		// must then be applied and stored.
		originalFails bool
		// after are deliveries that commit after the original, before the
		// redelivery takes the lock.
		after   []string
		outcome Outcome
		writes  int
		// reads counts HasDelivery calls: a fourth is the redelivery's
		// second read under the lock.
		reads int32
	}{
		{name: "remembered", recentMax: recentDeliveries, outcome: OutcomeDuplicate, writes: 1, reads: 2},
		{name: "remembered among others", recentMax: 2, after: []string{"d2"}, outcome: OutcomeDuplicate, writes: 2, reads: 3},
		{name: "forgotten is read again", recentMax: 1, after: []string{"d2"}, outcome: OutcomeDuplicate, writes: 2, reads: 4},
		{name: "original failed", recentMax: recentDeliveries, originalFails: true, outcome: OutcomeIgnored, writes: 2, reads: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := &gatedJournal{fakeJournal: newFakeJournal(), reading: make(chan struct{}), gate: make(chan struct{})}
			if tc.originalFails {
				j.fail = []error{errors.New("disk full")}
			}
			rec := newRecorder()
			clock := &fakeClock{t: fixtureCreated}
			e := NewEngine(NewTracker([]Spec{siteSpec()}, clock.Now, nil), j, EngineOptions{
				Observers: []func(Update){rec.observe},
				Now:       clock.Now,
			})
			e.recentMax = tc.recentMax
			ingest := func(id string) (Outcome, error) {
				o, _, err := e.Ingest(context.Background(), supabaseDelivery(id), []Event{supabaseTrigger(id, fixtureCreated)})
				return o, err
			}

			j.block.Store(true)
			redelivery := make(chan Outcome, 1)
			go func() {
				o, err := ingest("d1")
				if err != nil {
					t.Errorf("redelivery: %v", err)
				}
				redelivery <- o
			}()
			<-j.reading
			original := make(chan error, 1)
			go func() {
				_, err := ingest("d1")
				original <- err
			}()
			select {
			case err := <-original:
				if (err != nil) != tc.originalFails {
					t.Fatalf("original: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the original could not commit while the redelivery read the Journal")
			}
			for _, id := range tc.after {
				if _, err := ingest(id); err != nil {
					t.Fatal(err)
				}
			}
			close(j.gate)

			if o := <-redelivery; o != tc.outcome {
				t.Fatalf("redelivery = %s, want %s", o, tc.outcome)
			}
			if j.writeCount() != tc.writes || j.reads.Load() != tc.reads {
				t.Errorf("%d writes and %d reads, want %d and %d", j.writeCount(), j.reads.Load(), tc.writes, tc.reads)
			}
			if !j.stored[deliveryKey{SourceSupabase, "d1"}] {
				t.Error("the delivery was not stored")
			}
		})
	}
}

func TestEngineRecentIsBounded(t *testing.T) {
	j, rec := newFakeJournal(), newRecorder()
	e := newTestEngine(&fakeClock{t: fixtureCreated}, j, rec, siteSpec())
	e.recentMax = 3
	for i := range 5 {
		id := fmt.Sprintf("d%d", i)
		if _, _, err := e.Ingest(context.Background(), supabaseDelivery(id), []Event{supabaseTrigger(id, fixtureCreated)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for k := range e.recent {
		got = append(got, k.id)
	}
	slices.Sort(got)
	if want := []string{"d2", "d3", "d4"}; !slices.Equal(got, want) || len(e.ring) != 3 || e.committed.Load() != 5 {
		t.Fatalf("remembered %v in a ring of %d after %d commits, want %v in 3 after 5", got, len(e.ring), e.committed.Load(), want)
	}
}
