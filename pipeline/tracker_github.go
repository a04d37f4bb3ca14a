package pipeline

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// GitHub's workflow run and job statuses, as sent in the `status` field,
// and the conclusion of a run waiting for a person's approval.
const (
	ghCompleted      = "completed"
	ghInProgress     = "in_progress"
	ghActionRequired = "action_required"
)

// final reports whether GitHub is done with a workflow run: it completed,
// and not with action_required, which GitHub reports for a run that waits
// for approval (a fork's pull request) and that goes on, same id and
// attempt, once approved.
func final(status, conclusion string) bool {
	return status == ghCompleted && conclusion != ghActionRequired
}

// runConclusion maps a completed workflow run's conclusion to the run's
// status, with the error a run that did not succeed reports:
//
//	conclusion       run status  error
//	success          success
//	neutral          success                  (GitHub's "neither passed nor failed")
//	skipped          cancelled   workflow run skipped   (nothing was published)
//	failure          failed      workflow run failed    (or "stage X failed")
//	startup_failure  failed      workflow run failed to start
//	cancelled        cancelled   workflow run cancelled
//	stale            cancelled   workflow run stale     (GitHub gave up on it)
//	timed_out        timed_out   workflow run timed out
//	anything else    failed      workflow run concluded "<value>"
//
// A successful run then goes on to its Pages and verify stages; the others
// end here. action_required is not a conclusion yet (see final): the run
// stays running.
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

// workflowRef is a workflow of a repository by its numeric id; the
// repository is lower case, as GitHub compares names.
type workflowRef struct {
	repo string
	id   int64
}

func refOf(repo string, id int64) workflowRef {
	return workflowRef{strings.ToLower(repo), id}
}

// fileOf is the workflow file of a run event: from its path, else as learnt
// from other runs of the same workflow.
func (t *Tracker) fileOf(e WorkflowRunEvent) string {
	if f := workflowFile(e.WorkflowPath); f != "" {
		return f
	}
	if e.WorkflowID == 0 {
		return ""
	}
	return t.workflowFiles[refOf(e.Repository, e.WorkflowID)]
}

// matchWorkflow returns the pipeline that follows the workflow run: one of
// its repository (or of any, when it names none; those that name it come
// first), by numeric workflow id or by file name, on a listed branch.
// Without one, it says why. The pipeline may be a pattern (Spec.Discover):
// applyWorkflowRun then makes the repository's pipeline from it.
func (t *Tracker) matchWorkflow(e WorkflowRunEvent) (*Spec, string) {
	file := t.fileOf(e)
	id := strconv.FormatInt(e.WorkflowID, 10)
	var otherBranch *Spec
	for _, s := range t.matchOrder {
		if !s.matchesRepository(e.Repository) || s.Workflow != file && (e.WorkflowID == 0 || s.Workflow != id) {
			continue
		}
		if len(s.Branches) == 0 || slices.Contains(s.Branches, e.HeadBranch) {
			return s, ""
		}
		if otherBranch == nil {
			otherBranch = s
		}
	}
	if otherBranch != nil {
		return nil, fmt.Sprintf("pipeline %s does not follow branch %s of workflow %s", otherBranch.Name, e.HeadBranch, otherBranch.Workflow)
	}
	return nil, fmt.Sprintf("no pipeline for workflow %s in repository %s", workflowName(e), e.Repository)
}

// mayNameLater reports whether a run event that no pipeline matches may
// belong to one once its workflow file is known: it has no path, its
// workflow id is not known yet, and a pipeline follows a workflow file in
// its repository on its branch.
func (t *Tracker) mayNameLater(e WorkflowRunEvent) bool {
	if e.WorkflowPath != "" || e.WorkflowID == 0 || t.fileOf(e) != "" {
		return false
	}
	return slices.ContainsFunc(t.matchOrder, func(s *Spec) bool {
		_, numeric := strconv.ParseInt(s.Workflow, 10, 64)
		return numeric != nil && s.matchesRepository(e.Repository) &&
			(len(s.Branches) == 0 || slices.Contains(s.Branches, e.HeadBranch))
	})
}

