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
	tr.run.Verify = &VerifyCheck{
		URL:             e.URL,
		StatusCode:      e.StatusCode,
		ResponseSeconds: e.ResponseSeconds,
		Build:           e.Build,
		Served:          e.Served,
		ServedRunID:     e.ServedRunID,
		CheckedAt:       end,
	}
	if e.Success {
		tr.run.Verify.VerifiedAt = timePtr(end)
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

// RestoreSuccess loads each pipeline's latest successful run after
// Restore, so that rechecks of its live build can be applied. A run that
// Restore already holds (the last finished one) is kept as it is.
func (t *Tracker) RestoreSuccess(runs []*Run) {
	for _, r := range runs {
		if cur := t.lastSuccess[r.Pipeline]; cur != nil && cur.ID >= r.ID {
			continue
		}
		t.lastSuccess[r.Pipeline] = r
		if r.GitHub != nil {
			tr := t.track(r)
			t.learnWorkflow(tr)
			t.finished.add(tr)
		}
	}
}

// staleAfter is how many rechecks in a row must miss the live build
// before the pipeline is stale: one miss may be a single edge node or a
// blip, two are a site that stopped serving it.
const staleAfter = 2

// applyRecheck records a later look at the site for the pipeline's live
// build. A miss counts towards staleness only while no newer run of the
// pipeline has started (a newer run replacing the build is no staleness);
// a hit clears it.
func (t *Tracker) applyRecheck(e RecheckResultEvent) string {
	var r *Run
	for _, s := range t.lastSuccess {
		if s.ID == e.RunID {
			r = s
			break
		}
	}
	if r == nil || r.Verify == nil || r.Verify.Build == "" {
		return fmt.Sprintf("run %d is not the live build of its pipeline", e.RunID)
	}
	if r.Verify.VerifiedAt != nil && e.CheckedAt.Before(*r.Verify.VerifiedAt) {
		return fmt.Sprintf("recheck of run %d is older than its verify check", e.RunID)
	}
	v := *r.Verify
	v.CheckedAt = e.CheckedAt
	v.URL = e.URL
	v.StatusCode = e.StatusCode
	v.ResponseSeconds = e.ResponseSeconds
	v.Served = e.Served
	v.ServedRunID = e.ServedRunID
	v.Error = e.Error
	switch {
	case e.Success:
		v.FailedRechecks = 0
		v.Stale = false
	case !t.newerRun(r):
		v.FailedRechecks++
		v.Stale = v.Stale || v.FailedRechecks >= staleAfter
	}
	*r.Verify = v
	t.touch(&tracked{run: r})
	return ""
}

// newerRun reports whether a run of r's pipeline started after r: one in
// progress, or a later finished one.
func (t *Tracker) newerRun(r *Run) bool {
	if f := t.lastFinished[r.Pipeline]; f != nil && f.ID > r.ID {
		return true
	}
	for _, tr := range t.active {
		if tr.run.Pipeline == r.Pipeline && tr.run.ID > r.ID {
			return true
		}
	}
	return false
}
