package pipeline

import (
	"cmp"
	"container/heap"
	"time"
)

// deadlines is a min-heap of the active runs that have a deadline, earliest
// first (ties by run ID, so that the order never depends on map order). It
// is kept for speed: the Applier asks for the next deadline after every
// delivery, and walking every unfinished run made a webhook's CPU grow with
// them (1.27 ms with none, 7.45 ms with 31,500). `make bench`'s rows
// "BenchmarkTrackerNextDeadline/unfinished=0" and ".../unfinished=30000"
// pay for it: with 30,000 unfinished runs a delivery's Apply and
// NextDeadline took 19-31 ms walking the runs and 3-15 µs with the heap,
// about what they take with none (3-13 µs).
//
// A run's deadline depends on its status, its spec and SeenAt; the Tracker
// calls schedule after every change of those (the runs an Apply or Expire
// touched, Restore, SetSpecs), so the heap always holds each active run's
// current deadline.
type deadlines []*tracked

func (h deadlines) Len() int { return len(h) }

func (h deadlines) Less(i, j int) bool {
	if c := h[i].deadline.Compare(h[j].deadline); c != 0 {
		return c < 0
	}
	return cmp.Less(h[i].run.ID, h[j].run.ID)
}

func (h deadlines) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapSlot = i + 1
	h[j].heapSlot = j + 1
}

func (h *deadlines) Push(x any) {
	tr := x.(*tracked)
	*h = append(*h, tr)
	tr.heapSlot = len(*h)
}

func (h *deadlines) Pop() any {
	old := *h
	n := len(old) - 1
	tr := old[n]
	old[n] = nil
	tr.heapSlot = 0
	*h = old[:n]
	return tr
}

// schedule puts tr in the heap at its current deadline when it is active
// and has one, and takes it out otherwise.
func (t *Tracker) schedule(tr *tracked) {
	d, ok := deadline(tr)
	if ok && t.active[tr.run.ID] != tr {
		ok = false
	}
	switch {
	case ok && tr.heapSlot > 0:
		if !d.Equal(tr.deadline) {
			tr.deadline = d
			heap.Fix(&t.deadlines, tr.heapSlot-1)
		}
	case ok:
		tr.deadline = d
		heap.Push(&t.deadlines, tr)
	case tr.heapSlot > 0:
		heap.Remove(&t.deadlines, tr.heapSlot-1)
	}
}

// NextDeadline returns the earliest time at which Expire has work to do.
func (t *Tracker) NextDeadline() (time.Time, bool) {
	if len(t.deadlines) == 0 {
		return time.Time{}, false
	}
	return t.deadlines[0].deadline, true
}

// popDue takes the runs whose deadline is not after now out of the heap.
func (t *Tracker) popDue(now time.Time) []*tracked {
	var due []*tracked
	for len(t.deadlines) > 0 && !t.deadlines[0].deadline.After(now) {
		due = append(due, heap.Pop(&t.deadlines).(*tracked))
	}
	return due
}
