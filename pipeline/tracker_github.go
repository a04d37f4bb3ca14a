package pipeline

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// GitHub's workflow run and job statuses, as sent in the `status` field.
const (
	ghCompleted  = "completed"
	ghInProgress = "in_progress"
)

// runConclusion maps a completed workflow run's conclusion to the run's
// status, with the error a run that did not succeed reports:
//
//	conclusion       run status  error
//	success          success
//	neutral          success                  (GitHub's "neither passed nor failed")
//	skipped          cancelled   workflow run skipped   (nothing was published)
//	failure          failed      workflow run failed    (or "stage X failed")
//	startup_failure  failed      workflow run failed to start
//	action_required  failed      action required        (a person must approve it)
//	cancelled        cancelled   workflow run cancelled
//	stale            cancelled   workflow run stale     (GitHub gave up on it)
//	timed_out        timed_out   workflow run timed out
//	anything else    failed      workflow run concluded "<value>"
//
// A successful run then goes on to its Pages and verify stages; the others
// end here.
func runConclusion(conclusion string) (Status, string) {
	switch conclusion {
	case "success", "neutral":
		return StatusSuccess, ""
	case "skipped":
		return StatusCancelled, "workflow run skipped"
	case "failure":
		return StatusFailed, "workflow run failed"
	case "startup_failure":
		return StatusFailed, "workflow run failed to start"
	case "action_required":
		return StatusFailed, "action required"
	case "cancelled":
		return StatusCancelled, "workflow run cancelled"
	case "stale":
		return StatusCancelled, "workflow run stale"
	case "timed_out":
		return StatusTimedOut, "workflow run timed out"
	}
	return StatusFailed, fmt.Sprintf("workflow run concluded %q", conclusion)
}

// jobConclusion maps a completed job's conclusion to its stage status:
//
//	conclusion                         stage status
//	success, neutral                   success
//	skipped                            skipped
//	failure, startup_failure,
//	action_required, anything else     failed
//	cancelled, stale                   cancelled
//	timed_out                          timed_out
func jobConclusion(conclusion string) Status {
	switch conclusion {
	case "success", "neutral":
		return StatusSuccess
	case "skipped":
		return StatusSkipped
	case "cancelled", "stale":
		return StatusCancelled
	case "timed_out":
		return StatusTimedOut
	}
	return StatusFailed
}

// workflowFile is the file name of a workflow path without its "@ref":
// ".github/workflows/deploy.yml@refs/heads/main" is "deploy.yml".
func workflowFile(p string) string {
	p, _, _ = strings.Cut(p, "@")
	if p == "" {
		return ""
	}
	return path.Base(p)
}

// matchWorkflow returns the first pipeline, in config order, that follows
// the workflow run: by numeric workflow id or by file name, on a listed branch.
func (t *Tracker) matchWorkflow(e WorkflowRunEvent) *Spec {
	file := workflowFile(e.WorkflowPath)
	id := strconv.FormatInt(e.WorkflowID, 10)
	for i := range t.specs {
		s := &t.specs[i]
		if s.Workflow != file && (e.WorkflowID == 0 || s.Workflow != id) {
			continue
		}
		if len(s.Branches) == 0 || slices.Contains(s.Branches, e.HeadBranch) {
			return s
		}
	}
	return nil
}

// opensOwnRun reports whether a workflow run with no pending trigger to
// claim may start a run: a `github` trigger rule's events limit it.
func opensOwnRun(spec *Spec, event string) bool {
	for _, rule := range spec.Triggers {
		if rule.Source == SourceGitHub && len(rule.Events) > 0 && !slices.Contains(rule.Events, event) {
			return false
		}
	}
	return true
}

// runOrder places a workflow run update: a completed status never gives way,
// then the later updated_at wins, then the later status.
type runOrder struct {
	completed bool
	at        time.Time
	rank      int
}

func (o runOrder) after(p runOrder) bool {
	if o.completed != p.completed {
		return o.completed
	}
	if !o.at.Equal(p.at) {
		return o.at.After(p.at)
	}
	return o.rank > p.rank
}

// githubRank orders GitHub's statuses in the order a run goes through them.
func githubRank(status string) int {
	switch status {
	case "requested":
		return 1
	case "queued":
		return 2
	case "pending":
		return 3
	case "waiting":
		return 4
	case ghInProgress:
		return 5
	case ghCompleted:
		return 6
	}
	return 0
}

