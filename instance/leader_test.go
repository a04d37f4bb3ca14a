package instance

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store"
)

// sharedLog is a fake shared log of other replicas, in memory: what
// AppendShared made durable, and the results the leader reported.
type sharedLog struct {
	mu       sync.Mutex
	entries  map[string]time.Time // delivery id → received at
	results  map[string]pipeline.Result
	failNext bool
}

func (l *sharedLog) Lead(ctx context.Context) (<-chan struct{}, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (l *sharedLog) Resign()                   {}
func (l *sharedLog) Appended() <-chan struct{} { return nil }
func (l *sharedLog) AppendShared(_ context.Context, e *pipeline.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failNext {
		l.failNext = false
		return pipeline.ErrUnavailable
	}
	e.Seq = 0
	if _, ok := l.entries[e.DeliveryID]; !ok {
		l.entries[e.DeliveryID] = e.ReceivedAt
		e.Seq = int64(len(l.entries))
	}
	return nil
}
func (l *sharedLog) ReceivedAt(_ context.Context, _ pipeline.Source, id string) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entries[id], nil
}
func (l *sharedLog) WaitResult(_ context.Context, _ pipeline.Source, id string) (pipeline.Result, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	res, ok := l.results[id]
	return res, ok, nil
}
func (l *sharedLog) Lag(context.Context) (int64, error) { return 0, nil }
func (l *sharedLog) Prune(context.Context) error        { return nil }

// replicaStore is a replica's store: SQLite for the Applier's storage
// (whose Begin fails while failBegin is set), the fake for the shared log.
type replicaStore struct {
	sqliteStore
	*sharedLog
	failBegin atomic.Bool
}

func (s *replicaStore) Close() error { return s.sqliteStore.Close() }

func (s *replicaStore) Begin(ctx context.Context) (pipeline.StorageTx, error) {
	if s.failBegin.Load() {
		return nil, errors.New("disk on fire")
	}
	return s.sqliteStore.Begin(ctx)
}

func newReplica(t *testing.T) (*Instance, *replicaStore) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rs := &replicaStore{sqliteStore: sqliteStore{st}, sharedLog: &sharedLog{entries: map[string]time.Time{}, results: map[string]pipeline.Result{}}}
	t.Cleanup(func() { rs.Close() })
	reg := prometheus.NewRegistry()
	safe := config.NewSafeConfig("testdata/minimal.yml", reg)
	if err := safe.Reload(); err != nil {
		t.Fatal(err)
	}
	in, err := New(Options{Store: rs, Config: safe, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	return in, rs
}

// startApplier hands out an Applier over the replica's store, as a term
// does, and returns the function that ends it.
func startApplier(t *testing.T, in *Instance) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := pipeline.NewApplier(ctx, in.store, nil, pipeline.ApplierOptions{StepTimeout: stepTimeout})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	in.publish(a)
	t.Cleanup(cancel)
	return func() { cancel(); <-done }
}

func entry(id string) *pipeline.Entry {
	return &pipeline.Entry{Source: pipeline.SourceGitHub, DeliveryID: id, Kind: "ping", ReceivedAt: time.Now()}
}

