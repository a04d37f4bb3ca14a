package instance

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

// pollers runs the GitHub and Cloudflare Pages pollers and the reading back
// of missed GitHub deliveries the current config asks for while this
// instance leads, and restarts them when a reload changes the config.
type pollers struct {
	safe   *config.SafeConfig
	sink   poller.Sink
	log    poller.DeliveryLog
	ingest poller.Ingester
	// lookBack bounds how far back deliveries are read: within the
	// retention of the log, or a pruned one would come back.
	lookBack time.Duration
	reg      prometheus.Registerer
	logger   *slog.Logger
	client   *http.Client
	// reloaded receives a value after a successful reload.
	reloaded chan struct{}

	mu         sync.Mutex
	github     *poller.GitHubPoller
	pages      *poller.PagesPoller
	reconciler *poller.Reconciler
}

func newPollers(safe *config.SafeConfig, sink poller.Sink, log poller.DeliveryLog, ingest poller.Ingester, retention time.Duration, reg prometheus.Registerer, logger *slog.Logger) *pollers {
	lookBack := poller.DefaultLookBack
	if retention > 0 {
		lookBack = min(lookBack, retention)
	}
	return &pollers{
		safe:     safe,
		sink:     sink,
		log:      log,
		ingest:   ingest,
		lookBack: lookBack,
		reg:      reg,
		logger:   logger,
		client:   &http.Client{Timeout: 30 * time.Second},
		reloaded: make(chan struct{}, 1),
	}
}

// run polls with the current config until ctx (a leadership term) is done,
// restarting the pollers after each reload. Pollers keep their ETag caches
// only for their lifetime, so a reload costs at most one full (non-304)
// poll per URL.
func (p *pollers) run(ctx context.Context) {
	// A reload between terms is in the config read below already.
	select {
	case <-p.reloaded:
	default:
	}
	for {
		pctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		p.start(pctx, &wg, p.safe.Get())
		select {
		case <-ctx.Done():
		case <-p.reloaded:
		}
		cancel()
		wg.Wait()
		p.mu.Lock()
		p.github, p.pages, p.reconciler = nil, nil, nil
		p.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}

// reload makes run restart the pollers with the reloaded config.
func (p *pollers) reload() {
	select {
	case p.reloaded <- struct{}{}:
	default:
	}
}

// start starts the pollers cfg configures.
func (p *pollers) start(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	goRun := func(run func(context.Context)) {
		wg.Go(func() { run(ctx) })
	}
	switch gh := cfg.GitHub; {
	case gh == nil:
		p.logger.Info("GitHub polling disabled: the config has no github section, runs come from webhooks only")
	case gh.PollInterval <= 0:
		p.logger.Info("GitHub polling disabled: github.poll_interval is 0, runs come from webhooks only")
	case len(gh.Repositories()) == 0:
		p.logger.Info("GitHub polling disabled: the github section names no repository (only hooks)")
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
		goRun(p.github.Run)
	}
	if gh := cfg.GitHub; gh != nil && len(gh.Hooks) > 0 {
		if gh.ReconcileInterval <= 0 {
			p.logger.Info("Missed GitHub deliveries are not read back: github.reconcile_interval is 0")
		} else {
			hooks := make([]poller.Hook, len(gh.Hooks))
			for i, h := range gh.Hooks {
				hooks[i] = poller.Hook{Repository: h.Repository, Organization: h.Organization, ID: h.ID}
			}
			token := gh.Token
			p.reconciler = poller.NewReconciler(poller.ReconcilerOptions{
				APIURL:     gh.APIURL,
				Token:      func() string { return token.Value() },
				Hooks:      hooks,
				Interval:   time.Duration(gh.ReconcileInterval),
				LookBack:   p.lookBack,
				HTTPClient: p.client,
			}, p.log, p.ingest, p.reg, p.logger.With("component", "reconciler", "source", "github"))
			goRun(p.reconciler.Run)
		}
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
			goRun(p.pages.Run)
		}
	}
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

// hookStatuses reports the hooks whose deliveries are read back: an empty
// list, not null, when none are (or this instance does not lead).
func (p *pollers) hookStatuses() []poller.HookStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reconciler == nil {
		return []poller.HookStatus{}
	}
	return p.reconciler.Status()
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
