// Package storetest is the test suite of the storage seam
// (pipeline.Storage and pipeline.History), run against every store: the
// SQLite store and the PostgreSQL store must mean the same thing.
package storetest

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Store is what the suite tests: the applier's side and the read side of a
// store, and Close.
type Store interface {
	pipeline.Storage
	pipeline.History
	// KnownDeliveries returns which of ids the log holds for source.
	KnownDeliveries(ctx context.Context, source pipeline.Source, ids []string) (map[string]bool, error)
	// Discovered returns the pipelines discovered from patterns.
	Discovered(ctx context.Context) ([]pipeline.Discovered, error)
	// Prune enforces retention and deletes the applied recheck entries.
	Prune(ctx context.Context) error
	Close() error
}

// Opener opens the store of a test. The first call in a test opens a new,
// empty database; later calls in the same test open the same database
// again, after the suite closed the store the previous call returned. The
// store must be ready for the applier's transactions (a PostgreSQL store
// leads).
type Opener func(t *testing.T) Store

// LogSeqs returns the seq of every entry s's log holds, in order: the
// test's own look into the store's table, which no reader of the store
// needs.
type LogSeqs func(t *testing.T, s Store) []int64

// Run runs the suite, each case in a subtest with its own database.
func Run(t *testing.T, open Opener, logSeqs LogSeqs) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"AppendAssignsIncreasingSeqs", testAppendSeqs},
		{"DuplicateInOneTransaction", testDuplicateInOneTx},
		{"DuplicateAcrossTransactions", testDuplicateAcrossTx},
		{"DuplicateAfterReopen", testDuplicateAfterReopen},
		{"KnownDeliveries", testKnownDeliveries},
		{"RollbackLeavesNothing", testRollback},
		{"UnappliedOrderAndLimit", testUnapplied},
		{"MarkAppliedTwiceFails", testMarkAppliedTwice},
		{"SaveRunsInsertsAndReplaces", testSaveRuns},
		{"ChangedAfter", testChangedAfter},
		{"Summaries", testSummaries},
		{"ListRuns", testListRuns},
		{"FindGitHubRun", testFindGitHubRun},
		{"RestoreAfterReopen", testRestore},
		{"Discovered", testDiscovered},
		{"RunNotFound", testNotFound},
		{"NULStored", testNULStored},
		{"PruneAppliedRechecks", testPruneAppliedRechecks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{open: open, logSeqs: logSeqs}
			h.reopen(t)
			t.Cleanup(h.close)
			tc.fn(t, h)
		})
	}
}

// harness holds a test's open store and closes it exactly once.
type harness struct {
	open    Opener
	logSeqs LogSeqs
	s       Store
	close   func()
}

func (h *harness) reopen(t *testing.T) {
	t.Helper()
	if h.close != nil {
		h.close()
	}
	s := h.open(t)
	h.s = s
	h.close = sync.OnceFunc(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// commit runs fn in one applier transaction and commits it.
func (h *harness) commit(t *testing.T, fn func(tx pipeline.StorageTx) error) {
	t.Helper()
	tx, err := h.s.Begin(context.Background())
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func (h *harness) append(t *testing.T, entries ...*pipeline.Entry) {
	t.Helper()
	h.commit(t, func(tx pipeline.StorageTx) error { return tx.Append(entries) })
}

func (h *harness) save(t *testing.T, runs ...*pipeline.Run) {
	t.Helper()
	h.commit(t, func(tx pipeline.StorageTx) error { return tx.SaveRuns(runs) })
}

func (h *harness) unapplied(t *testing.T, limit int) []*pipeline.Entry {
	t.Helper()
	entries, err := h.s.Unapplied(context.Background(), limit)
	if err != nil {
		t.Fatalf("Unapplied: %v", err)
	}
	return entries
}

// base is a time with whole microseconds, which every store keeps exactly.
var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

// delivery is a webhook entry with one event.
func delivery(source pipeline.Source, id string, sec int) *pipeline.Entry {
	return &pipeline.Entry{
		Source:     source,
		DeliveryID: id,
		Kind:       "INSERT",
		ReceivedAt: at(sec),
		Body:       []byte(`{"type":"INSERT","table":"posts","id":"` + id + `"}`),
		Events: []pipeline.Event{pipeline.TriggerEvent{
			Trigger: pipeline.Trigger{Source: source, Event: "INSERT", DeliveryID: id, ReceivedAt: at(sec)},
			Table:   "posts",
			Type:    "INSERT",
		}},
	}
}

// poll is a poll entry: no delivery id, no body.
func poll(sec int) *pipeline.Entry {
	return &pipeline.Entry{
		Source:     pipeline.SourceGitHub,
		Kind:       pipeline.KindPoll,
		ReceivedAt: at(sec),
		Events: []pipeline.Event{pipeline.WorkflowRunEvent{
			Repository: "acme/site", RunID: 77, RunAttempt: 1, WorkflowPath: ".github/workflows/deploy.yml",
			Status: "in_progress", CreatedAt: at(sec - 5), UpdatedAt: at(sec),
		}},
	}
}

func seqs(entries []*pipeline.Entry) []int64 {
	out := make([]int64, len(entries))
	for i, e := range entries {
		out[i] = e.Seq
	}
	return out
}

// run builds a run; a terminal one has a finish time and a duration.
func run(id int64, name string, status pipeline.Status, trigger pipeline.Source, createdSec int, change int64) *pipeline.Run {
	created := at(createdSec)
	tr := pipeline.Trigger{Source: trigger, Event: "INSERT", ReceivedAt: created}
	r := &pipeline.Run{
		ID:        id,
		Pipeline:  name,
		Status:    status,
		Trigger:   tr,
		Triggers:  []pipeline.Trigger{tr},
		CreatedAt: created,
		Stages:    []pipeline.Stage{{Name: pipeline.StageTrigger, Status: pipeline.StatusSuccess}},
		SeenAt:    created,
		ChangeSeq: change,
	}
	if status.Terminal() {
		fin := created.Add(90 * time.Second)
		r.FinishedAt = &fin
		r.DurationSeconds = 90
	}
	return r
}

func withGitHub(r *pipeline.Run, runID int64, attempt int) *pipeline.Run {
	r.GitHub = &pipeline.GitHubRun{Repository: "acme/site", RunID: runID, RunAttempt: attempt, Workflow: "deploy.yml", CreatedAt: r.CreatedAt, UpdatedAt: r.CreatedAt}
	return r
}

func ids(runs []*pipeline.Run) []int64 {
	out := []int64{}
	for _, r := range runs {
		out = append(out, r.ID)
	}
	return out
}

// sameRun reports whether got is want as stored: the same JSON and the same
// change sequence.
func sameRun(t *testing.T, what string, got, want *pipeline.Run) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
		return
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) || got.ChangeSeq != want.ChangeSeq {
		t.Errorf("%s:\n got %s (change %d)\nwant %s (change %d)", what, g, got.ChangeSeq, w, want.ChangeSeq)
	}
}
