package pipeline

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Bounds of what the Tracker keeps besides its non-terminal runs. They cap
// memory however long the exporter runs; the history lives in the store.
const (
	// finishedCacheSize recently finished GitHub runs are remembered so
	// that late and duplicate events for them need no history lookup.
	finishedCacheSize = 4096
	// orphanJobsMax job events may wait for a workflow run event that has
	// not arrived yet (GitHub does not order its deliveries).
	orphanJobsMax = 10000
	// orphanJobsMaxAge is how long a job event may wait for its run.
	orphanJobsMaxAge = 24 * time.Hour
	// pagesBufferSize Pages deployments are kept per (project, commit) for
	// runs whose workflow has not finished yet.
	pagesBufferSize = 1024
)

// runKey identifies one attempt of a GitHub Actions workflow run.
type runKey struct {
	id      int64
	attempt int
}

// tracked is a run held by the Tracker with what it needs to place job stages.
type tracked struct {
	run  *Run
	spec Spec
	// jobCreated orders job stages by job creation; the Stage has no field
	// for it.
	jobCreated map[int64]time.Time
	// deadline is when the run times out, as the Tracker's deadlines heap
	// last placed it; heapSlot is its place there plus one, so that the
	// zero value of a tracked run means "not in the heap".
	deadline time.Time
	heapSlot int
}

func (tr *tracked) key() (runKey, bool) {
	if tr.run.GitHub == nil {
		return runKey{}, false
	}
	return runKey{tr.run.GitHub.RunID, tr.run.GitHub.RunAttempt}, true
}

// Tracker correlates Events into Runs. It is a deterministic state machine:
// time comes only from the injected clock and from the events. It is not safe
// for concurrent use: the Applier owns it, on one goroutine.
//
// The Tracker holds only the non-terminal runs, the last finished and last
// successful run of each pipeline, and bounded buffers (recently finished
// runs, job events whose run is not known yet, Pages deployments whose run
// has not finished its workflow). Everything older is looked up by the
// caller: NeedsRun names the run an event concerns, Recall hands it over.
type Tracker struct {
	// written are the pipelines of the config, patterns included.
	written []Spec
	// specs are the written pipelines, the discovered ones and the
	// patterns (Instantiate); byName indexes all but the patterns.
	specs  []Spec
	byName map[string]*Spec
	// matchOrder is specs in the order workflow runs are matched in: the
	// pipelines that name their repository (written, then discovered), the
	// patterns, then those that name none, each group in config order.
	matchOrder []*Spec
	now        func() time.Time

	// discovered are the pipelines made from patterns, oldest first, at
	// most maxDiscovered; discoveredChanged says the list changed since
	// Discovered last reported it; limited counts the runs maxDiscovered
	// turned away since TakeLimited.
	discovered        []Discovered
	discoveredChanged bool
	maxDiscovered     int
	limited           int

	lastID int64
	// active holds the non-terminal runs by ID.
	active map[int64]*tracked
	// byKey indexes the active runs that follow a GitHub run.
	byKey map[runKey]*tracked
	// pending holds each pipeline's unclaimed runs, oldest first.
	pending map[string][]*tracked
	// deadlines orders the active runs that can time out by deadline.
	deadlines deadlines

	// lastFinished holds each pipeline's latest terminal run.
	lastFinished map[string]*Run
	// lastSuccess holds each pipeline's latest successful run: its live
	// build, when it verified one. It may be the same *Run as
	// lastFinished, never a second copy of it.
	lastSuccess map[string]*Run

	finished *finishedCache
	orphans  *orphanJobs
	pages    *pagesBuffer
	// workflowFiles names the file of the followed workflows by
	// repository and workflow id, learnt from runs that carry a path, for
	// the runs whose payload has none.
	workflowFiles map[workflowRef]string

	// changes collects what the event being applied did, one entry per run.
	changes []change
}

// change is what one Apply or Expire did to one run.
type change struct {
	tr          *tracked
	finished    bool
	startVerify bool
	stages      []stageRef
}

// stageRef names a stage across insertions: job stages by job id, the
// others by name.
type stageRef struct {
	name  string
	jobID int64
}