// learn remembers the file of a followed workflow, from a run event that
// names both, and applies the held run events of that workflow that had no
// path.
func (t *Tracker) learn(repo string, id int64, file string) {
	if id == 0 || file == "" || !slices.ContainsFunc(t.specs, func(s Spec) bool { return s.Workflow == file }) {
		return
	}
	ref := refOf(repo, id)
	if t.workflowFiles[ref] == file {
		return
	}
	t.workflowFiles[ref] = file
	for _, k := range t.orphans.heldRuns(func(e WorkflowRunEvent) bool { return refOf(e.Repository, e.WorkflowID) == ref }) {
		if t.byKey[k] != nil || t.finished.byKey[k] != nil {
			continue // taken with the run's own event
		}
		held := t.orphans.take(k)
		for _, h := range held {
			if h.Run == nil {
				t.orphans.add(k, h)
			}
		}
		for _, h := range held {
			if h.Run != nil {
				t.applyWorkflowRun(*h.Run)
			}
		}
	}
}

// learnWorkflow learns the workflow file of a run restored or recalled from
// the history: the file its pipeline follows.
func (t *Tracker) learnWorkflow(tr *tracked) {
	if g := tr.run.GitHub; g != nil && g.WorkflowID != 0 {
		if _, err := strconv.ParseInt(tr.spec.Workflow, 10, 64); err != nil {
			t.learn(g.Repository, g.WorkflowID, tr.spec.Workflow)
		}
	}
}

