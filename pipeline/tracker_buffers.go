package pipeline

import (
	"container/list"
	"slices"
	"time"
)

// finishedCache remembers the most recently finished GitHub runs, first in
// first out.
type finishedCache struct {
	ring  []*tracked
	next  int
	byKey map[runKey]*tracked
}

func newFinishedCache(size int) *finishedCache {
	return &finishedCache{
		ring:  make([]*tracked, size),
		byKey: make(map[runKey]*tracked, size),
	}
}

func (c *finishedCache) add(tr *tracked) {
	k, ok := tr.key()
	if !ok || c.byKey[k] != nil {
		return
	}
	if old := c.ring[c.next]; old != nil {
		oldKey, _ := old.key()
		delete(c.byKey, oldKey)
	}
	c.ring[c.next] = tr
	c.next = (c.next + 1) % len(c.ring)
	c.byKey[k] = tr
}

// HeldJob is a job event the Tracker keeps until its workflow run arrives
// (GitHub does not order its deliveries), or, when Run is set, a workflow
// run event without a path whose workflow the Tracker cannot name yet: it
// is applied once another event of the run, or of another run of the same
// workflow, names the file. Held events are part of the committed state, so
// a restart does not lose them.
type HeldJob struct {
	Job WorkflowJobEvent `json:"job"`
	// Run, when set, is the held workflow run event; Job is then empty.
	Run *WorkflowRunEvent `json:"run,omitempty"`
	// HeldAt is when the Tracker first kept it, on its own clock.
	HeldAt time.Time `json:"held_at"`
}

// key is the GitHub run the held event belongs to.
func (h HeldJob) key() runKey {
	if h.Run != nil {
		return runKey{h.Run.RunID, attemptOf(h.Run.RunAttempt)}
	}
	return runKey{h.Job.RunID, attemptOf(h.Job.RunAttempt)}
}

// orphanJobs holds job events whose workflow run is not known yet, up to max
// events and for at most maxAge; past max the run that has waited longest
// loses its jobs.
type orphanJobs struct {
	max    int
	maxAge time.Duration
	count  int
	order  *list.List // of runKey, oldest first
	byKey  map[runKey]*orphanEntry
	// changed is set by every add and take, and cleared by held.
	changed bool
}

type orphanEntry struct {
	elem *list.Element
	jobs []HeldJob
}

func newOrphanJobs(max int, maxAge time.Duration) *orphanJobs {
	return &orphanJobs{max: max, maxAge: maxAge, order: list.New(), byKey: make(map[runKey]*orphanEntry)}
}

func (o *orphanJobs) add(k runKey, h HeldJob) {
	ent := o.byKey[k]
	if ent == nil {
		ent = &orphanEntry{elem: o.order.PushBack(k)}
		o.byKey[k] = ent
	}
	ent.jobs = append(ent.jobs, h)
	o.count++
	o.changed = true
	for o.count > o.max {
		o.take(o.order.Front().Value.(runKey))
	}
}

// take removes and returns the events kept for the run.
func (o *orphanJobs) take(k runKey) []HeldJob {
	ent := o.byKey[k]
	if ent == nil {
		return nil
	}
	delete(o.byKey, k)
	o.order.Remove(ent.elem)
	o.count -= len(ent.jobs)
	o.changed = true
	return ent.jobs
}

// heldRuns returns the keys of the runs whose held events include a run
// event that matches, oldest first.
func (o *orphanJobs) heldRuns(match func(WorkflowRunEvent) bool) []runKey {
	var keys []runKey
	for e := o.order.Front(); e != nil; e = e.Next() {
		k := e.Value.(runKey)
		if slices.ContainsFunc(o.byKey[k].jobs, func(h HeldJob) bool { return h.Run != nil && match(*h.Run) }) {
			keys = append(keys, k)
		}
	}
	return keys
}

// expire drops the runs whose first job has waited longer than maxAge.
func (o *orphanJobs) expire(now time.Time) {
	for e := o.order.Front(); e != nil; e = o.order.Front() {
		k := e.Value.(runKey)
		if now.Sub(o.byKey[k].jobs[0].HeldAt) <= o.maxAge {
			return
		}
		o.take(k)
	}
}

// held returns every kept job, oldest run first, when the set changed
// since the last call, and nil and false when it did not: the Applier asks
// at every commit, and the set can hold thousands.
func (o *orphanJobs) held() ([]HeldJob, bool) {
	if !o.changed {
		return nil, false
	}
	o.changed = false
	var all []HeldJob
	for e := o.order.Front(); e != nil; e = e.Next() {
		all = append(all, o.byKey[e.Value.(runKey)].jobs...)
	}
	return all, true
}

// pagesBuffer keeps the latest known state of the newest deployment of each
// (project, commit), first in first out.
type pagesBuffer struct {
	ring  []pagesKey
	next  int
	used  int
	byKey map[pagesKey]PagesDeploymentEvent
}

type pagesKey struct {
	project, commit string
}

func newPagesBuffer(size int) *pagesBuffer {
	return &pagesBuffer{ring: make([]pagesKey, size), byKey: make(map[pagesKey]PagesDeploymentEvent, size)}
}

// put keeps e unless the buffer has it already, a newer deployment of the
// commit or a later state of the same deployment, and reports whether it
// kept it.
func (b *pagesBuffer) put(e PagesDeploymentEvent) bool {
	k := pagesKey{e.Project, e.Deployment.CommitHash}
	old, ok := b.byKey[k]
	if !ok {
		if b.used == len(b.ring) {
			delete(b.byKey, b.ring[b.next])
		} else {
			b.used++
		}
		b.ring[b.next] = k
		b.next = (b.next + 1) % len(b.ring)
		b.byKey[k] = e
		return true
	}
	switch {
	case samePages(&old.Deployment, &e.Deployment) && samePagesStage(old.LatestStage, e.LatestStage):
		return false
	case old.Deployment.DeploymentID != e.Deployment.DeploymentID:
		if e.CreatedOn.Before(old.CreatedOn) {
			return false
		}
	case pagesStatus(latestPagesStage(old)).Terminal() && !pagesStatus(latestPagesStage(e)).Terminal():
		return false
	}
	b.byKey[k] = e
	return true
}

func (b *pagesBuffer) get(project, commit string) (PagesDeploymentEvent, bool) {
	e, ok := b.byKey[pagesKey{project, commit}]
	return e, ok
}