// NewTracker returns a Tracker for the given pipelines; now is its clock.
func NewTracker(specs []Spec, now func() time.Time) *Tracker {
	t := &Tracker{
		now:          now,
		active:       make(map[int64]*tracked),
		byKey:        make(map[runKey]*tracked),
		pending:      make(map[string][]*tracked),
		lastFinished: make(map[string]*Run),
		lastSuccess:  make(map[string]*Run),
		finished:     newFinishedCache(finishedCacheSize),
		orphans:      newOrphanJobs(orphanJobsMax, orphanJobsMaxAge),
		pages:        newPagesBuffer(pagesBufferSize),

		workflowFiles: make(map[workflowRef]string),
		maxDiscovered: DefaultMaxPipelines,
	}
	t.setSpecs(specs)
	return t
}

func (t *Tracker) setSpecs(specs []Spec) {
	t.written = slices.Clone(specs)
	t.rebuildSpecs()
}

// rebuildSpecs makes specs, byName and matchOrder from the written and
// discovered pipelines.
func (t *Tracker) rebuildSpecs() {
	t.specs = Instantiate(t.written, t.discovered)
	for _, s := range t.written {
		if s.Discover {
			t.specs = append(t.specs, s)
		}
	}
	t.byName = make(map[string]*Spec, len(t.specs))
	t.matchOrder = t.matchOrder[:0]
	for _, group := range []func(*Spec) bool{
		func(s *Spec) bool { return !s.Discover && s.Repository != "" },
		func(s *Spec) bool { return s.Discover },
		func(s *Spec) bool { return s.Repository == "" },
	} {
		for i := range t.specs {
			if group(&t.specs[i]) {
				t.matchOrder = append(t.matchOrder, &t.specs[i])
			}
		}
	}
	for i := range t.specs {
		if !t.specs[i].Discover {
			t.byName[t.specs[i].Name] = &t.specs[i]
		}
	}
}

// SetSpecs replaces the pipelines after a config reload. Runs in progress are
// kept; they follow the new timeouts of their pipeline, and runs of a
// pipeline that is gone keep the settings they started with.
func (t *Tracker) SetSpecs(specs []Spec) {
	t.setSpecs(specs)
	for _, tr := range t.active {
		if s := t.spec(tr.run.Pipeline); s != nil {
			tr.spec = *s
		}
		t.schedule(tr)
	}
}

func (t *Tracker) spec(name string) *Spec {
	return t.byName[name]
}

// Restore loads the state kept in the store after a restart: the
// non-terminal runs, each pipeline's last finished run, the highest run ID
// ever assigned and the held events. The Tracker takes ownership of the
// runs. Restored runs keep their SeenAt, so their timeouts fire as if the
// exporter had not stopped. Runs whose verify stage was running when the
// exporter stopped are listed by PendingVerifies; Restore reports nothing.
func (t *Tracker) Restore(active, lastFinished []*Run, maxID int64, held []HeldJob) {
	t.lastID = max(t.lastID, maxID)
	slices.SortFunc(active, func(a, b *Run) int { return cmp.Compare(a.ID, b.ID) })
	for _, r := range active {
		t.lastID = max(t.lastID, r.ID)
		tr := t.track(r)
		t.learnWorkflow(tr)
		t.active[r.ID] = tr
		if k, ok := tr.key(); ok {
			t.byKey[k] = tr
		}
		if r.Status == StatusPending {
			t.pending[r.Pipeline] = append(t.pending[r.Pipeline], tr)
		}
		t.schedule(tr)
	}
	for _, r := range lastFinished {
		t.lastID = max(t.lastID, r.ID)
		if r.GitHub != nil {
			tr := t.track(r)
			t.learnWorkflow(tr)
			t.finished.add(tr)
		}
		t.recordLast(r)
	}
	// After the runs, so that learning their workflows applies nothing.
	for _, h := range held {
		t.orphans.add(h.key(), h)
	}
	t.orphans.changed = false
}

