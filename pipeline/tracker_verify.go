package pipeline

import (
	"fmt"
	"time"
)

// PendingVerifies returns copies of the runs whose verify stage is running:
// after Restore, the caller checks their live site again, since the check
// that was under way died with the previous process.
func (t *Tracker) PendingVerifies() []*Run {
	var runs []*Run
	for _, tr := range t.sortedActive() {
		if s := specialStage(tr.run, StageVerify); s != nil && s.Status == StatusRunning {
			runs = append(runs, tr.run.Clone())
		}
	}
	return runs
}

// startVerify adds the running verify stage; the caller checks the site.
func (t *Tracker) startVerify(tr *tracked) {
	if specialStage(tr.run, StageVerify) != nil {
		return
	}
	t.addStage(tr, len(tr.run.Stages), Stage{Name: StageVerify, Status: StatusRunning, StartedAt: timePtr(t.now())})
	t.touch(tr).startVerify = true
}

// deployed continues a run whose workflow (and Pages deployment, when the
// pipeline has one) succeeded at the given time.
func (t *Tracker) deployed(tr *tracked, at time.Time) {
	if tr.spec.Verify {
		t.startVerify(tr)
		return
	}
	t.finish(tr, StatusSuccess, at, "")
}

// applyVerify ends the verify stage of a run with the live site's answer,
// and the run with it.
func (t *Tracker) applyVerify(e VerifyResultEvent) string {
	tr := t.active[e.RunID]
	if tr == nil {
		return fmt.Sprintf("run %d is not in progress", e.RunID)
	}
	i := specialIndex(tr.run, StageVerify)
	if i < 0 || tr.run.Stages[i].Status.Terminal() {
		return fmt.Sprintf("run %d is not verifying", e.RunID)
	}
	st := tr.run.Stages[i]
	if !e.StartedAt.IsZero() {
		st.StartedAt = timePtr(e.StartedAt)
	}
	end := e.FinishedAt
	if end.IsZero() {
		end = t.now()
	}
	st.FinishedAt = timePtr(end)
	st.DurationSeconds = seconds(*st.StartedAt, end)
	st.ResponseSeconds = e.ResponseSeconds
	st.Error = e.Error
	st.Status = StatusSuccess
	if !e.Success {
		st.Status = StatusFailed
	}
	t.setStage(tr, i, st)
	if e.Success {
		t.finish(tr, StatusSuccess, end, "")
		return ""
	}
	reason := "stage verify failed"
	if e.Error != "" {
		reason += ": " + e.Error
	}
	t.finish(tr, StatusFailed, end, reason)
	return ""
}
