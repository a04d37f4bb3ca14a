// Package storetest is the test suite of the storage seam
// (pipeline.Storage and pipeline.History), run against every store: the
// SQLite store and the PostgreSQL store must mean the same thing.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
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
	Close() error
}

// Opener opens the store of a test. The first call in a test opens a new,
// empty database; later calls in the same test open the same database
// again, after the suite closed the store the previous call returned. The
// store must be ready for the applier's transactions (a PostgreSQL store
// leads).
type Opener func(t *testing.T) Store

// Run runs the suite, each case in a subtest with its own database.
func Run(t *testing.T, open Opener) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"AppendAssignsIncreasingSeqs", testAppendSeqs},
		{"DuplicateInOneTransaction", testDuplicateInOneTx},
		{"DuplicateAcrossTransactions", testDuplicateAcrossTx},
		{"DuplicateAfterReopen", testDuplicateAfterReopen},
		{"RollbackLeavesNothing", testRollback},
		{"UnappliedOrderAndLimit", testUnapplied},
		{"MarkAppliedTwiceFails", testMarkAppliedTwice},
		{"SaveRunsInsertsAndReplaces", testSaveRuns},
		{"ChangedAfter", testChangedAfter},
		{"Summaries", testSummaries},
		{"ListRuns", testListRuns},
		{"FindGitHubRun", testFindGitHubRun},
		{"RestoreAfterReopen", testRestore},
		{"RunNotFound", testNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{open: open}
			h.reopen(t)
			t.Cleanup(h.close)
			tc.fn(t, h)
		})
	}
}

// harness holds a test's open store and closes it exactly once.
type harness struct {
	open  Opener
	s     Store
	close func()
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

func testAppendSeqs(t *testing.T, h *harness) {
	in := []*pipeline.Entry{delivery(pipeline.SourceSupabase, "a", 1), poll(2), delivery(pipeline.SourceMailerLite, "a", 3)}
	h.append(t, in[:2]...)
	h.append(t, in[2:]...)
	for i, e := range in {
		if e.Seq <= 0 || (i > 0 && e.Seq <= in[i-1].Seq) {
			t.Fatalf("seqs %v, want positive and increasing", seqs(in))
		}
	}
	got := h.unapplied(t, 10)
	if !reflect.DeepEqual(seqs(got), seqs(in)) {
		t.Fatalf("Unapplied seqs %v, want %v", seqs(got), seqs(in))
	}
	for i, g := range got {
		w := in[i]
		if g.Source != w.Source || g.DeliveryID != w.DeliveryID || g.Kind != w.Kind || !g.ReceivedAt.Equal(w.ReceivedAt) ||
			string(g.Body) != string(w.Body) || !reflect.DeepEqual(g.Events, w.Events) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	if got[1].Body != nil {
		t.Errorf("poll entry body %q, want nil", got[1].Body)
	}
}

func testDuplicateInOneTx(t *testing.T, h *harness) {
	a, dup, other := delivery(pipeline.SourceGitHub, "d1", 1), delivery(pipeline.SourceGitHub, "d1", 2), delivery(pipeline.SourceSupabase, "d1", 3)
	p1, p2 := poll(4), poll(4)
	h.append(t, a, dup, other, p1, p2)
	if a.Seq == 0 || dup.Seq != 0 || other.Seq == 0 {
		t.Errorf("seqs original %d, duplicate %d, same id from another source %d; want n, 0, n", a.Seq, dup.Seq, other.Seq)
	}
	if p1.Seq == 0 || p2.Seq == 0 {
		t.Errorf("poll entries got seqs %d and %d; entries without delivery id never repeat", p1.Seq, p2.Seq)
	}
	if n := len(h.unapplied(t, 10)); n != 4 {
		t.Errorf("%d entries in the log, want 4", n)
	}
}

func testDuplicateAcrossTx(t *testing.T, h *harness) {
	a := delivery(pipeline.SourceGitHub, "d1", 1)
	h.append(t, a)
	// Applied or not, the key stays taken.
	h.commit(t, func(tx pipeline.StorageTx) error {
		return tx.MarkApplied([]pipeline.AppliedEntry{{Seq: a.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}}})
	})
	dup := delivery(pipeline.SourceGitHub, "d1", 2)
	h.append(t, dup)
	if dup.Seq != 0 {
		t.Errorf("redelivery got seq %d, want 0", dup.Seq)
	}
	if n := len(h.unapplied(t, 10)); n != 0 {
		t.Errorf("%d unapplied entries, want 0", n)
	}
}

func testDuplicateAfterReopen(t *testing.T, h *harness) {
	a := delivery(pipeline.SourceSupabase, "d1", 1)
	h.append(t, a)
	h.reopen(t)
	dup := delivery(pipeline.SourceSupabase, "d1", 2)
	next := delivery(pipeline.SourceSupabase, "d2", 3)
	h.append(t, dup, next)
	if dup.Seq != 0 {
		t.Errorf("redelivery after reopen got seq %d, want 0", dup.Seq)
	}
	if next.Seq <= a.Seq {
		t.Errorf("seq after reopen %d, want more than %d", next.Seq, a.Seq)
	}
}

func testRollback(t *testing.T, h *harness) {
	ctx := context.Background()
	kept := delivery(pipeline.SourceGitHub, "kept", 1)
	h.append(t, kept)
	tx, err := h.s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := delivery(pipeline.SourceGitHub, "d1", 2)
	held := []pipeline.HeldJob{{Job: pipeline.WorkflowJobEvent{RunID: 5, RunAttempt: 1, JobID: 9, Name: "build"}, HeldAt: at(2)}}
	for _, step := range []error{
		tx.Append([]*pipeline.Entry{e}),
		tx.MarkApplied([]pipeline.AppliedEntry{{Seq: kept.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}}}),
		tx.SaveRuns([]*pipeline.Run{run(1, "site", pipeline.StatusRunning, pipeline.SourceGitHub, 2, 1)}),
		tx.SaveHeld(held),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got := seqs(h.unapplied(t, 10)); !reflect.DeepEqual(got, []int64{kept.Seq}) {
		t.Errorf("Unapplied after rollback %v, want [%d]", got, kept.Seq)
	}
	if _, err := h.s.Run(ctx, 1); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Run(1) after rollback: %v, want ErrNotFound", err)
	}
	r, err := h.s.Restore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Held) != 0 || r.MaxRunID != 0 || r.MaxChangeSeq != 0 || len(r.Active) != 0 {
		t.Errorf("Restore after rollback: %+v, want empty", r)
	}
	again := delivery(pipeline.SourceGitHub, "d1", 3)
	h.append(t, again)
	if again.Seq == 0 {
		t.Error("the rolled-back delivery's key is still taken")
	}
}