// track wraps a run that did not come from this Tracker's own events. A
// run stored before attempts were normalised gets attempt 1, as its events
// now do.
func (t *Tracker) track(r *Run) *tracked {
	if r.GitHub != nil {
		r.GitHub.RunAttempt = attemptOf(r.GitHub.RunAttempt)
	}
	tr := &tracked{run: r, jobCreated: make(map[int64]time.Time)}
	if s := t.spec(r.Pipeline); s != nil {
		tr.spec = *s
	} else {
		tr.spec = Spec{Name: r.Pipeline}
	}
	for _, s := range r.Stages {
		if s.JobID != 0 && s.StartedAt != nil {
			tr.jobCreated[s.JobID] = s.StartedAt.Add(-time.Duration(s.QueuedSeconds * float64(time.Second)))
		}
	}
	return tr
}

// Apply applies one event and returns one Update per run it changed, and
// why it ignored the event: reason is empty when the event changed a run or
// was kept for a run still to come (a job before its run, a Pages
// deployment before its workflow finished), else it says why nothing
// changed (a duplicate, a late status, a workflow no pipeline follows).
func (t *Tracker) Apply(ev Event) (updates []Update, reason string) {
	t.changes = t.changes[:0]
	switch e := ev.(type) {
	case WorkflowRunEvent:
		e.RunAttempt = attemptOf(e.RunAttempt)
		reason = t.applyWorkflowRun(e)
	case WorkflowJobEvent:
		e.RunAttempt = attemptOf(e.RunAttempt)
		reason = t.applyJob(e)
	case TriggerEvent:
		reason = t.applyTrigger(e)
	case PagesDeploymentEvent:
		reason = t.applyPages(e)
	case VerifyResultEvent:
		reason = t.applyVerify(e)
	case RecheckResultEvent:
		reason = t.applyRecheck(e)
	default:
		reason = fmt.Sprintf("unknown event %T", ev)
	}
	ups := t.updates()
	if len(ups) > 0 {
		reason = ""
	}
	return ups, reason
}

// attemptOf is the run attempt a payload means: GitHub Enterprise Server
// and older api.github.com versions send no run_attempt, and their runs
// are first attempts.
func attemptOf(attempt int) int {
	return max(attempt, 1)
}

// NeedsRun reports the GitHub run (id and attempt) that ev concerns when
// the Tracker holds it neither in progress nor among the recently finished:
// the caller looks it up in the history and hands it to Recall before
// Apply, so that a late event for an old run does not open a new one.
func (t *Tracker) NeedsRun(ev Event) (runID int64, attempt int, ok bool) {
	e, isRun := ev.(WorkflowRunEvent)
	if !isRun {
		return 0, 0, false
	}
	key := runKey{e.RunID, attemptOf(e.RunAttempt)}
	if t.byKey[key] != nil || t.finished.byKey[key] != nil {
		return 0, 0, false
	}
	if spec, _ := t.matchWorkflow(e); spec == nil && !t.mayNameLater(e) {
		return 0, 0, false
	}
	return key.id, key.attempt, true
}

// Recall hands the Tracker a finished run from the history that NeedsRun
// asked for.
func (t *Tracker) Recall(r *Run) {
	if r == nil || !r.Status.Terminal() || r.GitHub == nil {
		return
	}
	// The Tracker's own copy of a run it still holds, so that a change
	// made through one is not lost by saving the other.
	for _, held := range []*Run{t.lastFinished[r.Pipeline], t.lastSuccess[r.Pipeline]} {
		if held != nil && held.ID == r.ID {
			r = held
		}
	}
	tr := t.track(r)
	t.learnWorkflow(tr)
	t.finished.add(tr)
	t.attachOrphans(tr)
}

// Held returns the job events kept for runs not seen yet when they changed
// since the last call (the caller commits them with the runs), and nil and
// false when they did not.
func (t *Tracker) Held() ([]HeldJob, bool) {
	return t.orphans.held()
}

