package pipeline

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Cloudflare Pages' stage statuses and the name of its last stage.
const (
	cfSuccess  = "success"
	cfFailure  = "failure"
	cfCanceled = "canceled"
	cfIdle     = "idle"
	cfDeploy   = "deploy"
)

// applyPages keeps the deployment for runs whose workflow has not finished
// yet and applies it to the runs waiting for it: the active runs of the
// project's pipelines whose head commit it deploys.
func (t *Tracker) applyPages(e PagesDeploymentEvent) string {
	if !slices.ContainsFunc(t.specs, func(s Spec) bool { return s.PagesProject == e.Project }) {
		return "no pipeline for Pages project " + e.Project
	}
	if !t.pages.put(e) {
		return fmt.Sprintf("deployment %s of project %s already seen", e.Deployment.DeploymentID, e.Project)
	}
	var waiting []*tracked
	for _, tr := range t.active {
		if tr.spec.PagesProject == e.Project && tr.run.GitHub != nil && tr.run.GitHub.HeadSHA == e.Deployment.CommitHash {
			waiting = append(waiting, tr)
		}
	}
	slices.SortFunc(waiting, func(a, b *tracked) int { return cmp.Compare(a.run.ID, b.run.ID) })
	for _, tr := range waiting {
		t.applyPagesTo(tr, e)
	}
	// Kept for a run whose workflow has not finished yet.
	return ""
}

// latestPagesStage is the deployment's current stage: Cloudflare's
// latest_stage, or the last stage that left idle.
func latestPagesStage(e PagesDeploymentEvent) PagesStage {
	if e.LatestStage.Name != "" {
		return e.LatestStage
	}
	var latest PagesStage
	for _, s := range e.Deployment.Stages {
		if s.Status != cfIdle {
			latest = s
		}
	}
	return latest
}

// pagesStatus maps the deployment's current stage to the pages stage status:
// failure is failed, canceled is cancelled, success of the deploy stage is
// success, and anything else (idle, active, an earlier stage's success) is
// running.
func pagesStatus(latest PagesStage) Status {
	switch {
	case latest.Status == cfFailure:
		return StatusFailed
	case latest.Status == cfCanceled:
		return StatusCancelled
	case latest.Status == cfSuccess && latest.Name == cfDeploy:
		return StatusSuccess
	}
	return StatusRunning
}

// applyPagesTo updates a run's pages stage from its deployment. A run keeps
// the first deployment it matched that was created after the run began
// (less the clock skew); other deployments of the same commit belong to
// other runs or attempts.
func (t *Tracker) applyPagesTo(tr *tracked, e PagesDeploymentEvent) {
	r := tr.run
	i := specialIndex(r, StagePages)
	if i < 0 || r.Stages[i].Status.Terminal() {
		return
	}
	if r.Pages != nil && r.Pages.DeploymentID != e.Deployment.DeploymentID {
		return
	}
	if !e.CreatedOn.IsZero() && e.CreatedOn.Before(r.CreatedAt.Add(-tr.spec.ClockSkew)) {
		// Deployed before the run began: an earlier run (or attempt) of
		// the same commit.
		return
	}
	latest := latestPagesStage(e)
	st := Stage{Name: StagePages, Status: pagesStatus(latest), URL: e.Deployment.URL}
	started := e.CreatedOn
	if started.IsZero() && len(e.Deployment.Stages) > 0 && e.Deployment.Stages[0].StartedOn != nil {
		started = *e.Deployment.Stages[0].StartedOn
	}
	if !started.IsZero() {
		st.StartedAt = timePtr(started)
	}
	var end time.Time
	if st.Status.Terminal() {
		end = t.now()
		if latest.EndedOn != nil {
			end = *latest.EndedOn
		}
		st.FinishedAt = timePtr(end)
		if st.StartedAt != nil {
			st.DurationSeconds = seconds(started, end)
		}
		if st.Status != StatusSuccess {
			st.Error = fmt.Sprintf("pages stage %s %s", latest.Name, latest.Status)
		}
	}

	dep := e.Deployment
	dep.Stages = slices.Clone(dep.Stages)
	if dep.Project == "" {
		dep.Project = e.Project
	}
	if !samePages(r.Pages, &dep) {
		r.Pages = &dep
		t.touch(tr)
	}
	t.setStage(tr, i, st)

	switch st.Status {
	case StatusSuccess:
		t.deployed(tr, end)
	case StatusFailed, StatusCancelled:
		t.finish(tr, st.Status, end, stageError(&r.Stages[i]))
	}
}

func samePages(a, b *PagesDeployment) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Project == b.Project && a.DeploymentID == b.DeploymentID && a.URL == b.URL &&
		a.Environment == b.Environment && a.CommitHash == b.CommitHash &&
		slices.EqualFunc(a.Stages, b.Stages, samePagesStage)
}

func samePagesStage(x, y PagesStage) bool {
	return x.Name == y.Name && x.Status == y.Status && sameTime(x.StartedOn, y.StartedOn) && sameTime(x.EndedOn, y.EndedOn)
}
