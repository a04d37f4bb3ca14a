package pipeline

import "strings"

// A GitHub trigger may reach the exporter after the workflow run it
// started: GitHub does not order its deliveries, and a delivery it failed
// to make is read back later (recovered). By then the workflow run, with no
// pending trigger to claim, has opened a run of its own, so the trigger
// joins that run rather than open a pending run no workflow run will claim
// (which would end timed_out after dispatch_timeout).

// joinStarted adds the GitHub trigger e to the run of the pipeline it
// started when the Tracker already holds that run, in progress or among
// the recently finished (the finishedCacheSize latest GitHub runs; after
// a restart, each pipeline's last finished run). It reports whether the
// trigger belongs to such a run: joined now, or held already (a duplicate).
// It walks those runs, with no index of its own to keep bounded: `make
// bench`'s row BenchmarkTrackerLateTrigger (1,000 runs in progress and a
// full finished cache) put that at 140 µs per GitHub trigger, once per push
// or dispatch, beside the commit each delivery waits for.
func (t *Tracker) joinStarted(spec *Spec, e TriggerEvent) bool {
	if e.Trigger.Source != SourceGitHub {
		return false
	}
	var found *tracked
	consider := func(tr *tracked) bool {
		r := tr.run
		if r.Pipeline != spec.Name || r.GitHub == nil {
			return false
		}
		if holds(r, e.Trigger) {
			found = tr
			return true
		}
		// The oldest run wins, whatever order the runs are walked in.
		if startedBy(r, spec, e) && (found == nil || r.ID < found.run.ID) {
			found = tr
		}
		return false
	}
	for _, tr := range t.active {
		if consider(tr) {
			return true
		}
	}
	for _, tr := range t.finished.ring {
		if tr != nil && consider(tr) {
			return true
		}
	}
	if found == nil {
		return false
	}
	t.join(found, e.Trigger)
	return true
}

// holds reports whether the run has the trigger already.
func holds(r *Run, trig Trigger) bool {
	for _, o := range r.Triggers {
		if sameTrigger(o, trig) {
			return true
		}
	}
	return false
}

// startedBy reports whether the run's workflow run is one the GitHub
// trigger e started, by DESIGN's correlation rules: a workflow run of the
// trigger's event in the trigger's repository whose run holds no GitHub
// trigger delivery yet; for a push, of its head SHA on its branch; for a
// dispatch, which names no commit, created no earlier than the trigger
// less dispatch_timeout and the clock-skew allowance (a dispatch waits
// that long for its pick-up; the claim of a pending run measures the same).
func startedBy(r *Run, spec *Spec, e TriggerEvent) bool {
	g := r.GitHub
	if g.Event != e.Type || !strings.EqualFold(g.Repository, e.Repository) {
		return false
	}
	for _, o := range r.Triggers {
		if o.Source == SourceGitHub && !derived(r, o) {
			return false
		}
	}
	if e.Type == "push" {
		return e.Trigger.SHA != "" && g.HeadSHA == e.Trigger.SHA && g.HeadBranch == e.Branch
	}
	return spec.DispatchTimeout == 0 || !g.CreatedAt.Before(e.Trigger.ReceivedAt.Add(-spec.DispatchTimeout-spec.ClockSkew))
}

// ownTrigger is the trigger a workflow run with no pending run to claim
// opens its run with: it stands for what started the workflow run, as the
// run says, not for a trigger delivery.
func ownTrigger(e WorkflowRunEvent) Trigger {
	return Trigger{
		Source:     SourceGitHub,
		Event:      e.Event,
		DeliveryID: e.DeliveryID,
		ReceivedAt: e.CreatedAt,
		Ref:        e.HeadBranch,
		SHA:        e.HeadSHA,
		Recovered:  e.Recovered,
	}
}

// derived reports whether trig is the run's ownTrigger. A push delivery's
// ref is the full ref (refs/heads/main) and a dispatch names no commit, so
// neither is taken for it.
func derived(r *Run, trig Trigger) bool {
	g := r.GitHub
	return trig.Source == SourceGitHub && trig.Event == g.Event && trig.Ref == g.HeadBranch && trig.SHA == g.HeadSHA
}

// join adds a late GitHub trigger to the run it started. Received (or, for
// a recovered delivery, delivered) after the run's first trigger, it joins
// triggers[] and changes nothing else: the run began before the exporter
// heard of it. Received before, it is the run's first trigger, as DESIGN
// has it ("the first is the run's trigger", "run duration = first trigger
// to run finish"): the run then looks as it would had the deliveries come
// in order, with the trigger stage at the push, a dispatch stage from it to
// the workflow run's creation, and, for a finished run, its duration from
// it. The runs metrics counted at the finish keep what they counted.
func (t *Tracker) join(tr *tracked, trig Trigger) {
	r := tr.run
	t.touch(tr)
	if !trig.ReceivedAt.Before(r.Trigger.ReceivedAt) {
		r.Triggers = append(r.Triggers, trig)
		return
	}
	at := trig.ReceivedAt
	r.Triggers = append([]Trigger{trig}, r.Triggers...)
	r.Trigger = trig
	r.CreatedAt = at
	if r.FinishedAt != nil {
		r.DurationSeconds = seconds(at, *r.FinishedAt)
	}
	if i := specialIndex(r, StageTrigger); i >= 0 {
		st := r.Stages[i]
		st.StartedAt, st.FinishedAt = timePtr(at), timePtr(at)
		t.setStage(tr, i, st)
	}
	end := r.GitHub.CreatedAt
	if end.Before(at) {
		end = at
	}
	dispatch := Stage{Name: StageDispatch, Status: StatusSuccess, StartedAt: timePtr(at), FinishedAt: timePtr(end), DurationSeconds: seconds(at, end)}
	if i := specialIndex(r, StageDispatch); i >= 0 {
		t.setStage(tr, i, dispatch)
		return
	}
	t.addStage(tr, specialIndex(r, StageTrigger)+1, dispatch)
}
