// Package instance is what one running pipeline_exporter is: its store,
// its leadership, the Applier it runs while it leads, the work only the
// leader does (pollers, verify checks, pruning: leaderTasks), and the HTTP
// handlers that take deliveries in and show what was committed.
//
// With SQLite an instance always leads. With PostgreSQL it campaigns for
// the leadership and leads while it holds it; a term of leadership starts
// an Applier (handed to webhook handlers only once it restored), then the
// leader tasks with the term's context, and ends them all together.
//
// cmd/pipeline_exporter parses flags, loads the configuration, opens the
// store (OpenStore), builds an Instance with New, and runs its Run next
// to the listeners that serve Handler and WebhookHandler.
//
// The package is called instance, not runtime, so that it never shadows
// the standard library's runtime package where both are needed.
package instance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"

	"github.com/pipeline-exporter/pipeline_exporter/api"
	"github.com/pipeline-exporter/pipeline_exporter/collector"
	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/exposition"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/tracing"
	webui "github.com/pipeline-exporter/pipeline_exporter/web"
	"github.com/pipeline-exporter/pipeline_exporter/webhook"
)

// Options is everything an Instance needs; New takes them all at once.
type Options struct {
	// Store is the opened run history (OpenStore). The caller closes it
	// after Run returned. Required.
	Store Store
	// Config holds the loaded configuration (its first Reload succeeded);
	// Reload swaps it. Required.
	Config *config.SafeConfig
	// Registry receives every metric of the instance, and Handler serves
	// it at TelemetryPath. Required.
	Registry *prometheus.Registry
	// TelemetryPath is where the metrics are served, /metrics by default.
	TelemetryPath string
	// ExternalURL makes the links in the run JSON and the pages absolute;
	// nil leaves them relative.
	ExternalURL *url.URL
	// MaxEventStreams caps concurrent /api/events streams.
	MaxEventStreams int
	// SeparateWebhooks serves /webhooks/* only on WebhookHandler (its own
	// listener), not on Handler.
	SeparateWebhooks bool
	// StageBuckets gives the per-stage histograms classic buckets too
	// (--metrics.stage-buckets; collector.Options.StageBuckets).
	StageBuckets bool
	// Retention is how long the store keeps log entries (0: forever). The
	// reading back of missed GitHub deliveries looks no further back, or
	// it would recover a pruned delivery again.
	Retention time.Duration
	// Logger defaults to one that discards everything.
	Logger *slog.Logger
}

// Instance is one running exporter. Build it with New, run it with Run.
type Instance struct {
	store     Store
	shared    Shared // nil with SQLite
	safe      *config.SafeConfig
	logger    *slog.Logger
	started   time.Time
	observers []func(pipeline.Update)
	tracer    *tracing.Exporter // nil without tracing
	pages     *webui.Web
	// collector's metrics are streamed by the /metrics handler, not
	// gathered with the registry's.
	collector *collector.Collector
	hooks     *webhook.Handler
	pollers   *pollers
	verifier  *verifier
	main      http.Handler
	webhooks  http.Handler

	leader prometheus.Gauge
	lag    prometheus.Gauge
	// limited counts the runs max_pipelines turned away.
	limited prometheus.Counter

	mu sync.RWMutex
	// applier is the running, restored Applier; nil while this instance
	// does not lead.
	applier *pipeline.Applier
}

// pipelines returns the pipelines as the sinks show them: the written ones
// and those discovered from repository patterns, read from the store so
// that every replica sees them, without the patterns themselves. When the
// store cannot be read, the written ones.
func (in *Instance) pipelines() []pipeline.Spec {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d, err := in.store.Discovered(ctx)
	if err != nil {
		in.logger.Debug("Reading the discovered pipelines", "err", err)
	}
	return pipeline.Instantiate(in.safe.Get().Specs(), d)
}

