package pipeline

import (
	"container/list"
)

// finishedCache remembers the most recently finished GitHub runs, first in
// first out.
type finishedCache struct {
	ring  []*tracked
	next  int
	byKey map[runKey]*tracked
	byID  map[int64]*tracked
}

func newFinishedCache(size int) *finishedCache {
	return &finishedCache{
		ring:  make([]*tracked, size),
		byKey: make(map[runKey]*tracked, size),
		byID:  make(map[int64]*tracked, size),
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
		delete(c.byID, old.run.ID)
	}
	c.ring[c.next] = tr
	c.next = (c.next + 1) % len(c.ring)
	c.byKey[k] = tr
	c.byID[tr.run.ID] = tr
}

// orphanJobs holds job events whose workflow run is not known yet, up to max
// events; past that the run that has waited longest loses its jobs.
type orphanJobs struct {
	max   int
	count int
	order *list.List // of runKey, oldest first
	byKey map[runKey]*orphanEntry
}

type orphanEntry struct {
	elem *list.Element
	jobs []WorkflowJobEvent
}

func newOrphanJobs(max int) *orphanJobs {
	return &orphanJobs{max: max, order: list.New(), byKey: make(map[runKey]*orphanEntry)}
}

func (o *orphanJobs) add(k runKey, e WorkflowJobEvent) {
	ent := o.byKey[k]
	if ent == nil {
		ent = &orphanEntry{elem: o.order.PushBack(k)}
		o.byKey[k] = ent
	}
	ent.jobs = append(ent.jobs, e)
	o.count++
	for o.count > o.max {
		o.take(o.order.Front().Value.(runKey))
	}
}

// take removes and returns the jobs kept for the run.
func (o *orphanJobs) take(k runKey) []WorkflowJobEvent {
	ent := o.byKey[k]
	if ent == nil {
		return nil
	}
	delete(o.byKey, k)
	o.order.Remove(ent.elem)
	o.count -= len(ent.jobs)
	return ent.jobs
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

func (b *pagesBuffer) put(e PagesDeploymentEvent) {
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
		return
	}
	if old.Deployment.DeploymentID != e.Deployment.DeploymentID {
		if e.CreatedOn.Before(old.CreatedOn) {
			return
		}
	} else if pagesStatus(latestPagesStage(old)).Terminal() && !pagesStatus(latestPagesStage(e)).Terminal() {
		return
	}
	b.byKey[k] = e
}

func (b *pagesBuffer) get(project, commit string) (PagesDeploymentEvent, bool) {
	e, ok := b.byKey[pagesKey{project, commit}]
	return e, ok
}