func testUnapplied(t *testing.T, h *harness) {
	var in []*pipeline.Entry
	for i := range 5 {
		in = append(in, delivery(pipeline.SourceSupabase, string(rune('a'+i)), i))
	}
	h.append(t, in...)
	h.commit(t, func(tx pipeline.StorageTx) error {
		return tx.MarkApplied([]pipeline.AppliedEntry{
			{Seq: in[1].Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted, RunIDs: []int64{1, 2}}},
			{Seq: in[3].Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeIgnored, Reason: "no pipeline for table posts"}},
		})
	})
	for _, tc := range []struct {
		limit int
		want  []int64
	}{
		{10, []int64{in[0].Seq, in[2].Seq, in[4].Seq}},
		{2, []int64{in[0].Seq, in[2].Seq}},
		{1, []int64{in[0].Seq}},
	} {
		if got := seqs(h.unapplied(t, tc.limit)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Unapplied(%d) = %v, want %v", tc.limit, got, tc.want)
		}
	}
	var rest []pipeline.AppliedEntry
	for _, e := range h.unapplied(t, 10) {
		rest = append(rest, pipeline.AppliedEntry{Seq: e.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}})
	}
	h.commit(t, func(tx pipeline.StorageTx) error { return tx.MarkApplied(rest) })
	if got := h.unapplied(t, 10); len(got) != 0 {
		t.Errorf("Unapplied after applying all: %v", seqs(got))
	}
}

func testMarkAppliedTwice(t *testing.T, h *harness) {
	e := delivery(pipeline.SourceSupabase, "a", 1)
	h.append(t, e)
	mark := []pipeline.AppliedEntry{{Seq: e.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}}}
	h.commit(t, func(tx pipeline.StorageTx) error { return tx.MarkApplied(mark) })
	tx, err := h.s.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := tx.MarkApplied(mark); err == nil {
		t.Error("marking an applied entry applied again succeeded")
	}
}

func testSaveRuns(t *testing.T, h *harness) {
	ctx := context.Background()
	r1 := run(1, "site", pipeline.StatusRunning, pipeline.SourceSupabase, 1, 1)
	r2 := withGitHub(run(2, "site", pipeline.StatusPending, pipeline.SourceGitHub, 2, 2), 100, 1)
	h.save(t, r1, r2)
	r1b := run(1, "site", pipeline.StatusSuccess, pipeline.SourceSupabase, 1, 3)
	r1b.Error = "changed"
	h.save(t, r1b)
	for _, want := range []*pipeline.Run{r1b, r2} {
		got, err := h.s.Run(ctx, want.ID)
		if err != nil {
			t.Fatalf("Run(%d): %v", want.ID, err)
		}
		sameRun(t, "Run", got, want)
	}
	got, err := h.s.ListRuns(ctx, pipeline.RunQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(got), []int64{2, 1}) {
		t.Errorf("ListRuns after replace: %v, want [2 1] (a replaced run is not a new row)", ids(got))
	}
}