func (t *Tracker) applyWorkflowRun(e WorkflowRunEvent) string {
	key := runKey{e.RunID, e.RunAttempt}
	spec := t.matchWorkflow(e)
	if spec == nil {
		// Jobs of workflows no pipeline follows would otherwise wait in
		// the orphan buffer until pushed out.
		t.orphans.take(key)
		return fmt.Sprintf("no pipeline for workflow %s in repository %s", workflowName(e), e.Repository)
	}
	if tr := t.byKey[key]; tr != nil {
		t.updateWorkflow(tr, e)
		return ""
	}
	if t.finished.byKey[key] != nil {
		return "already finished"
	}

	var tr *tracked
	if p := t.pending[spec.Name]; len(p) > 0 && !e.CreatedAt.Before(p[0].run.Trigger.ReceivedAt.Add(-spec.ClockSkew)) {
		tr = p[0]
		t.removePending(tr)
		tr.run.Status = StatusRunning
		if i := specialIndex(tr.run, StageDispatch); i >= 0 {
			start := tr.run.Trigger.ReceivedAt
			end := e.CreatedAt
			if end.Before(start) {
				end = start
			}
			st := tr.run.Stages[i]
			st.Status, st.StartedAt, st.FinishedAt, st.DurationSeconds = StatusSuccess, timePtr(start), timePtr(end), seconds(start, end)
			t.setStage(tr, i, st)
		}
	} else {
		if !opensOwnRun(spec, e.Event) {
			return fmt.Sprintf("pipeline %s does not start on %s events", spec.Name, e.Event)
		}
		tr = t.open(spec, Trigger{
			Source:     SourceGitHub,
			Event:      e.Event,
			DeliveryID: e.DeliveryID,
			ReceivedAt: e.CreatedAt,
			Ref:        e.HeadBranch,
			SHA:        e.HeadSHA,
		}, StatusRunning)
	}
	tr.run.GitHub = &GitHubRun{RunID: e.RunID, RunAttempt: e.RunAttempt}
	setGitHub(tr.run, e)
	t.byKey[key] = tr
	t.touch(tr)
	t.attachOrphans(tr)
	if e.Status == ghCompleted {
		t.completeWorkflow(tr)
	}
	return ""
}

// workflowName is the workflow file of a run event, else its id.
func workflowName(e WorkflowRunEvent) string {
	if f := workflowFile(e.WorkflowPath); f != "" {
		return f
	}
	return strconv.FormatInt(e.WorkflowID, 10)
}

// setGitHub copies what the workflow run event says into the run.
func setGitHub(r *Run, e WorkflowRunEvent) {
	name := workflowFile(e.WorkflowPath)
	if name == "" {
		name = e.Name
	}
	*r.GitHub = GitHubRun{
		Repository: e.Repository,
		RunID:      e.RunID,
		RunAttempt: e.RunAttempt,
		WorkflowID: e.WorkflowID,
		Workflow:   name,
		HTMLURL:    e.HTMLURL,
		HeadSHA:    e.HeadSHA,
		HeadBranch: e.HeadBranch,
		Event:      e.Event,
		Status:     e.Status,
		Conclusion: e.Conclusion,
		CreatedAt:  e.CreatedAt,
		UpdatedAt:  e.UpdatedAt,
	}
	started := e.RunStartedAt
	if started.IsZero() {
		started = e.CreatedAt
	}
	r.StartedAt = timePtr(started)
}

// updateWorkflow applies a later event of a run already tracked.
func (t *Tracker) updateWorkflow(tr *tracked, e WorkflowRunEvent) {
	g := tr.run.GitHub
	if g.Status == ghCompleted {
		return
	}
	next := runOrder{e.Status == ghCompleted, e.UpdatedAt, githubRank(e.Status)}
	if !next.after(runOrder{false, g.UpdatedAt, githubRank(g.Status)}) {
		return
	}
	setGitHub(tr.run, e)
	t.touch(tr)
	if e.Status == ghCompleted {
		t.completeWorkflow(tr)
	}
}

// completeWorkflow moves a run on when its workflow run completed: to its
// end, or to the Pages or verify stage.
func (t *Tracker) completeWorkflow(tr *tracked) {
	g := tr.run.GitHub
	at := g.UpdatedAt
	status, reason := runConclusion(g.Conclusion)
	bad := failedJob(tr.run)
	if bad != nil && (status == StatusSuccess || status == StatusFailed) {
		// A run succeeds only when every stage did: a job allowed to fail
		// (continue-on-error) still fails the run, and a failed run says
		// which stage broke.
		t.finish(tr, StatusFailed, at, stageError(bad))
		return
	}
	if status != StatusSuccess {
		t.finish(tr, status, at, reason)
		return
	}
	if tr.spec.PagesProject != "" {
		t.addStage(tr, len(tr.run.Stages), Stage{Name: StagePages, Status: StatusPending})
		if d, ok := t.pages.get(tr.spec.PagesProject, g.HeadSHA); ok {
			t.applyPagesTo(tr, d)
		}
		return
	}
	t.deployed(tr, at)
}

