package instance

import (
	"context"
	"time"

	"github.com/prometheus/common/version"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/poller"
)

// status is the body of GET /api/status.
type status struct {
	Version   string           `json:"version"`
	Revision  string           `json:"revision"`
	StartedAt time.Time        `json:"started_at"`
	Uptime    float64          `json:"uptime_seconds"`
	Pipelines []pipelineStatus `json:"pipelines"`
	Sources   []sourceStatus   `json:"webhook_sources"`
	Pollers   []poller.Status  `json:"pollers"`
	// Hooks are the webhooks whose missed deliveries the leader reads back.
	Hooks []poller.HookStatus `json:"hooks"`
	Store storeStatus         `json:"store"`
	// Leader is true on the instance that applies the delivery log (always
	// with SQLite); LogLag counts entries appended but not applied.
	Leader bool  `json:"leader"`
	LogLag int64 `json:"log_lag_entries"`
	// Discovery says how many pipelines repository patterns made, of how
	// many max_pipelines allows.
	Discovery discoveryStatus `json:"discovery"`
}

type discoveryStatus struct {
	Discovered   int `json:"discovered"`
	MaxPipelines int `json:"max_pipelines"`
}

type pipelineStatus struct {
	Name string `json:"name"`
	// Repository is set for a pipeline discovered from a repository
	// pattern: the repository it was made for.
	Repository  string        `json:"repository,omitempty"`
	InProgress  int           `json:"in_progress"`
	LastRun     *pipeline.Run `json:"last_run"`
	LastSuccess *time.Time    `json:"last_success,omitempty"`
}

type sourceStatus struct {
	Source       pipeline.Source    `json:"source"`
	LastReceived *time.Time         `json:"last_received,omitempty"`
	Requests     map[string]float64 `json:"requests"`
}

type storeStatus struct {
	// Path is the SQLite file, or the PostgreSQL URL with its password
	// masked.
	Path       string `json:"path"`
	Runs       int64  `json:"runs"`
	Deliveries int64  `json:"deliveries"`
	SizeBytes  int64  `json:"size_bytes"`
	Error      string `json:"error,omitempty"`
}

// Status reports for GET /api/status (api.StatusReporter).
func (in *Instance) Status(ctx context.Context) any { return in.report(ctx) }

// report is the body of GET /api/status, read within 2 s of ctx.
func (in *Instance) report(ctx context.Context) status {
	started, be, hooks := in.started, in.store, in.hooks
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s := status{
		Version:   version.Version,
		Revision:  version.Revision,
		StartedAt: started.UTC(),
		Uptime:    time.Since(started).Seconds(),
		Pipelines: []pipelineStatus{},
		Pollers:   in.pollers.statuses(),
		Hooks:     in.pollers.hookStatuses(),
		Store:     storeStatus{Path: be.Describe()},
		Leader:    in.Leading(),
	}
	sums, err := be.Summaries(ctx)
	if err != nil {
		s.Store.Error = err.Error()
	}
	discovered, err := be.Discovered(ctx)
	if err != nil && s.Store.Error == "" {
		s.Store.Error = err.Error()
	}
	s.Discovery = discoveryStatus{Discovered: len(discovered), MaxPipelines: in.safe.Get().MaxPipelines}
	repos := make(map[string]string, len(discovered))
	for _, d := range discovered {
		repos[d.Name] = d.Repository
	}
	for _, p := range sums {
		ps := pipelineStatus{Name: p.Pipeline, Repository: repos[p.Pipeline], InProgress: p.InProgress, LastRun: p.LastFinished}
		if p.LastSuccess != nil && p.LastSuccess.FinishedAt != nil {
			ps.LastSuccess = p.LastSuccess.FinishedAt
		}
		s.Pipelines = append(s.Pipelines, ps)
	}
	last := hooks.LastReceived()
	counts := hooks.Counts()
	for _, src := range pipeline.Sources {
		ss := sourceStatus{Source: src, Requests: counts[src]}
		if t, ok := last[src]; ok && !t.IsZero() {
			t := t.UTC()
			ss.LastReceived = &t
		}
		s.Sources = append(s.Sources, ss)
	}
	if stats, err := be.Sizes(ctx); err == nil {
		s.Store.Runs, s.Store.Deliveries, s.Store.SizeBytes = stats.Runs, stats.Deliveries, stats.SizeBytes
	}
	if err := be.Healthy(ctx); err != nil {
		s.Store.Error = err.Error()
	}
	s.LogLag, _ = in.lagNow(ctx)
	return s
}