// Expire ends the runs whose dispatch_timeout or timeout has passed on the
// Tracker's clock, and forgets job events that waited too long for their run.
func (t *Tracker) Expire() []Update {
	t.changes = t.changes[:0]
	now := t.now()
	t.orphans.expire(now)
	due := t.popDue(now)
	slices.SortFunc(due, func(a, b *tracked) int { return cmp.Compare(a.run.ID, b.run.ID) })
	for _, tr := range due {
		t.timeOut(tr, now)
	}
	return t.updates()
}

// deadline is when a run times out: dispatch_timeout while it is pending,
// timeout in any case, both from when the exporter first saw it. A zero
// duration disables that timeout.
func deadline(tr *tracked) (time.Time, bool) {
	var d time.Time
	found := false
	if tr.run.Status == StatusPending && tr.spec.DispatchTimeout > 0 {
		d, found = tr.run.SeenAt.Add(tr.spec.DispatchTimeout), true
	}
	if tr.spec.Timeout > 0 {
		if end := tr.run.SeenAt.Add(tr.spec.Timeout); !found || end.Before(d) {
			d, found = end, true
		}
	}
	return d, found
}

func (t *Tracker) sortedActive() []*tracked {
	trs := make([]*tracked, 0, len(t.active))
	for _, tr := range t.active {
		trs = append(trs, tr)
	}
	slices.SortFunc(trs, func(a, b *tracked) int { return cmp.Compare(a.run.ID, b.run.ID) })
	return trs
}

// open starts a run for the pipeline with its first trigger.
func (t *Tracker) open(spec *Spec, trig Trigger, status Status) *tracked {
	t.lastID++
	at := trig.ReceivedAt
	r := &Run{
		ID:        t.lastID,
		Pipeline:  spec.Name,
		Status:    status,
		Trigger:   trig,
		Triggers:  []Trigger{trig},
		CreatedAt: at,
		SeenAt:    t.now(),
	}
	tr := &tracked{run: r, spec: *spec, jobCreated: make(map[int64]time.Time)}
	t.active[r.ID] = tr
	t.touch(tr)
	t.addStage(tr, 0, Stage{Name: StageTrigger, Status: StatusSuccess, StartedAt: timePtr(at), FinishedAt: timePtr(at)})
	return tr
}

// timeOut ends a run that was not claimed within dispatch_timeout or not
// finished within timeout; its unfinished stages end timed_out with it.
func (t *Tracker) timeOut(tr *tracked, now time.Time) {
	reason := fmt.Sprintf("run did not finish within %s", tr.spec.Timeout)
	if tr.run.Status == StatusPending && tr.spec.DispatchTimeout > 0 && !tr.run.SeenAt.Add(tr.spec.DispatchTimeout).After(now) {
		reason = fmt.Sprintf("no workflow run picked up the trigger within %s", tr.spec.DispatchTimeout)
	}
	for i, s := range tr.run.Stages {
		if s.Status.Terminal() {
			continue
		}
		s.Status = StatusTimedOut
		s.FinishedAt = timePtr(now)
		if s.StartedAt != nil {
			s.DurationSeconds = seconds(*s.StartedAt, now)
		}
		t.setStage(tr, i, s)
	}
	t.finish(tr, StatusTimedOut, now, reason)
}

// finish makes a run terminal.
func (t *Tracker) finish(tr *tracked, status Status, at time.Time, reason string) {
	r := tr.run
	r.Status = status
	r.FinishedAt = timePtr(at)
	if r.StartedAt != nil && r.StartedAt.After(at) {
		// GitHub's run_started_at can be later than the updated_at the
		// run ends at (a run that waited for approval reports both).
		r.StartedAt = timePtr(at)
	}
	r.DurationSeconds = seconds(r.CreatedAt, at)
	r.Error = reason
	delete(t.active, r.ID)
	if k, ok := tr.key(); ok {
		delete(t.byKey, k)
		t.finished.add(tr)
	}
	t.removePending(tr)
	t.recordLast(r)
	// touched: updates takes it out of the deadlines heap.
	t.touch(tr).finished = true
}

func (t *Tracker) removePending(tr *tracked) {
	p := t.pending[tr.run.Pipeline]
	if i := slices.Index(p, tr); i >= 0 {
		p = slices.Delete(p, i, i+1)
		if len(p) == 0 {
			delete(t.pending, tr.run.Pipeline)
		} else {
			t.pending[tr.run.Pipeline] = p
		}
	}
}