// failedJob returns the first job stage that failed, or else the first that
// was cancelled or timed out.
func failedJob(r *Run) *Stage {
	var other *Stage
	for i := range r.Stages {
		s := &r.Stages[i]
		if s.JobID == 0 {
			continue
		}
		switch s.Status {
		case StatusFailed:
			return s
		case StatusCancelled, StatusTimedOut:
			if other == nil {
				other = s
			}
		}
	}
	return other
}

func stageError(s *Stage) string {
	word := string(s.Status)
	if s.Status == StatusTimedOut {
		word = "timed out"
	}
	return fmt.Sprintf("stage %s %s", s.Name, word)
}

// applyJob updates the job's stage in its run, or keeps the job until the
// run's own event arrives. Late job events still complete the stages of a
// recently finished run (GitHub may deliver them after the run's
// `completed`); the run's status does not change any more.
func (t *Tracker) applyJob(e WorkflowJobEvent) string {
	key := runKey{e.RunID, e.RunAttempt}
	tr := t.byKey[key]
	if tr == nil {
		tr = t.finished.byKey[key]
	}
	if tr == nil {
		t.orphans.add(key, HeldJob{Job: e, HeldAt: t.now()})
		return ""
	}
	t.updateJob(tr, e)
	return "no change to job " + e.Name
}

func (t *Tracker) attachOrphans(tr *tracked) {
	k, _ := tr.key()
	for _, e := range t.orphans.take(k) {
		t.updateJob(tr, e)
	}
}

// jobOrder places a job event the way runOrder places run events; GitHub
// jobs have no updated_at, so the time of the status they report stands in.
func jobOrder(e WorkflowJobEvent) runOrder {
	switch e.Status {
	case ghCompleted:
		return runOrder{true, e.CompletedAt, 3}
	case ghInProgress:
		return runOrder{false, e.StartedAt, 2}
	}
	return runOrder{false, e.CreatedAt, 1}
}

// stageOrder is the jobOrder of the event a job stage was built from.
func stageOrder(s Stage) runOrder {
	switch {
	case s.Status.Terminal():
		o := runOrder{completed: true, rank: 3}
		if s.FinishedAt != nil {
			o.at = *s.FinishedAt
		}
		return o
	case s.Status == StatusRunning:
		o := runOrder{rank: 2}
		if s.StartedAt != nil {
			o.at = *s.StartedAt
		}
		return o
	}
	return runOrder{rank: 1}
}

// jobStage builds the stage a job event describes.
func jobStage(e WorkflowJobEvent) Stage {
	st := Stage{Name: e.Name, JobID: e.JobID, URL: e.HTMLURL, Status: StatusPending}
	switch e.Status {
	case ghCompleted:
		st.Status = jobConclusion(e.Conclusion)
	case ghInProgress:
		st.Status = StatusRunning
	}
	if st.Status != StatusPending && !e.StartedAt.IsZero() {
		st.StartedAt = timePtr(e.StartedAt)
		st.QueuedSeconds = seconds(e.CreatedAt, e.StartedAt)
	}
	if st.Status.Terminal() && !e.CompletedAt.IsZero() {
		st.FinishedAt = timePtr(e.CompletedAt)
		if st.StartedAt != nil {
			st.DurationSeconds = seconds(e.StartedAt, e.CompletedAt)
		}
	}
	if st.Status.Terminal() && st.Status != StatusSuccess && st.Status != StatusSkipped {
		st.Error = "job concluded " + e.Conclusion
	}
	return st
}

func (t *Tracker) updateJob(tr *tracked, e WorkflowJobEvent) {
	st := jobStage(e)
	if i := slices.IndexFunc(tr.run.Stages, func(s Stage) bool { return s.JobID == e.JobID }); i >= 0 {
		old := tr.run.Stages[i]
		if old.Status.Terminal() || !jobOrder(e).after(stageOrder(old)) {
			return
		}
		t.setStage(tr, i, st)
		return
	}
	tr.jobCreated[e.JobID] = e.CreatedAt
	// Jobs sit between dispatch and pages, in order of creation then id.
	pos := len(tr.run.Stages)
	for i, s := range tr.run.Stages {
		if s.JobID == 0 {
			if s.Name == StagePages || s.Name == StageVerify {
				pos = i
				break
			}
			continue
		}
		c := tr.jobCreated[s.JobID]
		if e.CreatedAt.Before(c) || (e.CreatedAt.Equal(c) && e.JobID < s.JobID) {
			pos = i
			break
		}
	}
	t.addStage(tr, pos, st)
}
