package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

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

func testKnownDeliveries(t *testing.T, h *harness) {
	applied, unapplied := delivery(pipeline.SourceGitHub, "g1", 1), delivery(pipeline.SourceGitHub, "g2", 2)
	h.append(t, applied, unapplied, delivery(pipeline.SourceSupabase, "s1", 3), poll(4))
	h.commit(t, func(tx pipeline.StorageTx) error {
		return tx.MarkApplied([]pipeline.AppliedEntry{{Seq: applied.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}}})
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		source pipeline.Source
		ids    []string
		want   map[string]bool
	}{
		{"applied and unapplied, not another source's, not unknown", pipeline.SourceGitHub, []string{"g1", "g2", "s1", "g3"}, map[string]bool{"g1": true, "g2": true}},
		{"another source", pipeline.SourceSupabase, []string{"g1", "s1"}, map[string]bool{"s1": true}},
		{"none asked", pipeline.SourceGitHub, nil, map[string]bool{}},
		{"an id repeated", pipeline.SourceGitHub, []string{"g2", "g2", ""}, map[string]bool{"g2": true}},
	} {
		got, err := h.s.KnownDeliveries(ctx, tc.source, tc.ids)
		if err != nil {
			t.Fatalf("%s: KnownDeliveries: %v", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: KnownDeliveries(%s, %q) = %v, want %v", tc.name, tc.source, tc.ids, got, tc.want)
		}
	}
	// A page of GitHub's deliveries at once.
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("x%d", i)
	}
	ids[57] = "g2"
	got, err := h.s.KnownDeliveries(ctx, pipeline.SourceGitHub, ids)
	if err != nil || !reflect.DeepEqual(got, map[string]bool{"g2": true}) {
		t.Errorf("KnownDeliveries of 100 ids = %v, %v; want g2 only", got, err)
	}
}

// testNULStored checks that any valid JSON is storable: a payload whose
// strings hold \u0000 (PostgreSQL's jsonb and text cannot hold a NUL) is
// appended, applied and restored with nothing lost.
func testNULStored(t *testing.T, h *harness) {
	ctx := context.Background()
	e := delivery(pipeline.SourceCloudflare, "nul", 1)
	e.Kind = "pages_event_alert\x00"
	e.Body = []byte(`{"alert_type":"pages_event_alert\u0000","name":"a\u0000b"}`)
	e.Events = []pipeline.Event{pipeline.TriggerEvent{
		Trigger: pipeline.Trigger{Source: pipeline.SourceCloudflare, Event: "pages\x00alert", DeliveryID: "nul", ReceivedAt: at(1), Ref: "main\x00"},
		Type:    "pages\x00alert",
	}}
	h.append(t, e)
	got := h.unapplied(t, 10)
	if len(got) != 1 || string(got[0].Body) != string(e.Body) || !reflect.DeepEqual(got[0].Events, e.Events) {
		t.Fatalf("Unapplied = %+v, want the entry with its body and events exactly", got)
	}

	r := run(1, "site", pipeline.StatusRunning, pipeline.SourceCloudflare, 1, 1)
	r.Trigger = e.Events[0].(pipeline.TriggerEvent).Trigger
	r.Triggers = []pipeline.Trigger{r.Trigger}
	r.Stages = append(r.Stages, pipeline.Stage{Name: "build\x00x", Status: pipeline.StatusFailed, Error: "exit\x00 1"})
	held := []pipeline.HeldJob{{Job: pipeline.WorkflowJobEvent{Repository: "acme/site", RunID: 10, RunAttempt: 1, JobID: 1, Name: "job\x00", Status: "queued", CreatedAt: at(2)}, HeldAt: at(2)}}
	h.commit(t, func(tx pipeline.StorageTx) error {
		if err := tx.MarkApplied([]pipeline.AppliedEntry{{Seq: got[0].Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeIgnored, Reason: "no pipeline for trigger pages\x00alert"}}}); err != nil {
			return err
		}
		if err := tx.SaveRuns([]*pipeline.Run{r}); err != nil {
			return err
		}
		return tx.SaveHeld(held)
	})
	stored, err := h.s.Run(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	sameRun(t, "Run", stored, r)
	changed, err := h.s.ChangedAfter(ctx, 0, 10)
	if err != nil || len(changed) != 1 {
		t.Fatalf("ChangedAfter = %v, %v", ids(changed), err)
	}
	sameRun(t, "ChangedAfter", changed[0], r)

	h.reopen(t)
	restored, err := h.s.Restore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(restored.Active) != 1 {
		t.Fatalf("restored %d active runs, want 1", len(restored.Active))
	}
	sameRun(t, "restored", restored.Active[0], r)
	if !reflect.DeepEqual(restored.Held, held) {
		t.Errorf("restored held %+v, want %+v", restored.Held, held)
	}
}