func testChangedAfter(t *testing.T, h *harness) {
	ctx := context.Background()
	if last, err := h.s.LastChange(ctx); err != nil || last != 0 {
		t.Fatalf("LastChange of an empty store = %d, %v; want 0", last, err)
	}
	h.save(t, run(1, "site", pipeline.StatusRunning, pipeline.SourceGitHub, 1, 1),
		run(2, "site", pipeline.StatusRunning, pipeline.SourceGitHub, 2, 2),
		run(3, "docs", pipeline.StatusPending, pipeline.SourceSupabase, 3, 3))
	// Run 1 changes again: it moves to the end of the change order.
	h.save(t, run(1, "site", pipeline.StatusFailed, pipeline.SourceGitHub, 1, 4))
	if last, err := h.s.LastChange(ctx); err != nil || last != 4 {
		t.Fatalf("LastChange = %d, %v; want 4", last, err)
	}
	for _, tc := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 10, []int64{2, 3, 1}},
		{0, 2, []int64{2, 3}},
		{2, 10, []int64{3, 1}},
		{3, 10, []int64{1}},
		{4, 10, []int64{}},
	} {
		got, err := h.s.ChangedAfter(ctx, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ids(got), tc.want) {
			t.Errorf("ChangedAfter(%d, %d) = %v, want %v", tc.after, tc.limit, ids(got), tc.want)
		}
		for _, r := range got {
			if r.ChangeSeq <= tc.after {
				t.Errorf("ChangedAfter(%d) returned run %d with change %d", tc.after, r.ID, r.ChangeSeq)
			}
		}
	}
}

func testSummaries(t *testing.T, h *harness) {
	ctx := context.Background()
	if sums, err := h.s.Summaries(ctx); err != nil || len(sums) != 0 {
		t.Fatalf("Summaries of an empty store: %v, %v", sums, err)
	}
	success := run(1, "site", pipeline.StatusSuccess, pipeline.SourceSupabase, 1, 1)
	failed := run(2, "site", pipeline.StatusFailed, pipeline.SourceSupabase, 2, 2)
	running := run(3, "site", pipeline.StatusRunning, pipeline.SourceSupabase, 3, 3)
	pending := run(4, "site", pipeline.StatusPending, pipeline.SourceSupabase, 4, 4)
	docs := run(5, "docs", pipeline.StatusPending, pipeline.SourceMailerLite, 5, 5)
	h.save(t, success, failed, running, pending, docs)
	check := func(want []pipeline.PipelineSummary) {
		t.Helper()
		got, err := h.s.Summaries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("Summaries: %d pipelines, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i].Pipeline != want[i].Pipeline || got[i].InProgress != want[i].InProgress {
				t.Errorf("summary %d: %s with %d in progress, want %s with %d", i, got[i].Pipeline, got[i].InProgress, want[i].Pipeline, want[i].InProgress)
			}
			sameRun(t, want[i].Pipeline+" last finished", got[i].LastFinished, want[i].LastFinished)
			sameRun(t, want[i].Pipeline+" last success", got[i].LastSuccess, want[i].LastSuccess)
		}
	}
	check([]pipeline.PipelineSummary{
		{Pipeline: "docs", InProgress: 1},
		{Pipeline: "site", InProgress: 2, LastFinished: failed, LastSuccess: success},
	})
	// The running run succeeds: it is now both the last finished and the
	// last success.
	done := run(3, "site", pipeline.StatusSuccess, pipeline.SourceSupabase, 3, 6)
	h.save(t, done)
	check([]pipeline.PipelineSummary{
		{Pipeline: "docs", InProgress: 1},
		{Pipeline: "site", InProgress: 1, LastFinished: done, LastSuccess: done},
	})
}

