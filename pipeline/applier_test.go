package pipeline

import (
	"context"
	"testing"
)

// memStorage is a Storage that keeps nothing but sequence numbers: enough
// for the Applier's own ordering, which these tests are about. The stores'
// behaviour under the seam is store/storetest's.
type memStorage struct{ seq int64 }

func (m *memStorage) Begin(context.Context) (StorageTx, error)         { return memTx{m}, nil }
func (m *memStorage) Unapplied(context.Context, int) ([]*Entry, error) { return nil, nil }
func (m *memStorage) Restore(context.Context) (*Restored, error)       { return &Restored{}, nil }

type memTx struct{ m *memStorage }

func (t memTx) Append(entries []*Entry) error {
	for _, e := range entries {
		t.m.seq++
		e.Seq = t.m.seq
	}
	return nil
}
func (memTx) MarkApplied([]AppliedEntry) error       { return nil }
func (memTx) SaveRuns([]*Run) error                  { return nil }
func (memTx) SaveHeld([]HeldJob) error               { return nil }
func (memTx) SaveDiscovered([]Discovered) error      { return nil }
func (memTx) FindGitHubRun(int64, int) (*Run, error) { return nil, nil }
func (memTx) Commit() error                          { return nil }
func (memTx) Rollback() error                        { return nil }

// TestReloadInBatch: an entry submitted before a reload is applied with
// the pipelines it was submitted under, though both share a batch.
func TestReloadInBatch(t *testing.T) {
	clock := &fakeClock{t: fixtureCompleted}
	ctx := context.Background()
	a, err := NewApplier(ctx, &memStorage{}, []Spec{siteSpec()}, ApplierOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	entry := &submission{entry: &Entry{Source: SourceGitHub, DeliveryID: "1", Events: []Event{runEvent(t, "requested")}}, done: make(chan answer, 1)}
	reload := &submission{specs: []Spec{}, done: make(chan answer, 1)}
	a.step(ctx, []*submission{entry, reload}, false)

	got := <-entry.done
	if got.err != nil || got.result.Outcome != OutcomeAccepted {
		t.Fatalf("entry before the reload: %+v, want accepted under the old pipelines", got)
	}
	if ans := <-reload.done; ans.err != nil {
		t.Fatalf("reload: %v", ans.err)
	}
	after := &submission{entry: &Entry{Source: SourceSupabase, DeliveryID: "2", Events: []Event{supabaseTrigger("2", clock.Now())}}, done: make(chan answer, 1)}
	a.step(ctx, []*submission{after}, false)
	if got := <-after.done; got.err != nil || got.result.Outcome != OutcomeIgnored {
		t.Fatalf("entry after the reload: %+v, want ignored: the reload removed every pipeline", got)
	}
}
