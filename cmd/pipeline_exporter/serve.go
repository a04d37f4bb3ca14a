package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"gopkg.in/yaml.v3"

	"github.com/pipeline-exporter/pipeline_exporter/api"
	"github.com/pipeline-exporter/pipeline_exporter/collector"
	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store"
	"github.com/pipeline-exporter/pipeline_exporter/verify"
	"github.com/pipeline-exporter/pipeline_exporter/webhook"
)

// Server timeouts. Webhook senders give us 3 s (MailerLite) to 10 s
// (GitHub); slow or idle clients must not hold connections for long.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
)

// checkWebConfig refuses the one combination that would lock webhook senders
// out: basic auth on the main listener while webhooks share it. GitHub,
// Supabase and MailerLite cannot send basic auth, and exporter-toolkit's
// basic auth guards every route of a listener.
func checkWebConfig(f flags) error {
	for _, path := range []string{*f.web.WebConfigFile, f.webhookConfig} {
		if path == "" {
			continue
		}
		if err := web.Validate(path); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if *f.web.WebConfigFile == "" || f.webhookAddress != "" {
		return nil
	}
	data, err := os.ReadFile(*f.web.WebConfigFile)
	if err != nil {
		return err
	}
	var wc struct {
		Users map[string]any `yaml:"basic_auth_users"`
	}
	if err := yaml.Unmarshal(data, &wc); err != nil {
		return fmt.Errorf("%s: %w", *f.web.WebConfigFile, err)
	}
	if len(wc.Users) > 0 {
		return fmt.Errorf("%s sets basic_auth_users, which would also guard /webhooks/* where GitHub, Supabase, MailerLite and Cloudflare cannot send basic auth: set --webhook.listen-address (and --webhook.config.file for its TLS) so webhooks get their own listener", *f.web.WebConfigFile)
	}
	return nil
}

// serve runs the exporter until ctx is cancelled (SIGTERM/SIGINT), then
// stops intake, finishes in-flight requests and closes the store.
func serve(ctx context.Context, f flags, logger *slog.Logger) error {
	if err := checkWebConfig(f); err != nil {
		return err
	}
	reg := newRegistry()
	safe := config.NewSafeConfig(f.configFile, reg)
	if err := safe.Reload(); err != nil {
		return err
	}
	cfg := safe.Get()

	st, err := store.Open(f.storagePath, store.Options{
		MaxRecords: f.maxRecords,
		Retention:  time.Duration(f.retention),
		Now:        time.Now,
		Logger:     logger.With("component", "store"),
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			logger.Error("Closing the store", "err", err)
		}
	}()
	logger.Info("Run history opened", "path", st.Path())

	bg, cancelBackground := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancelBackground()
		wg.Wait()
	}()

	httpMetrics := newHTTPMetrics(reg)
	var coll *collector.Collector
	verifier := newVerifier(bg, &wg, safe, logger)
	tracker := pipeline.NewTracker(cfg.Specs(), time.Now, st.FindGitHubRun)
	engine := pipeline.NewEngine(tracker, st, pipeline.EngineOptions{
		Observers:   []func(pipeline.Update){func(u pipeline.Update) { coll.Observe(u) }},
		StartVerify: verifier.start,
		Now:         time.Now,
	})
	coll = collector.New(engine, storeStats{st})
	reg.MustRegister(coll)
	verifier.engine = engine
	verifier.observe = coll.ObserveVerify

	if err := engine.Restore(st); err != nil {
		return fmt.Errorf("restoring runs from %s: %w", st.Path(), err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); engine.Run(bg) }()

	pollers := newPollers(bg, engine, reg, logger)
	pollers.apply(cfg)
	defer pollers.stop()

	hooks := webhook.New(webhook.Options{
		Settings:     func() webhook.Settings { return webhookSettings(safe.Get()) },
		Ingester:     engine,
		Registerer:   reg,
		Logger:       logger.With("component", "webhook"),
		Now:          time.Now,
		OnCloudflare: pollers.triggerPages,
	})

	started := time.Now()
	reload := func() error {
		if err := safe.Reload(); err != nil {
			logger.Error("Reloading the configuration failed; keeping the previous one", "err", err)
			return err
		}
		cfg := safe.Get()
		engine.SetSpecs(cfg.Specs())
		pollers.apply(cfg)
		logger.Info("Configuration reloaded", "file", f.configFile)
		return nil
	}
	status := func() any {
		return statusReport(started, engine, hooks, pollers, st)
	}

	mainMux := http.NewServeMux()
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "Pipeline Exporter",
		Description: "Follows a publish from its trigger through GitHub Actions and Cloudflare Pages to the live site",
		Version:     version.Info(),
		Links: []web.LandingLinks{
			{Address: f.telemetryPath, Text: "Metrics"},
			{Address: "/api/pipeline-runs?limit=20", Text: "Pipeline runs", Description: "Run history, newest first"},
			{Address: "/api/pipeline-runs?status=failed,timed_out", Text: "Failed runs"},
			{Address: "/api/status", Text: "Status", Description: "Pipelines, webhook sources, pollers and store"},
			{Address: "/health", Text: "Health"},
		},
	})
	if err != nil {
		return err
	}
	handle := func(mux *http.ServeMux, pattern, name string, h http.Handler) {
		mux.Handle(pattern, httpMetrics.instrument(name, h))
	}
	handle(mainMux, f.telemetryPath, "metrics", promhttp.InstrumentMetricHandler(reg,
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelError),
			EnableOpenMetrics: true,
			Registry:          reg,
		})))
	apiHandler := api.New(st, status, logger.With("component", "api"))
	handle(mainMux, "/api/", "api", apiHandler)
	handle(mainMux, "/health", "health", healthHandler(st, safe))
	mainMux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Healthy.")
	})
	mainMux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Ready.")
	})
	mainMux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := reload(); err != nil {
			http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "Reloaded.")
	})
	if f.telemetryPath != "/" {
		mainMux.Handle("/", landing)
	}

	webhookMux := mainMux
	if f.webhookAddress != "" {
		webhookMux = http.NewServeMux()
	}
	handle(webhookMux, "/webhooks/", "webhooks", hooks)

	servers := []*http.Server{newServer(mainMux, logger)}
	errs := make(chan error, 2)
	go listen(servers[0], f.web, logger, errs)
	if f.webhookAddress != "" {
		noSystemd := false
		wfc := &web.FlagConfig{
			WebListenAddresses: &[]string{f.webhookAddress},
			WebSystemdSocket:   &noSystemd,
			WebConfigFile:      &f.webhookConfig,
		}
		servers = append(servers, newServer(webhookMux, logger))
		go listen(servers[1], wfc, logger.With("listener", "webhooks"), errs)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var serveErr error
loop:
	for {
		select {
		case <-hup:
			_ = reload()
		case err := <-errs:
			if !errors.Is(err, errShutdown) {
				serveErr = err
			}
			break loop
		case <-ctx.Done():
			logger.Info("Shutting down: no new requests; finishing those in flight")
			break loop
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			logger.Error("Shutting down a listener", "err", err)
		}
	}
	return serveErr
}

func newServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
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
	m := &httpMetrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pipeline_exporter_http_request_duration_seconds",
		Help:    "Time the exporter took to answer HTTP requests, by handler and status code.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"handler", "code"})}
	reg.MustRegister(m.duration)
	return m
}

func (m *httpMetrics) instrument(name string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(prometheus.Labels{"handler": name}), h)
}

// storeStats adapts the store to the collector's small interface.
type storeStats struct{ st *store.Store }

// healthHandler answers 200 {"status":"ok"} or 503 naming the failing checks.
func healthHandler(st *store.Store, safe *config.SafeConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		checks := map[string]string{}
		if err := st.Healthy(); err != nil {
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

// verifier runs the live-site checks the engine asks for, one goroutine per
// run, and feeds the result back as an event.
type verifier struct {
	ctx     context.Context
	wg      *sync.WaitGroup
	safe    *config.SafeConfig
	logger  *slog.Logger
	engine  *pipeline.Engine
	observe func(pipeline string, seconds float64)
	client  *http.Client
}

func newVerifier(ctx context.Context, wg *sync.WaitGroup, safe *config.SafeConfig, logger *slog.Logger) *verifier {
	return &verifier{ctx: ctx, wg: wg, safe: safe, logger: logger.With("component", "verify"), client: &http.Client{}}
}

func (v *verifier) start(run *pipeline.Run) {
	target, ok := verifyTarget(v.safe.Get(), run.Pipeline)
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		// A pipeline that lost its verify block in a reload finishes the
		// stage rather than leave the run waiting for its timeout.
		now := time.Now()
		result := pipeline.VerifyResultEvent{RunID: run.ID, Success: true, StartedAt: now, FinishedAt: now}
		if ok {
			c := verify.Checker{Client: v.client, Now: time.Now, Version: version.Version,
				Observe: func(s float64) { v.observe(run.Pipeline, s) }}
			result = c.Check(v.ctx, run.ID, target)
		}
		if v.ctx.Err() != nil {
			// Shutting down: the verify stage stays running in the store and
			// is checked again after the restart.
			return
		}
		if err := v.engine.Apply(v.ctx, []pipeline.Event{result}); err != nil {
			v.logger.Error("Recording a verify result", "run_id", run.ID, "err", err)
		}
	}()
}

func (s storeStats) Runs() int64 {
	st, _ := s.st.Stats()
	return st.Runs
}

func (s storeStats) Errors() float64 { return float64(s.st.Errors()) }
