package pipeline

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// lateStore stands in for the store in TestLateTrigger: the latest state
// of every run the updates carried, and what a restart restores from it.
type lateStore struct {
	runs    map[int64]*Run
	reasons []string
}

func (s *lateStore) apply(t testing.TB, tr *Tracker, ev Event) {
	t.Helper()
	ups, reason := tr.Apply(ev)
	s.save(ups)
	s.reasons = append(s.reasons, reason)
}

func (s *lateStore) save(ups []Update) {
	for _, u := range ups {
		s.runs[u.Run.ID] = u.Run.Clone()
	}
}

// restart is a new Tracker restored from the stored runs, as the Applier
// restores one: the runs in progress and each pipeline's last finished run.
func (s *lateStore) restart(clock *fakeClock, spec Spec) *Tracker {
	var active, last []*Run
	var maxID int64
	lastByPipeline := map[string]*Run{}
	for _, id := range s.ids() {
		r := s.runs[id]
		maxID = max(maxID, id)
		if !r.Status.Terminal() {
			active = append(active, r.Clone())
		} else {
			lastByPipeline[r.Pipeline] = r
		}
	}
	for _, r := range lastByPipeline {
		last = append(last, r.Clone())
	}
	tr := newTestTracker(clock, spec)
	tr.Restore(active, last, maxID, nil)
	return tr
}

