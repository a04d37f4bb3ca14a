package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/poller"
)

// pollers runs the GitHub and Cloudflare Pages pollers the current config
// asks for, and restarts them when a reload changes it.
type pollers struct {
	parent context.Context
	sink   poller.Sink
	reg    prometheus.Registerer
	logger *slog.Logger
	client *http.Client

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
	github *poller.GitHubPoller
	pages  *poller.PagesPoller
}

func newPollers(ctx context.Context, sink poller.Sink, reg prometheus.Registerer, logger *slog.Logger) *pollers {
	return &pollers{
		parent: ctx,
		sink:   sink,
		reg:    reg,
		logger: logger,
		client: &http.Client{Timeout: 30 * time.Second},
	}
}

// apply stops the running pollers and starts the ones cfg configures.
// Pollers keep their ETag caches only for their lifetime, so a reload costs
// at most one full (non-304) poll per URL.
func (p *pollers) apply(cfg *config.Config) {
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithCancel(p.parent)
	p.cancel = cancel
	p.github, p.pages = nil, nil

	switch gh := cfg.GitHub; {
	case gh == nil:
		p.logger.Info("GitHub polling disabled: the config has no github section, runs come from webhooks only")
	case gh.PollInterval <= 0:
		p.logger.Info("GitHub polling disabled: github.poll_interval is 0, runs come from webhooks only")
	default:
		token := gh.Token
		p.github = poller.NewGitHub(poller.GitHubOptions{
			APIURL:         gh.APIURL,
			Token:          func() string { return token.Value() },
			Repositories:   gh.Repositories(),
			Interval:       time.Duration(gh.PollInterval),
			BackfillWindow: time.Duration(gh.BackfillWindow),
			HTTPClient:     p.client,
		}, p.sink, p.reg, p.logger.With("component", "poller", "source", "github"))
		p.start(ctx, p.github.Run)
	}
	if cf := cfg.Cloudflare; cf != nil && cf.PollInterval > 0 {
		var projects []string
		for _, pl := range cfg.Pipelines {
			if pl.PagesProject != "" {
				projects = append(projects, pl.PagesProject)
			}
		}
		if len(projects) > 0 {
			token := cf.APIToken
			p.pages = poller.NewPages(poller.PagesOptions{
				APIURL:     cf.APIURL,
				AccountID:  cf.AccountID,
				Token:      func() string { return token.Value() },
				Projects:   projects,
				Interval:   time.Duration(cf.PollInterval),
				HTTPClient: p.client,
			}, p.sink, p.reg, p.logger.With("component", "poller", "source", "cloudflare"))
			p.start(ctx, p.pages.Run)
		}
	}
}

func (p *pollers) start(ctx context.Context, run func(context.Context)) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		run(ctx)
	}()
}

// stop cancels the running pollers and waits for them to return.
func (p *pollers) stop() {
	p.mu.Lock()
	cancel := p.cancel
	p.cancel = nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	p.wg.Wait()
}

// triggerPages makes the Pages poller poll now (a Cloudflare notification
// arrived).
func (p *pollers) triggerPages() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pages != nil {
		p.pages.Trigger()
	}
}

// statuses reports every running poller's health for /api/status: an empty
// list, not null, when none runs.
func (p *pollers) statuses() []poller.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []poller.Status{}
	if p.github != nil {
		out = append(out, p.github.Status())
	}
	if p.pages != nil {
		out = append(out, p.pages.Status())
	}
	return out
}