// recordLast keeps the pipeline's last finished run:
// the one with the highest ID, that is the latest to begin, as the store
// orders them. A stuck older run that times out after a newer one finished
// does not hide the newer one's outcome.
func (t *Tracker) recordLast(r *Run) {
	if cur := t.lastFinished[r.Pipeline]; cur == nil || r.ID >= cur.ID {
		t.lastFinished[r.Pipeline] = r
	}
	if r.Status != StatusSuccess {
		return
	}
	if cur := t.lastSuccess[r.Pipeline]; cur == nil || r.ID >= cur.ID {
		t.lastSuccess[r.Pipeline] = r
	}
}

// touch returns the change entry of the run for the event being applied,
// creating it: the run will be part of the Updates. The pointer is valid
// until the next touch.
func (t *Tracker) touch(tr *tracked) *change {
	for i := range t.changes {
		if t.changes[i].tr == tr {
			return &t.changes[i]
		}
	}
	t.changes = append(t.changes, change{tr: tr})
	return &t.changes[len(t.changes)-1]
}

// setStage replaces stage i when st differs from it, and notes a stage that
// became terminal.
func (t *Tracker) setStage(tr *tracked, i int, st Stage) {
	old := tr.run.Stages[i]
	if sameStage(old, st) {
		return
	}
	tr.run.Stages[i] = st
	c := t.touch(tr)
	if !old.Status.Terminal() && st.Status.Terminal() {
		c.stages = append(c.stages, stageRef{st.Name, st.JobID})
	}
}

// addStage inserts a new stage at position i.
func (t *Tracker) addStage(tr *tracked, i int, st Stage) {
	tr.run.Stages = slices.Insert(tr.run.Stages, i, st)
	c := t.touch(tr)
	if st.Status.Terminal() {
		c.stages = append(c.stages, stageRef{st.Name, st.JobID})
	}
}

// updates turns the collected changes into Updates with copies of the runs.
func (t *Tracker) updates() []Update {
	if len(t.changes) == 0 {
		return nil
	}
	ups := make([]Update, len(t.changes))
	for i, c := range t.changes {
		// A change may have moved the run's deadline (claimed, so no
		// longer waiting for dispatch) or opened the run.
		t.schedule(c.tr)
		r := c.tr.run.Clone()
		u := Update{Run: r, Finished: c.finished, StartVerify: c.startVerify}
		for _, ref := range c.stages {
			for _, s := range r.Stages {
				if s.Name == ref.name && s.JobID == ref.jobID {
					u.StagesFinished = append(u.StagesFinished, s)
					break
				}
			}
		}
		ups[i] = u
	}
	clear(t.changes)
	t.changes = t.changes[:0]
	return ups
}

// specialIndex finds the trigger, dispatch, pages or verify stage; a job may
// carry the same name, but never a zero job id.
func specialIndex(r *Run, name string) int {
	return slices.IndexFunc(r.Stages, func(s Stage) bool { return s.JobID == 0 && s.Name == name })
}

func specialStage(r *Run, name string) *Stage {
	if i := specialIndex(r, name); i >= 0 {
		return &r.Stages[i]
	}
	return nil
}

func sameStage(a, b Stage) bool {
	return a.Name == b.Name && a.Status == b.Status && sameTime(a.StartedAt, b.StartedAt) &&
		sameTime(a.FinishedAt, b.FinishedAt) && a.DurationSeconds == b.DurationSeconds &&
		a.URL == b.URL && a.Error == b.Error && a.JobID == b.JobID &&
		a.QueuedSeconds == b.QueuedSeconds && a.ResponseSeconds == b.ResponseSeconds
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func timePtr(t time.Time) *time.Time { return &t }

// seconds is the non-negative time from start to end: GitHub's one-second
// timestamps and the clock-skew allowance can put an end before its start.
func seconds(start, end time.Time) float64 {
	return max(end.Sub(start).Seconds(), 0)
}