func (s *lateStore) ids() []int64 {
	var ids []int64
	for id := range s.runs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// summary is each stored run in one line: id, status, duration (of a
// successful run: the tests' trigger times are not the clock's), trigger,
// triggers and stages, the triggers as event:delivery with an R when
// recovered.
func (s *lateStore) summary() []string {
	trig := func(tr Trigger) string {
		out := tr.Event + ":" + tr.DeliveryID
		if tr.Recovered {
			out += "R"
		}
		return out
	}
	var lines []string
	for _, id := range s.ids() {
		r := s.runs[id]
		var ts []string
		for _, tr := range r.Triggers {
			ts = append(ts, trig(tr))
		}
		line := fmt.Sprintf("%d %s", r.ID, r.Status)
		if r.Status == StatusSuccess {
			line += fmt.Sprintf(" %vs", r.DurationSeconds)
		}
		lines = append(lines, fmt.Sprintf("%s trigger=%s triggers=%s stages=%s", line,
			trig(r.Trigger), strings.Join(ts, ","), strings.Join(stageNames(r), ",")))
	}
	return lines
}

// TestLateTrigger: a GitHub trigger that arrives after the workflow run it
// started joins that run, in progress or finished, restored after a
// restart or not, instead of opening a pending run that would end
// timed_out; a trigger of another commit, or one that a run holds already,
// does not. Every case ends past dispatch_timeout, so a pending run left
// behind shows as timed_out, and runs twice to show that the same events
// make the same runs.
func TestLateTrigger(t *testing.T) {
	created := fixtureCreated // the workflow run's created_at
	push := func(id string, at time.Time) func(testing.TB) Event {
		return func(testing.TB) Event {
			return TriggerEvent{
				Trigger:    Trigger{Source: SourceGitHub, Event: "push", DeliveryID: id, ReceivedAt: at, Ref: "refs/heads/master", SHA: fixtureSHA},
				Type:       "push",
				Repository: fixtureRepo,
				Branch:     "master",
			}
		}
	}
	recovered := func(ev func(testing.TB) Event) func(testing.TB) Event {
		return func(t testing.TB) Event { e := ev(t).(TriggerEvent); e.Trigger.Recovered = true; return e }
	}
	otherCommit := func(ev func(testing.TB) Event) func(testing.TB) Event {
		return func(t testing.TB) Event {
			e := ev(t).(TriggerEvent)
			// The after of fixtures/github/push/with-new-branch.json.
			e.Trigger.SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
			return e
		}
	}
	dispatch := func(id string, at time.Time) func(testing.TB) Event {
		return func(testing.TB) Event {
			// The values of fixtures/github/repository_dispatch/payload.json.
			return TriggerEvent{
				Trigger:    Trigger{Source: SourceGitHub, Event: "on-demand-test", DeliveryID: id, ReceivedAt: at},
				Type:       "repository_dispatch",
				Repository: fixtureRepo,
				Branch:     "master",
			}
		}
	}
	// run is a workflow_run delivery of the published examples, started by
	// a push, or by a repository_dispatch as published.
	run := func(name, event string, attempt int) func(testing.TB) Event {
		return func(t testing.TB) Event {
			e := runEvent(t, name)
			e.Event, e.RunAttempt, e.DeliveryID = event, attempt, fmt.Sprintf("wr-%d", attempt)
			return e
		}
	}
	requested, completed := run("requested", "push", 1), run("completed", "push", 1)
	restart := func(testing.TB) Event { return nil }

	tests := []struct {
		name   string
		events []func(testing.TB) Event
		want   []string
		// reason is the last event's answer.
		reason string
	}{
		{
			name:   "push then workflow_run",
			events: []func(testing.TB) Event{push("p1", created.Add(-4*time.Second)), requested, completed},
			want:   []string{"1 success 29s trigger=push:p1 triggers=push:p1 stages=trigger:success,dispatch:success"},
		},
		{
			name:   "workflow_run then push",
			events: []func(testing.TB) Event{requested, push("p1", created.Add(3*time.Second))},
			want:   []string{"1 running trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success"},
		},
		{
			name:   "workflow_run finished then a late push",
			events: []func(testing.TB) Event{requested, completed, push("p1", created.Add(time.Hour))},
			want:   []string{"1 success 25s trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success"},
		},
		{
			name:   "a recovered push delivered before the run was created is its first trigger",
			events: []func(testing.TB) Event{requested, completed, recovered(push("p1", created.Add(-5*time.Second)))},
			want:   []string{"1 success 30s trigger=push:p1R triggers=push:p1R,push:wr-1 stages=trigger:success,dispatch:success"},
		},
		{
			name:   "a recovered push delivered after keeps its mark",
			events: []func(testing.TB) Event{requested, recovered(push("p1", created.Add(2*time.Second))), completed},
			want:   []string{"1 success 25s trigger=push:wr-1 triggers=push:wr-1,push:p1R stages=trigger:success"},
		},
		{
			name:   "a push of another commit after a run opens a pending run",
			events: []func(testing.TB) Event{requested, otherCommit(push("p1", created.Add(3*time.Second)))},
			want: []string{
				"1 running trigger=push:wr-1 triggers=push:wr-1 stages=trigger:success",
				"2 timed_out trigger=push:p1 triggers=push:p1 stages=trigger:success,dispatch:timed_out",
			},
		},
		{
			name:   "a second push of the same commit waits for its own workflow run",
			events: []func(testing.TB) Event{requested, push("p1", created.Add(3*time.Second)), push("p2", created.Add(time.Minute))},
			want: []string{
				"1 running trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success",
				"2 timed_out trigger=push:p2 triggers=push:p2 stages=trigger:success,dispatch:timed_out",
			},
		},
		{
			name:   "the push delivered again is a duplicate",
			events: []func(testing.TB) Event{requested, push("p1", created.Add(3*time.Second)), completed, push("p1", created.Add(3*time.Second))},
			want:   []string{"1 success 25s trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success"},
			reason: "trigger already seen",
		},
		{
			name:   "after a restart the push joins the restored finished run",
			events: []func(testing.TB) Event{requested, completed, restart, push("p1", created.Add(time.Hour))},
			want:   []string{"1 success 25s trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success"},
		},
		{
			name:   "after a restart the push joins the restored running run",
			events: []func(testing.TB) Event{requested, restart, push("p1", created.Add(time.Minute)), completed},
			want:   []string{"1 success 25s trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success"},
		},
		{
			name:   "after a restart the joined push is still a duplicate",
			events: []func(testing.TB) Event{requested, completed, push("p1", created.Add(time.Hour)), restart, push("p1", created.Add(time.Hour))},
			want:   []string{"1 success 25s trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success"},
			reason: "trigger already seen",
		},
		{
			name: "the push delivered again after a later run finished is a duplicate",
			events: []func(testing.TB) Event{
				requested, completed, push("p1", created.Add(time.Hour)),
				run("requested", "push", 2), run("completed", "push", 2), push("p1", created.Add(time.Hour)),
			},
			want: []string{
				"1 success 25s trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success",
				"2 success 25s trigger=push:wr-2 triggers=push:wr-2 stages=trigger:success",
			},
			reason: "trigger already seen",
		},
		{
			name: "a push joins the first attempt of a re-run",
			events: []func(testing.TB) Event{
				requested, completed, run("requested", "push", 2), push("p1", created.Add(time.Hour)),
			},
			want: []string{
				"1 success 25s trigger=push:wr-1 triggers=push:wr-1,push:p1 stages=trigger:success",
				"2 running trigger=push:wr-2 triggers=push:wr-2 stages=trigger:success",
			},
		},
		{
			name: "a push joins a run that claimed another trigger",
			events: []func(testing.TB) Event{
				func(testing.TB) Event { return supabaseTrigger("s1", created.Add(-4*time.Second)) },
				requested, push("p1", created.Add(time.Minute)),
			},
			want: []string{"1 running trigger=INSERT:s1 triggers=INSERT:s1,push:p1 stages=trigger:success,dispatch:success"},
		},
		{
			name:   "a dispatch after its workflow run",
			events: []func(testing.TB) Event{run("requested", "repository_dispatch", 1), dispatch("d1", created.Add(2*time.Second))},
			want:   []string{"1 running trigger=repository_dispatch:wr-1 triggers=repository_dispatch:wr-1,on-demand-test:d1 stages=trigger:success"},
		},
		{
			name: "a second dispatch waits for its own workflow run",
			events: []func(testing.TB) Event{
				run("requested", "repository_dispatch", 1), dispatch("d1", created.Add(2*time.Second)), dispatch("d2", created.Add(time.Minute)),
			},
			want: []string{
				"1 running trigger=repository_dispatch:wr-1 triggers=repository_dispatch:wr-1,on-demand-test:d1 stages=trigger:success",
				"2 timed_out trigger=on-demand-test:d2 triggers=on-demand-test:d2 stages=trigger:success,dispatch:timed_out",
			},
		},
		{
			name: "a dispatch later than dispatch_timeout after the run opens a pending run",
			events: []func(testing.TB) Event{
				run("requested", "repository_dispatch", 1), dispatch("d1", created.Add(12*time.Minute)),
			},
			want: []string{
				"1 running trigger=repository_dispatch:wr-1 triggers=repository_dispatch:wr-1 stages=trigger:success",
				"2 timed_out trigger=on-demand-test:d1 triggers=on-demand-test:d1 stages=trigger:success,dispatch:timed_out",
			},
		},
		{
			name:   "a push does not join a run a dispatch started",
			events: []func(testing.TB) Event{run("requested", "repository_dispatch", 1), push("p1", created.Add(2*time.Second))},
			want: []string{
				"1 running trigger=repository_dispatch:wr-1 triggers=repository_dispatch:wr-1 stages=trigger:success",
				"2 timed_out trigger=push:p1 triggers=push:p1 stages=trigger:success,dispatch:timed_out",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := siteSpec()
			spec.Triggers = append(spec.Triggers, TriggerRule{Source: SourceGitHub, Events: []string{"push", "repository_dispatch"}})
			var runs [2]map[int64]*Run
			for i := range runs {
				clock := &fakeClock{t: created}
				store := &lateStore{runs: map[int64]*Run{}}
				tr := newTestTracker(clock, spec)
				for _, ev := range tc.events {
					clock.Advance(time.Second)
					e := ev(t)
					if e == nil {
						tr = store.restart(clock, spec)
						continue
					}
					store.apply(t, tr, e)
				}
				if got := store.reasons[len(store.reasons)-1]; got != tc.reason {
					t.Errorf("last event's reason %q, want %q", got, tc.reason)
				}
				clock.Advance(spec.DispatchTimeout)
				store.save(tr.Expire())
				if got := store.summary(); !slices.Equal(got, tc.want) {
					t.Fatalf("runs past dispatch_timeout:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
				}
				runs[i] = store.runs
			}
			if !reflect.DeepEqual(runs[0], runs[1]) {
				t.Error("the same events made other runs the second time")
			}
		})
	}
}

// TestLateTriggerTimes: a push that joins as the run's first trigger moves
// the run's start, trigger stage and dispatch stage to when it was
// delivered; the answer to it names the run.
func TestLateTriggerTimes(t *testing.T) {
	clock := &fakeClock{t: fixtureCreated}
	spec := siteSpec()
	spec.Triggers = append(spec.Triggers, TriggerRule{Source: SourceGitHub, Events: []string{"push"}})
	tr := newTestTracker(clock, spec)
	requested := runEvent(t, "requested")
	requested.Event = "push"
	apply(t, tr, requested)
	at := fixtureCreated.Add(-7 * time.Second)
	ups, reason := tr.Apply(TriggerEvent{
		Trigger:    Trigger{Source: SourceGitHub, Event: "push", DeliveryID: "p1", ReceivedAt: at, Ref: "refs/heads/master", SHA: fixtureSHA, Recovered: true},
		Type:       "push",
		Repository: "Octo-Org/Octo-Repo", // GitHub compares names without case
		Branch:     "master",
	})
	u := one(t, ups)
	r := u.Run
	if reason != "" || r.ID != 1 || u.Finished {
		t.Fatalf("update of run %d (finished %v), reason %q; want run 1 and no reason", r.ID, u.Finished, reason)
	}
	if !r.CreatedAt.Equal(at) || !r.Trigger.ReceivedAt.Equal(at) || !r.Trigger.Recovered {
		t.Errorf("created %v, trigger %+v; want both at %v, recovered", r.CreatedAt, r.Trigger, at)
	}
	if s := r.Stages[0]; !s.StartedAt.Equal(at) || !s.FinishedAt.Equal(at) {
		t.Errorf("trigger stage %+v, want at %v", s, at)
	}
	d := r.Stages[1]
	if d.Name != StageDispatch || d.Status != StatusSuccess || !d.StartedAt.Equal(at) || !d.FinishedAt.Equal(fixtureCreated) || d.DurationSeconds != 7 {
		t.Errorf("dispatch stage %+v, want 7s up to the workflow run's creation", d)
	}
	if got := finishedNames(u); !slices.Equal(got, []string{"dispatch:success"}) {
		t.Errorf("stages finished %v, want the dispatch stage", got)
	}
}