// TestIngestRouting: where a delivery goes and what its sender is told.
func TestIngestRouting(t *testing.T) {
	ctx := context.Background()
	t.Run("follower appends to the shared log: queued, then duplicate", func(t *testing.T) {
		in, rs := newReplica(t)
		for _, want := range []pipeline.Outcome{pipeline.OutcomeQueued, pipeline.OutcomeDuplicate} {
			res, err := in.Ingest(ctx, entry("f1"))
			if err != nil || res.Outcome != want {
				t.Fatalf("Ingest = %+v, %v; want %s", res, err, want)
			}
		}
		if len(rs.entries) != 1 {
			t.Errorf("shared log holds %d entries, want 1", len(rs.entries))
		}
		if v := testutil.ToFloat64(in.leader); v != 0 {
			t.Errorf("pipeline_exporter_leader = %v on a follower", v)
		}
	})
	t.Run("follower: the leader's result when it comes in time", func(t *testing.T) {
		in, rs := newReplica(t)
		rs.results["f2"] = pipeline.Result{Outcome: pipeline.OutcomeAccepted, RunIDs: []int64{7}}
		if res, err := in.Ingest(ctx, entry("f2")); err != nil || res.Outcome != pipeline.OutcomeAccepted {
			t.Fatalf("Ingest = %+v, %v; want accepted", res, err)
		}
	})
	t.Run("follower: the shared log refuses: an error, nothing stored", func(t *testing.T) {
		in, rs := newReplica(t)
		rs.failNext = true
		if _, err := in.Ingest(ctx, entry("f3")); !errors.Is(err, pipeline.ErrUnavailable) {
			t.Fatalf("Ingest error = %v, want ErrUnavailable", err)
		}
	})
	t.Run("leader applies in its own transaction", func(t *testing.T) {
		in, rs := newReplica(t)
		startApplier(t, in)
		if v := testutil.ToFloat64(in.leader); v != 1 {
			t.Errorf("pipeline_exporter_leader = %v while an Applier is handed out", v)
		}
		res, err := in.Ingest(ctx, entry("l1"))
		if err != nil || res.Outcome != pipeline.OutcomeIgnored {
			t.Fatalf("Ingest = %+v, %v; want the Applier's outcome (ignored: no events)", res, err)
		}
		if len(rs.entries) != 0 {
			t.Errorf("the leader appended to the shared log too")
		}
		if res, _ := in.Ingest(ctx, entry("l1")); res.Outcome != pipeline.OutcomeDuplicate {
			t.Errorf("second Ingest = %+v, want duplicate", res)
		}
	})
	t.Run("leader's commit fails: the shared log takes it", func(t *testing.T) {
		in, rs := newReplica(t)
		startApplier(t, in)
		rs.failBegin.Store(true)
		res, err := in.Ingest(ctx, entry("l2"))
		if err != nil || res.Outcome != pipeline.OutcomeQueued {
			t.Fatalf("Ingest = %+v, %v; want queued", res, err)
		}
	})
	t.Run("a term ended mid-request: the stopped Applier answers at once", func(t *testing.T) {
		in, _ := newReplica(t)
		stop := startApplier(t, in)
		a := in.current()
		stop()
		// The handler took the Applier before the term withdrew it.
		start := time.Now()
		if _, err := a.Ingest(ctx, entry("l3")); !errors.Is(err, pipeline.ErrStopped) {
			t.Fatalf("Ingest on a stopped Applier = %v, want ErrStopped", err)
		}
		if err := a.SetSpecs(ctx, nil, 0); !errors.Is(err, pipeline.ErrStopped) {
			t.Fatalf("SetSpecs on a stopped Applier = %v, want ErrStopped", err)
		}
		res, err := in.Ingest(ctx, entry("l3"))
		if err != nil || res.Outcome != pipeline.OutcomeQueued {
			t.Fatalf("Ingest while the stopped Applier is still handed out = %+v, %v; want queued", res, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("answers took %v", took)
		}
	})
	t.Run("a failed commit that stored the delivery after all is not a duplicate", func(t *testing.T) {
		in, rs := newReplica(t)
		e := entry("l4")
		// As if the leader's commit reached the log before failing.
		rs.entries["l4"] = e.ReceivedAt
		rs.results["l4"] = pipeline.Result{Outcome: pipeline.OutcomeAccepted}
		startApplier(t, in)
		rs.failBegin.Store(true)
		res, err := in.Ingest(ctx, e)
		if err != nil || res.Outcome != pipeline.OutcomeAccepted {
			t.Fatalf("Ingest = %+v, %v; want the stored delivery's outcome, never duplicate", res, err)
		}
		// An earlier delivery of the same id is a duplicate.
		res, _ = in.Ingest(ctx, entry("l4"))
		if res.Outcome != pipeline.OutcomeDuplicate {
			t.Errorf("a redelivery = %+v, want duplicate", res)
		}
	})
}