func testListRuns(t *testing.T, h *harness) {
	ctx := context.Background()
	h.save(t,
		run(1, "site", pipeline.StatusSuccess, pipeline.SourceSupabase, 10, 1),
		run(2, "docs", pipeline.StatusFailed, pipeline.SourceGitHub, 20, 2),
		run(3, "site", pipeline.StatusFailed, pipeline.SourceMailerLite, 30, 3),
		run(4, "site", pipeline.StatusRunning, pipeline.SourceSupabase, 40, 4),
		run(5, "docs", pipeline.StatusTimedOut, pipeline.SourceGitHub, 50, 5),
		run(6, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, 60, 6),
		run(7, "site", pipeline.StatusPending, pipeline.SourceSupabase, 70, 7),
	)
	failedish := []pipeline.Status{pipeline.StatusFailed, pipeline.StatusTimedOut}
	for _, tc := range []struct {
		name string
		q    pipeline.RunQuery
		want []int64
	}{
		{"all", pipeline.RunQuery{Limit: 100}, []int64{7, 6, 5, 4, 3, 2, 1}},
		{"limit", pipeline.RunQuery{Limit: 3}, []int64{7, 6, 5}},
		{"zero limit", pipeline.RunQuery{Limit: 0}, []int64{}},
		{"pipeline", pipeline.RunQuery{Pipeline: "docs", Limit: 100}, []int64{5, 2}},
		{"unknown pipeline", pipeline.RunQuery{Pipeline: "nope", Limit: 100}, []int64{}},
		{"one status", pipeline.RunQuery{Statuses: []pipeline.Status{pipeline.StatusFailed}, Limit: 100}, []int64{3, 2}},
		{"statuses", pipeline.RunQuery{Statuses: failedish, Limit: 100}, []int64{5, 3, 2}},
		{"statuses limit", pipeline.RunQuery{Statuses: failedish, Limit: 2}, []int64{5, 3}},
		{"statuses and pipeline", pipeline.RunQuery{Statuses: failedish, Pipeline: "site", Limit: 100}, []int64{3}},
		{"pipeline and status", pipeline.RunQuery{Pipeline: "site", Statuses: []pipeline.Status{pipeline.StatusSuccess}, Limit: 100}, []int64{6, 1}},
		{"trigger", pipeline.RunQuery{Trigger: pipeline.SourceSupabase, Limit: 100}, []int64{7, 4, 1}},
		{"since inclusive", pipeline.RunQuery{Since: at(50), Limit: 100}, []int64{7, 6, 5}},
		{"until inclusive", pipeline.RunQuery{Until: at(20), Limit: 100}, []int64{2, 1}},
		{"since and until", pipeline.RunQuery{Since: at(25), Until: at(60), Limit: 100}, []int64{6, 5, 4, 3}},
		{"range and pipeline", pipeline.RunQuery{Since: at(25), Until: at(60), Pipeline: "docs", Limit: 100}, []int64{5}},
		{"cursor", pipeline.RunQuery{BeforeID: 5, Limit: 2}, []int64{4, 3}},
		{"cursor with statuses", pipeline.RunQuery{BeforeID: 5, Statuses: failedish, Limit: 100}, []int64{3, 2}},
		{"everything", pipeline.RunQuery{Pipeline: "site", Statuses: []pipeline.Status{pipeline.StatusSuccess, pipeline.StatusFailed}, Trigger: pipeline.SourceMailerLite, Since: at(30), Until: at(30), BeforeID: 4, Limit: 10}, []int64{3}},
	} {
		got, err := h.s.ListRuns(ctx, tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(ids(got), tc.want) {
			t.Errorf("%s: ListRuns = %v, want %v", tc.name, ids(got), tc.want)
		}
	}
	// Paging with the cursor visits every run once.
	var seen []int64
	q := pipeline.RunQuery{Limit: 3}
	for {
		page, err := h.s.ListRuns(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		seen = append(seen, ids(page)...)
		q.BeforeID = page[len(page)-1].ID
	}
	if !reflect.DeepEqual(seen, []int64{7, 6, 5, 4, 3, 2, 1}) {
		t.Errorf("pages: %v", seen)
	}
	got, err := h.s.ListRuns(ctx, pipeline.RunQuery{Pipeline: "site", Statuses: []pipeline.Status{pipeline.StatusRunning}, Limit: 1})
	if err != nil || len(got) != 1 {
		t.Fatalf("ListRuns running: %v, %v", ids(got), err)
	}
	sameRun(t, "listed run", got[0], run(4, "site", pipeline.StatusRunning, pipeline.SourceSupabase, 40, 4))
}

func testFindGitHubRun(t *testing.T, h *harness) {
	first := withGitHub(run(1, "site", pipeline.StatusFailed, pipeline.SourceGitHub, 1, 1), 500, 1)
	rerun := withGitHub(run(2, "site", pipeline.StatusRunning, pipeline.SourceGitHub, 2, 2), 500, 2)
	h.save(t, first, rerun, run(3, "site", pipeline.StatusPending, pipeline.SourceSupabase, 3, 3))
	// Saved earlier in the same transaction: the lookup reads in it.
	third := withGitHub(run(4, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, 4, 4), 500, 3)
	h.commit(t, func(tx pipeline.StorageTx) error {
		if err := tx.SaveRuns([]*pipeline.Run{third}); err != nil {
			return err
		}
		for _, tc := range []struct {
			runID   int64
			attempt int
			want    *pipeline.Run
		}{
			{500, 1, first},
			{500, 2, rerun},
			{500, 3, third},
			{500, 4, nil},
			{501, 1, nil},
		} {
			got, err := tx.FindGitHubRun(tc.runID, tc.attempt)
			if err != nil {
				return err
			}
			sameRun(t, fmt.Sprintf("FindGitHubRun(%d, %d)", tc.runID, tc.attempt), got, tc.want)
		}
		return nil
	})
}

func testRestore(t *testing.T, h *harness) {
	ctx := context.Background()
	empty, err := h.s.Restore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if empty.MaxRunID != 0 || empty.MaxChangeSeq != 0 || len(empty.Active)+len(empty.LastFinished)+len(empty.LastSuccess)+len(empty.Held) != 0 {
		t.Fatalf("Restore of an empty store: %+v", empty)
	}
	success := run(1, "site", pipeline.StatusSuccess, pipeline.SourceSupabase, 1, 1)
	failed := run(2, "site", pipeline.StatusFailed, pipeline.SourceSupabase, 2, 2)
	running := withGitHub(run(3, "site", pipeline.StatusRunning, pipeline.SourceGitHub, 3, 3), 9, 1)
	docsDone := run(4, "docs", pipeline.StatusCancelled, pipeline.SourceMailerLite, 4, 4)
	pending := run(5, "docs", pipeline.StatusPending, pipeline.SourceMailerLite, 5, 5)
	held := []pipeline.HeldJob{
		{Job: pipeline.WorkflowJobEvent{Repository: "acme/site", RunID: 10, RunAttempt: 1, JobID: 1, Name: "build", Status: "queued", CreatedAt: at(6)}, HeldAt: at(6)},
		{Job: pipeline.WorkflowJobEvent{Repository: "acme/site", RunID: 10, RunAttempt: 1, JobID: 2, Name: "deploy", Status: "queued", CreatedAt: at(7)}, HeldAt: at(7)},
	}
	h.commit(t, func(tx pipeline.StorageTx) error {
		if err := tx.SaveRuns([]*pipeline.Run{pending, running, success, failed, docsDone}); err != nil {
			return err
		}
		return tx.SaveHeld(held)
	})
	h.reopen(t)
	r, err := h.s.Restore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.MaxRunID != 5 || r.MaxChangeSeq != 5 {
		t.Errorf("MaxRunID %d, MaxChangeSeq %d, want 5 and 5", r.MaxRunID, r.MaxChangeSeq)
	}
	if !reflect.DeepEqual(ids(r.Active), []int64{3, 5}) {
		t.Errorf("Active %v, want [3 5] (by id)", ids(r.Active))
	} else {
		sameRun(t, "active", r.Active[0], running)
		sameRun(t, "active", r.Active[1], pending)
	}
	byPipeline := func(runs []*pipeline.Run) map[string]int64 {
		m := map[string]int64{}
		for _, r := range runs {
			m[r.Pipeline] = r.ID
		}
		return m
	}
	if got := byPipeline(r.LastFinished); !reflect.DeepEqual(got, map[string]int64{"site": 2, "docs": 4}) {
		t.Errorf("LastFinished %v", got)
	}
	if got := byPipeline(r.LastSuccess); !reflect.DeepEqual(got, map[string]int64{"site": 1}) {
		t.Errorf("LastSuccess %v", got)
	}
	if !reflect.DeepEqual(r.Held, held) {
		t.Errorf("Held:\n got %+v\nwant %+v", r.Held, held)
	}
	// The next commit replaces the held jobs; an empty set is kept as empty.
	h.commit(t, func(tx pipeline.StorageTx) error { return tx.SaveHeld(nil) })
	h.reopen(t)
	if r, err = h.s.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r.Held) != 0 {
		t.Errorf("Held after SaveHeld(nil): %+v", r.Held)
	}
}

func testNotFound(t *testing.T, h *harness) {
	ctx := context.Background()
	h.save(t, run(1, "site", pipeline.StatusRunning, pipeline.SourceGitHub, 1, 1))
	for _, id := range []int64{0, 2, -1} {
		if r, err := h.s.Run(ctx, id); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("Run(%d) = %v, %v; want ErrNotFound", id, r, err)
		}
	}
}
