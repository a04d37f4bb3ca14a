package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

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
		{"repeated status", pipeline.RunQuery{Statuses: []pipeline.Status{pipeline.StatusFailed, pipeline.StatusFailed}, Limit: 100}, []int64{3, 2}},
		{"repeated statuses", pipeline.RunQuery{Statuses: append(failedish, failedish...), Limit: 100}, []int64{5, 3, 2}},
		{"repeated status limit", pipeline.RunQuery{Statuses: []pipeline.Status{pipeline.StatusFailed, pipeline.StatusFailed}, Limit: 2}, []int64{3, 2}},
		{"repeated statuses limit", pipeline.RunQuery{Statuses: append(failedish, failedish...), Limit: 2}, []int64{5, 3}},
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
	// Paging with the cursor visits every run once, in full pages, also
	// with statuses asked for many times.
	if pages := h.pages(t, pipeline.RunQuery{Limit: 3}); !reflect.DeepEqual(pages, [][]int64{{7, 6, 5}, {4, 3, 2}, {1}}) {
		t.Errorf("pages: %v", pages)
	}
	for _, repeats := range []int{2, 50} {
		q := pipeline.RunQuery{Limit: 2}
		for range repeats {
			q.Statuses = append(q.Statuses, pipeline.StatusFailed, pipeline.StatusTimedOut)
		}
		if pages, want := h.pages(t, q), [][]int64{{5, 3}, {2}}; !reflect.DeepEqual(pages, want) {
			t.Errorf("pages of failed and timed_out, each %d times: %v, want %v", repeats, pages, want)
		}
	}
	got, err := h.s.ListRuns(ctx, pipeline.RunQuery{Pipeline: "site", Statuses: []pipeline.Status{pipeline.StatusRunning}, Limit: 1})
	if err != nil || len(got) != 1 {
		t.Fatalf("ListRuns running: %v, %v", ids(got), err)
	}
	sameRun(t, "listed run", got[0], run(4, "site", pipeline.StatusRunning, pipeline.SourceSupabase, 40, 4))
}

// pages lists the ids of every page of q, following the cursor until a
// page is empty.
func (h *harness) pages(t *testing.T, q pipeline.RunQuery) [][]int64 {
	t.Helper()
	var pages [][]int64
	for {
		page, err := h.s.ListRuns(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return pages
		}
		pages = append(pages, ids(page))
		q.BeforeID = page[len(page)-1].ID
	}
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
	if empty.MaxRunID != 0 || empty.MaxChangeSeq != 0 || len(empty.Active)+len(empty.LastFinished)+len(empty.Held) != 0 {
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
	// The live build of site is its last success, older than its last
	// finished run; docs has no success.
	if got := byPipeline(r.LastSuccess); !reflect.DeepEqual(got, map[string]int64{"site": 1}) {
		t.Errorf("LastSuccess %v, want site 1", got)
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

func testDiscovered(t *testing.T, h *harness) {
	ctx := context.Background()
	if d, err := h.s.Discovered(ctx); err != nil || len(d) != 0 {
		t.Fatalf("Discovered of an empty store: %+v, %v", d, err)
	}
	want := []pipeline.Discovered{
		{Name: "site", Repository: "acme/site", Pattern: "acme/*", Template: "{{ .Repo }}", CreatedAt: at(1)},
		{Name: "docs", Repository: "Acme/Docs", Pattern: "acme/*", Template: "{{ .Repo }}", CreatedAt: at(2)},
	}
	h.commit(t, func(tx pipeline.StorageTx) error { return tx.SaveDiscovered(want[:1]) })
	h.commit(t, func(tx pipeline.StorageTx) error { return tx.SaveDiscovered(want) })
	// A rolled-back transaction leaves the list as it was.
	tx, err := h.s.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.SaveDiscovered(nil); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	h.reopen(t)
	r, err := h.s.Restore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, err := h.s.Discovered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]pipeline.Discovered{"Restore": r.Discovered, "Discovered": d} {
		if len(got) != len(want) {
			t.Fatalf("%s: %+v, want %+v", name, got, want)
		}
		for i := range want {
			if got[i].Name != want[i].Name || got[i].Repository != want[i].Repository || got[i].Pattern != want[i].Pattern ||
				got[i].Template != want[i].Template || !got[i].CreatedAt.Equal(want[i].CreatedAt) {
				t.Errorf("%s[%d] = %+v, want %+v", name, i, got[i], want[i])
			}
		}
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
