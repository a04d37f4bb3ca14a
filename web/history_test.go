package web

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// memHistory is an in-memory pipeline.History that numbers each committed
// run change as the applier does.
type memHistory struct {
	mu   sync.Mutex
	runs map[int64]*pipeline.Run
	seq  int64
	err  error
	// changedCalls counts ChangedAfter calls, to see what the streams cost.
	changedCalls int
}

func newMemHistory() *memHistory {
	return &memHistory{runs: map[int64]*pipeline.Run{}}
}

// commit stores r as one change and returns its change sequence.
func (h *memHistory) commit(r *pipeline.Run) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	c := r.Clone()
	c.ChangeSeq = h.seq
	h.runs[c.ID] = c
	return h.seq
}

func (h *memHistory) Run(_ context.Context, id int64) (*pipeline.Run, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return nil, h.err
	}
	r, ok := h.runs[id]
	if !ok {
		return nil, pipeline.ErrNotFound
	}
	return r.Clone(), nil
}

func (h *memHistory) ListRuns(_ context.Context, q pipeline.RunQuery) ([]*pipeline.Run, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return nil, h.err
	}
	var out []*pipeline.Run
	for _, r := range h.runs {
		if len(q.Statuses) > 0 && !slices.Contains(q.Statuses, r.Status) {
			continue
		}
		out = append(out, r.Clone())
	}
	slices.SortFunc(out, func(a, b *pipeline.Run) int { return cmp.Compare(b.ID, a.ID) })
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

func (h *memHistory) LastChange(context.Context) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return 0, h.err
	}
	var last int64
	for _, r := range h.runs {
		last = max(last, r.ChangeSeq)
	}
	return last, nil
}

func (h *memHistory) ChangedAfter(_ context.Context, seq int64, limit int) ([]*pipeline.Run, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.changedCalls++
	if h.err != nil {
		return nil, h.err
	}
	var out []*pipeline.Run
	for _, r := range h.runs {
		if r.ChangeSeq > seq {
			out = append(out, r.Clone())
		}
	}
	slices.SortFunc(out, func(a, b *pipeline.Run) int { return cmp.Compare(a.ChangeSeq, b.ChangeSeq) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Summaries returns each pipeline's latest finished and successful run,
// by name, as the stores do.
func (h *memHistory) Summaries(context.Context) ([]pipeline.PipelineSummary, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return nil, h.err
	}
	by := map[string]*pipeline.PipelineSummary{}
	for _, r := range h.runs {
		s := by[r.Pipeline]
		if s == nil {
			s = &pipeline.PipelineSummary{Pipeline: r.Pipeline}
			by[r.Pipeline] = s
		}
		switch {
		case !r.Status.Terminal():
			s.InProgress++
		case s.LastFinished == nil || r.ID > s.LastFinished.ID:
			s.LastFinished = r
		}
		if r.Status == pipeline.StatusSuccess && (s.LastSuccess == nil || r.ID > s.LastSuccess.ID) {
			s.LastSuccess = r
		}
	}
	var out []pipeline.PipelineSummary
	for _, s := range by {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b pipeline.PipelineSummary) int { return strings.Compare(a.Pipeline, b.Pipeline) })
	return out, nil
}

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func at(sec int) *time.Time {
	t := t0.Add(time.Duration(sec) * time.Second)
	return &t
}

// testRun is a run as the Tracker builds one for a Supabase trigger picked
// up by a workflow with one job, a Pages deployment and a verify check.
func testRun(id int64, status pipeline.Status) *pipeline.Run {
	r := &pipeline.Run{
		ID:        id,
		Pipeline:  "site",
		Status:    status,
		Trigger:   pipeline.Trigger{Source: pipeline.SourceSupabase, Event: "INSERT", DeliveryID: "msg_1", ReceivedAt: t0},
		CreatedAt: t0,
		StartedAt: at(20),
		SeenAt:    t0,
		GitHub: &pipeline.GitHubRun{Repository: "acme/site", RunID: 30433642, RunAttempt: 1, Workflow: "deploy.yml",
			HTMLURL: "https://github.com/acme/site/actions/runs/30433642", HeadSHA: "acb5820ced9479c074f688cc328bf03f341a511d", HeadBranch: "main"},
		Pages: &pipeline.PagesDeployment{Project: "site", DeploymentID: "f64788e9", URL: "https://f64788e9.site.pages.dev",
			Stages: []pipeline.PagesStage{
				{Name: "queued", Status: "success", StartedOn: at(100), EndedOn: at(102)},
				{Name: "build", Status: "success", StartedOn: at(102), EndedOn: at(150)},
				{Name: "deploy", Status: "success", StartedOn: at(150), EndedOn: at(160)},
			}},
		Stages: []pipeline.Stage{
			{Name: "trigger", Status: pipeline.StatusSuccess, StartedAt: at(0), FinishedAt: at(0)},
			{Name: "dispatch", Status: pipeline.StatusSuccess, StartedAt: at(0), FinishedAt: at(20), DurationSeconds: 20},
			{Name: "build", Status: pipeline.StatusSuccess, StartedAt: at(25), FinishedAt: at(95), DurationSeconds: 70,
				URL: "https://github.com/acme/site/actions/runs/30433642/job/1"},
			{Name: "pages", Status: pipeline.StatusSuccess, StartedAt: at(100), FinishedAt: at(160), DurationSeconds: 60},
			{Name: "verify", Status: pipeline.StatusSuccess, StartedAt: at(160), FinishedAt: at(161), DurationSeconds: 1,
				URL: "https://example.com/"},
		},
	}
	r.Triggers = []pipeline.Trigger{r.Trigger,
		{Source: pipeline.SourceMailerLite, Event: "campaign.sent", DeliveryID: "ml-2", ReceivedAt: t0.Add(5 * time.Second)}}
	if status.Terminal() {
		r.FinishedAt = at(161)
		r.DurationSeconds = 161
	}
	if status == pipeline.StatusFailed {
		r.Stages[4].Status = pipeline.StatusFailed
		r.Stages[4].Error = "GET https://example.com/: status 503, want 200"
		r.Error = "verify failed"
	}
	return r
}