// New builds an instance over an opened store and a loaded config. Nothing
// runs until Run.
func New(o Options) (*Instance, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TelemetryPath == "" {
		o.TelemetryPath = "/metrics"
	}
	in := &Instance{
		store:   o.Store,
		safe:    o.Config,
		logger:  o.Logger.With("component", "applier"),
		started: time.Now(),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipeline_exporter_leader",
			Help: "1 when this instance applies the delivery log (the leader), 0 otherwise.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipeline_exporter_log_lag_entries",
			Help: "Delivery log entries appended but not applied yet.",
		}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipeline_exporter_pipelines_limited_total",
			Help: "Total number of workflow runs ignored because max_pipelines pipelines were discovered from repository patterns already.",
		}),
	}
	if sh, ok := o.Store.(Shared); ok {
		in.shared = sh
	}
	reg := o.Registry
	reg.MustRegister(in.leader, in.lag, in.limited)
	in.pollers = newPollers(o.Config, in, o.Store, leaderIngester{in}, o.Retention, reg, o.Logger)
	in.verifier = newVerifier(o.Config, in, o.Store, o.Logger)

	coll, err := collector.New(collector.Options{
		Specs:        in.pipelines,
		History:      o.Store,
		Stats:        o.Store,
		StageBuckets: o.StageBuckets,
		Logger:       o.Logger.With("component", "collector"),
	})
	if err != nil {
		return nil, fmt.Errorf("reading the run history: %w", err)
	}
	in.collector = coll
	in.pages = webui.New(webui.Options{
		History:     o.Store,
		Specs:       in.pipelines,
		ExternalURL: o.ExternalURL,
		MaxStreams:  o.MaxEventStreams,
		Registerer:  reg,
		Logger:      o.Logger.With("component", "web"),
		Name:        "Pipeline Exporter",
		Description: "Follows a publish from its trigger through GitHub Actions and Cloudflare Pages to the live site",
		Version:     version.Info(),
		Links: []webui.Link{
			{Address: o.TelemetryPath, Text: "Metrics"},
			{Address: "/api/pipelines", Text: "Pipelines", Description: "Each pipeline's last run, last success and live build, as JSON"},
			{Address: "/api/pipeline-runs?limit=20", Text: "Pipeline runs", Description: "Run history, newest first, as JSON"},
			{Address: "/api/pipeline-runs?status=failed,timed_out", Text: "Failed runs"},
			{Address: "/api/events", Text: "Live events", Description: "Server-Sent Events of run changes"},
			{Address: "/api/status", Text: "Status", Description: "Pipelines, webhook sources, pollers and store"},
			{Address: "/health", Text: "Health"},
		},
	})
	in.observers = []func(pipeline.Update){coll.Observe, func(pipeline.Update) { in.pages.Notify() }}
	if tc := o.Config.Get().Tracing; tracing.Enabled(tc.Endpoint) {
		in.tracer, err = tracing.New(context.Background(), tracing.Options{
			Endpoint:   tc.Endpoint,
			Insecure:   tc.Insecure,
			PageURL:    func(id int64) string { return api.PageURL(o.ExternalURL, id) },
			Registerer: reg,
			Logger:     o.Logger.With("component", "tracing"),
		})
		if err != nil {
			in.pages.Close()
			return nil, err
		}
		in.observers = append(in.observers, in.tracer.Observe)
	}
	in.hooks = webhook.New(webhook.Options{
		Settings:     func() webhook.Settings { return webhookSettings(o.Config.Get()) },
		Ingester:     in,
		Registerer:   reg,
		Logger:       o.Logger.With("component", "webhook"),
		Now:          time.Now,
		OnCloudflare: in.pollers.triggerPages,
	})
	in.main, in.webhooks = in.routes(o)
	return in, nil
}

// Run leads (always with SQLite; with PostgreSQL whenever this replica
// wins the leadership) until ctx is done, then stops the Applier and the
// leader tasks and flushes traces. It returns an error only when the
// Applier cannot restore the committed state at start with SQLite.
func (in *Instance) Run(ctx context.Context) error {
	defer in.pages.Close()
	if in.tracer != nil {
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := in.tracer.Shutdown(sctx); err != nil {
				in.logger.Warn("Flushing traces", "err", err)
			}
		}()
	}
	return in.lead(ctx)
}

// Reload reloads the configuration file and, when it is valid, gives the
// Applier and the pollers the new one; else it keeps the previous one.
func (in *Instance) Reload(ctx context.Context) error {
	if err := in.safe.Reload(); err != nil {
		in.logger.Error("Reloading the configuration failed; keeping the previous one", "err", err)
		return err
	}
	if a := in.current(); a != nil {
		c := in.safe.Get()
		if err := a.SetSpecs(ctx, c.Specs(), c.MaxPipelines); err != nil {
			in.logger.Error("Applying the reloaded pipelines", "err", err)
		}
	}
	in.pollers.reload()
	in.logger.Info("Configuration reloaded")
	return nil
}