// recheck is a recheck entry of run: no delivery id, no body.
func recheck(sec int, run int64) *pipeline.Entry {
	return &pipeline.Entry{
		Kind:       pipeline.KindRecheck,
		ReceivedAt: at(sec),
		Events: []pipeline.Event{pipeline.RecheckResultEvent{
			RunID: run, Success: true, CheckedAt: at(sec), URL: "https://example.com/", StatusCode: 200, Served: liveBuild,
		}},
	}
}

// testPruneAppliedRechecks: Prune deletes the recheck entries that are
// applied, whatever the retention (the suite's stores keep everything else
// forever): their effect is in the committed run, and no reader of the
// log wants them again. Every other entry stays: deliveries, poll and
// verify results, and a recheck not applied yet, which the Applier applies
// after a crash. Seqs of pruned entries are never given again.
func testPruneAppliedRechecks(t *testing.T, h *harness) {
	ctx := context.Background()
	hook, p := delivery(pipeline.SourceGitHub, "d1", 1), poll(2)
	v := &pipeline.Entry{Kind: pipeline.KindVerify, ReceivedAt: at(3), Events: []pipeline.Event{pipeline.VerifyResultEvent{
		RunID: 1, Success: true, StartedAt: at(2), FinishedAt: at(3), Attempts: 1, URL: "https://example.com/", StatusCode: 200, Build: liveBuild, Served: liveBuild,
	}}}
	r1, r2, waiting, r3 := recheck(4, 1), recheck(5, 2), recheck(6, 1), recheck(7, 1)
	h.append(t, hook, p, v, r1, r2, waiting, r3)
	h.commit(t, func(tx pipeline.StorageTx) error {
		var applied []pipeline.AppliedEntry
		for _, e := range []*pipeline.Entry{hook, p, v, r1, r2, r3} {
			applied = append(applied, pipeline.AppliedEntry{Seq: e.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted, RunIDs: []int64{1}}})
		}
		return tx.MarkApplied(applied)
	})
	want := seqs([]*pipeline.Entry{hook, p, v, waiting})
	for range 2 {
		if err := h.s.Prune(ctx); err != nil {
			t.Fatalf("Prune: %v", err)
		}
		if got := h.logSeqs(t, h.s); !reflect.DeepEqual(got, want) {
			t.Fatalf("log after pruning: seqs %v, want %v (the delivery, the poll and verify results, the unapplied recheck)", got, want)
		}
	}
	if got := h.unapplied(t, 10); len(got) != 1 || got[0].Seq != waiting.Seq || !reflect.DeepEqual(got[0].Events, waiting.Events) {
		t.Errorf("unapplied after pruning: %+v, want the waiting recheck %+v", got, waiting)
	}
	known, err := h.s.KnownDeliveries(ctx, pipeline.SourceGitHub, []string{"d1"})
	if err != nil || !known["d1"] {
		t.Errorf("KnownDeliveries after pruning: %v, %v; want d1 known", known, err)
	}
	h.reopen(t)
	next := recheck(8, 1)
	h.append(t, next)
	if next.Seq <= r3.Seq {
		t.Errorf("entry appended after pruning got seq %d, not past the pruned %d", next.Seq, r3.Seq)
	}
}