// opensOwnRun reports whether a workflow run with no pending trigger to
// claim may start a run: the events of the spec's `github` trigger rules
// limit it.
func opensOwnRun(spec *Spec, event string) bool {
	for _, rule := range spec.Triggers {
		if rule.Source == SourceGitHub && rule.appliesTo(spec) && len(rule.Events) > 0 && !slices.Contains(rule.Events, event) {
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
	// Learning the workflow's file first applies the events held for want
	// of it, this run's among them.
	t.learn(e.Repository, e.WorkflowID, workflowFile(e.WorkflowPath))
	// The run a payload belongs to is known by its id whatever the
	// payload's shape, so that the order deliveries arrive in never
	// decides which pipeline a run belongs to.
	if tr := t.byKey[key]; tr != nil {
		return t.updateWorkflow(tr, e)
	}
	if tr := t.finished.byKey[key]; tr != nil {
		return fmt.Sprintf("run %d already finished", tr.run.ID)
	}
	spec, reason := t.matchWorkflow(e)
	if spec != nil && spec.Discover {
		spec, reason = t.discover(spec, e.Repository)
	}
	if spec == nil {
		if t.mayNameLater(e) {
			t.orphans.add(key, HeldJob{Run: &e, HeldAt: t.now()})
			return ""
		}
		// Jobs of workflows no pipeline follows would otherwise wait in
		// the orphan buffer until pushed out.
		t.orphans.take(key)
		return reason
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
			t.orphans.take(key)
			return fmt.Sprintf("pipeline %s does not start on %s events", spec.Name, e.Event)
		}
		tr = t.open(spec, ownTrigger(e), StatusRunning)
	}
	tr.run.GitHub = &GitHubRun{}
	t.setGitHub(tr.run, e)
	t.byKey[key] = tr
	t.touch(tr)
	held := t.orphans.take(key)
	for _, h := range held {
		if h.Run == nil {
			t.updateJob(tr, h.Job)
		}
	}
	if final(e.Status, e.Conclusion) {
		t.completeWorkflow(tr)
	}
	// Events of the run that came before this one without a path.
	for _, h := range held {
		if h.Run != nil && t.byKey[key] == tr {
			t.updateWorkflow(tr, *h.Run)
		}
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
func (t *Tracker) setGitHub(r *Run, e WorkflowRunEvent) {
	name := t.fileOf(e)
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
		Recovered:  r.GitHub.Recovered || e.Recovered,
	}
	if !e.HeadCommitAt.IsZero() {
		r.GitHub.HeadCommitAt = timePtr(e.HeadCommitAt)
	}
	started := e.RunStartedAt
	if started.IsZero() {
		started = e.CreatedAt
	}
	r.StartedAt = timePtr(started)
}

// updateWorkflow applies a later event of a run already tracked. A run
// waiting for approval (action_required) takes any later event: GitHub
// runs the same id and attempt once approved.
func (t *Tracker) updateWorkflow(tr *tracked, e WorkflowRunEvent) string {
	g := tr.run.GitHub
	if final(g.Status, g.Conclusion) {
		return fmt.Sprintf("run %d already has the completion of GitHub run %d", tr.run.ID, e.RunID)
	}
	next := runOrder{final(e.Status, e.Conclusion), e.UpdatedAt, githubRank(e.Status)}
	if !next.after(runOrder{false, g.UpdatedAt, githubRank(g.Status)}) {
		return fmt.Sprintf("run %d already has a later update of GitHub run %d", tr.run.ID, e.RunID)
	}
	t.setGitHub(tr.run, e)
	t.touch(tr)
	if next.completed {
		t.completeWorkflow(tr)
	}
	return ""
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
		if bad == nil {
			t.workflowStage(tr, at)
		}
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

// workflowStage adds, to a run that ends badly with no job stage to show
// where (a startup failure, jobs never delivered), a stage for the workflow
// run itself with GitHub's conclusion, so that the run has a failed stage
// to alert on and to look at.
func (t *Tracker) workflowStage(tr *tracked, at time.Time) {
	g := tr.run.GitHub
	st := Stage{Name: StageWorkflow, Status: jobConclusion(g.Conclusion), URL: g.HTMLURL, FinishedAt: timePtr(at)}
	if st.Status == StatusSkipped || specialIndex(tr.run, StageWorkflow) >= 0 {
		return
	}
	if tr.run.StartedAt != nil && !tr.run.StartedAt.After(at) {
		st.StartedAt = timePtr(*tr.run.StartedAt)
		st.DurationSeconds = seconds(*st.StartedAt, at)
	}
	st.Error = "workflow run concluded " + g.Conclusion
	t.addStage(tr, len(tr.run.Stages), st)
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
		if !slices.ContainsFunc(t.specs, func(s Spec) bool { return s.matchesRepository(e.Repository) }) {
			return "no pipeline for repository " + e.Repository
		}
		t.orphans.add(key, HeldJob{Job: e, HeldAt: t.now()})
		return ""
	}
	return t.updateJob(tr, e)
}

// attachOrphans gives a run recalled from the history the jobs kept for
// it; it is finished, so held run events have nothing left to change.
func (t *Tracker) attachOrphans(tr *tracked) {
	k, _ := tr.key()
	for _, h := range t.orphans.take(k) {
		if h.Run == nil {
			t.updateJob(tr, h.Job)
		}
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

// updateJob adds or updates the job's stage, or says why it did not.
func (t *Tracker) updateJob(tr *tracked, e WorkflowJobEvent) string {
	why := t.updateJobStage(tr, e)
	if why == "" && e.Recovered && tr.run.GitHub != nil {
		tr.run.GitHub.Recovered = true
	}
	return why
}

func (t *Tracker) updateJobStage(tr *tracked, e WorkflowJobEvent) string {
	st := jobStage(e)
	if i := slices.IndexFunc(tr.run.Stages, func(s Stage) bool { return s.JobID == e.JobID }); i >= 0 {
		old := tr.run.Stages[i]
		if old.Status.Terminal() || !jobOrder(e).after(stageOrder(old)) {
			return fmt.Sprintf("run %d already has job %s %s", tr.run.ID, old.Name, old.Status)
		}
		t.setStage(tr, i, st)
		return ""
	}
	tr.jobCreated[e.JobID] = e.CreatedAt
	// Jobs sit between dispatch and the workflow or pages stage, in order
	// of creation then id.
	pos := len(tr.run.Stages)
	for i, s := range tr.run.Stages {
		if s.JobID == 0 {
			if s.Name == StageWorkflow || s.Name == StagePages || s.Name == StageVerify {
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
	return ""
}