// Handler serves every route of the main listener: metrics, API, pages,
// health, readiness, reload, and the webhooks unless SeparateWebhooks.
func (in *Instance) Handler() http.Handler { return in.main }

// WebhookHandler serves /webhooks/*; with SeparateWebhooks only it does.
func (in *Instance) WebhookHandler() http.Handler { return in.webhooks }

// CloseStreams ends the live event streams, which would otherwise keep a
// listener's graceful shutdown waiting.
func (in *Instance) CloseStreams() { in.pages.Close() }

// routes builds the main and the webhook handler.
func (in *Instance) routes(o Options) (main, webhooks http.Handler) {
	reg := o.Registry
	httpMetrics := newHTTPMetrics(reg)
	mux := http.NewServeMux()
	handle := func(mux *http.ServeMux, pattern, name string, h http.Handler) {
		mux.Handle(pattern, httpMetrics.instrument(name, h))
	}
	handle(mux, o.TelemetryPath, "metrics", promhttp.InstrumentMetricHandler(reg,
		exposition.Handler(exposition.Options{
			Gatherer:   reg,
			Streamed:   []prometheus.Collector{in.collector},
			Registerer: reg,
			Logger:     o.Logger.With("component", "metrics"),
		})))
	handle(mux, "/api/", "api", api.New(in.store, in, o.Logger.With("component", "api"), api.Options{ExternalURL: o.ExternalURL, Specs: in.pipelines}))
	// A stream lasts as long as its client stays: not a request duration.
	mux.Handle("GET /api/events", in.pages.Events())
	handle(mux, "/health", "health", in.healthHandler())
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Healthy.")
	})
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, r *http.Request) {
		if err := in.ready(r.Context()); err != nil {
			http.Error(w, "Not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Ready.")
	})
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := in.Reload(r.Context()); err != nil {
			http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "Reloaded.")
	})
	if o.TelemetryPath != "/" {
		handle(mux, "/", "pages", in.pages.Pages())
	}
	hooks := mux
	if o.SeparateWebhooks {
		hooks = http.NewServeMux()
	}
	handle(hooks, "/webhooks/", "webhooks", in.hooks)
	return mux, hooks
}

// ready is nil when the instance takes deliveries: the store answers and,
// with SQLite, the Applier restored (with PostgreSQL a follower takes
// deliveries into the shared log).
func (in *Instance) ready(ctx context.Context) error {
	if err := in.store.Healthy(ctx); err != nil {
		return err
	}
	if in.shared == nil && !in.Leading() {
		return fmt.Errorf("restoring the committed runs")
	}
	return nil
}

// healthHandler answers 200 {"status":"ok"} or 503 naming the failing checks.
func (in *Instance) healthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checks := map[string]string{}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := in.store.Healthy(ctx); err != nil {
			checks["store"] = err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		if len(checks) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			writeJSON(w, map[string]any{"status": "error", "checks": checks})
			return
		}
		writeJSON(w, map[string]any{"status": "ok"})
	})
}

// webhookSettings is what the webhook handlers read from the config.
func webhookSettings(c *config.Config) webhook.Settings {
	w := c.Webhooks
	return webhook.Settings{
		GitHubSecret:     w.GitHub.Secret.Value(),
		SupabaseSecret:   w.Supabase.Secret.Value(),
		SupabaseHeader:   w.Supabase.Header,
		MailerLiteSecret: w.MailerLite.Secret.Value(),
		CloudflareSecret: w.Cloudflare.Secret.Value(),
		MaxBodyBytes:     w.MaxBodyBytes,
	}
}

// httpMetrics instruments every handler with
// pipeline_exporter_http_request_duration_seconds{handler,code}.
type httpMetrics struct {
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{duration: prometheus.NewHistogramVec(collector.DurationHistogramOpts(prometheus.HistogramOpts{
		Name:    "pipeline_exporter_http_request_duration_seconds",
		Help:    "Time the exporter took to answer HTTP requests, by handler and status code.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}), []string{"handler", "code"})}
	reg.MustRegister(m.duration)
	return m
}

func (m *httpMetrics) instrument(name string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(prometheus.Labels{"handler": name}), h)
}

func writeJSON(w io.Writer, v any) {
	_ = json.NewEncoder(w).Encode(v)
}
