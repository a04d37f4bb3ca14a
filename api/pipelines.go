package api

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Pipeline is one pipeline as GET /api/pipelines and the landing page show
// it: its last run, last success and live build.
type Pipeline struct {
	Name        string       `json:"name"`
	Repository  string       `json:"repository,omitempty"`
	LastRun     *LastRun     `json:"last_run"`
	LastSuccess *LastSuccess `json:"last_success"`
	Live        *Live        `json:"live"`
}

// LastRun is a pipeline's last finished run.
type LastRun struct {
	ID         int64           `json:"id"`
	Status     pipeline.Status `json:"status"`
	FinishedAt *time.Time      `json:"finished_at"`
}

// LastSuccess is a pipeline's last successful run.
type LastSuccess struct {
	ID         int64      `json:"id"`
	FinishedAt *time.Time `json:"finished_at"`
}

// Live is the build last verified live on a pipeline's site, and what the
// latest check of it found.
type Live struct {
	RunID      int64     `json:"run_id"`
	Commit     string    `json:"commit"`
	VerifiedAt time.Time `json:"verified_at"`
	CheckedAt  time.Time `json:"checked_at"`
	Stale      bool      `json:"stale"`
	// Served is what the site showed at the latest check, when it could
	// be read, and ServedRunID the run that built it.
	Served      string `json:"served,omitempty"`
	ServedRunID int64  `json:"served_run_id,omitempty"`
}

// Pipelines projects the pipelines at read time: the configured ones in
// config order, then those the history knows that the config does not
// name (a pipeline removed from the config, or one discovered from a
// repository pattern), by name. A pattern itself is no pipeline.
func Pipelines(specs []pipeline.Spec, sums []pipeline.PipelineSummary) []Pipeline {
	byName := make(map[string]*pipeline.PipelineSummary, len(sums))
	for i := range sums {
		byName[sums[i].Pipeline] = &sums[i]
	}
	out := make([]Pipeline, 0, len(specs))
	seen := make(map[string]bool, len(specs))
	for _, s := range specs {
		if s.Discover {
			continue
		}
		seen[s.Name] = true
		p := Pipeline{Name: s.Name, Repository: s.Repository}
		if sum := byName[s.Name]; sum != nil {
			p.fill(sum)
		}
		out = append(out, p)
	}
	rest := slices.DeleteFunc(slices.Clone(sums), func(s pipeline.PipelineSummary) bool { return seen[s.Pipeline] })
	slices.SortFunc(rest, func(a, b pipeline.PipelineSummary) int { return strings.Compare(a.Pipeline, b.Pipeline) })
	for i := range rest {
		p := Pipeline{Name: rest[i].Pipeline}
		p.fill(&rest[i])
		out = append(out, p)
	}
	return out
}

func (p *Pipeline) fill(sum *pipeline.PipelineSummary) {
	for _, r := range []*pipeline.Run{sum.LastFinished, sum.LastSuccess} {
		if p.Repository == "" && r != nil && r.GitHub != nil {
			p.Repository = r.GitHub.Repository
		}
	}
	if r := sum.LastFinished; r != nil {
		p.LastRun = &LastRun{ID: r.ID, Status: r.Status, FinishedAt: r.FinishedAt}
	}
	r := sum.LastSuccess
	if r == nil {
		return
	}
	p.LastSuccess = &LastSuccess{ID: r.ID, FinishedAt: r.FinishedAt}
	if r.Live() {
		v := r.Verify
		p.Live = &Live{
			RunID: r.ID, Commit: v.Build, VerifiedAt: *v.VerifiedAt, CheckedAt: v.CheckedAt, Stale: v.Stale,
			Served: v.Served, ServedRunID: v.ServedRunID,
		}
	}
}

func (h *handler) listPipelines(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.queryTimeout)
	defer cancel()
	sums, err := h.runs.Summaries(ctx)
	if err != nil {
		h.historyError(w, r, err, "Reading the pipelines")
		return
	}
	var specs []pipeline.Spec
	if h.specs != nil {
		specs = h.specs()
	}
	h.respond(w, map[string][]Pipeline{"pipelines": Pipelines(specs, sums)})
}
