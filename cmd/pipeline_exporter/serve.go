package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
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
	"github.com/pipeline-exporter/pipeline_exporter/tracing"
	webui "github.com/pipeline-exporter/pipeline_exporter/web"
	"github.com/pipeline-exporter/pipeline_exporter/webhook"
)

// Server timeouts and sizes. Webhook senders give us 3 s (MailerLite) to
// 10 s (GitHub); slow or idle clients must not hold connections for long,
// and no request needs more than a few KiB of headers (Go's default allows
// 1 MiB per request).
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 30 * time.Second
	maxHeaderBytes    = 64 << 10
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
	external, err := parseExternalURL(f.externalURL)
	if err != nil {
		return err
	}
	reg := newRegistry()
	safe := config.NewSafeConfig(f.configFile, reg)
	if err := safe.Reload(); err != nil {
		return err
	}

	// The listeners answer from the start, before the store is open: a
	// PostgreSQL that is down is retried with backoff, and meanwhile
	// /-/healthy is 200 and every other path 503, so that readiness probes
	// and webhook senders see "not yet" rather than a refused connection.
	mainHandler, webhookHandler := &switchHandler{}, &switchHandler{}
	mainHandler.set(opening(f.storageURL != ""))
	webhookHandler.set(opening(f.storageURL != ""))
	servers := []*http.Server{newServer(mainHandler, logger)}
	errs := make(chan error, 2)
	go listen(servers[0], f.web, logger, errs)
	if f.webhookAddress != "" {
		noSystemd := false
		wfc := &web.FlagConfig{
			WebListenAddresses: &[]string{f.webhookAddress},
			WebSystemdSocket:   &noSystemd,
			WebConfigFile:      &f.webhookConfig,
		}
		servers = append(servers, newServer(webhookHandler, logger))
		go listen(servers[1], wfc, logger.With("listener", "webhooks"), errs)
	}
	shutdown := func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
		defer cancel()
		for _, srv := range servers {
			if err := srv.Shutdown(shutdownCtx); err != nil {
				logger.Error("Shutting down a listener", "err", err)
			}
		}
	}
	serving := false
	defer func() {
		if !serving {
			shutdown()
		}
	}()

	openCtx, cancelOpen := context.WithCancel(ctx)
	defer cancelOpen()
	opened := make(chan error, 1)
	var be backend
	go func() {
		var err error
		be, err = openBackend(openCtx, f, logger)
		opened <- err
	}()
	select {
	case err := <-opened:
		if err != nil && ctx.Err() != nil {
			logger.Info("Shutting down before the store opened")
			return nil
		}
		if err != nil {
			return err
		}
	case err := <-errs:
		cancelOpen()
		if oerr := <-opened; oerr == nil {
			be.Close()
		}
		return err
	}
	defer func() {
		if err := be.Close(); err != nil {
			logger.Error("Closing the store", "err", err)
		}
	}()

	bg, cancelBackground := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancelBackground()
		wg.Wait()
	}()

	httpMetrics := newHTTPMetrics(reg)
	coll, err := collector.New(collector.Options{
		Specs:   func() []pipeline.Spec { return safe.Get().Specs() },
		History: be,
		Stats:   be,
		Logger:  logger.With("component", "collector"),
	})
	if err != nil {
		return fmt.Errorf("reading the run history: %w", err)
	}
	reg.MustRegister(coll)
	pages := webui.New(webui.Options{
		History:     be,
		ExternalURL: external,
		MaxStreams:  f.maxEventStreams,
		Registerer:  reg,
		Logger:      logger.With("component", "web"),
		Name:        "Pipeline Exporter",
		Description: "Follows a publish from its trigger through GitHub Actions and Cloudflare Pages to the live site",
		Version:     version.Info(),
		Links: []webui.Link{
			{Address: f.telemetryPath, Text: "Metrics"},
			{Address: "/api/pipeline-runs?limit=20", Text: "Pipeline runs", Description: "Run history, newest first, as JSON"},
			{Address: "/api/pipeline-runs?status=failed,timed_out", Text: "Failed runs"},
			{Address: "/api/events", Text: "Live events", Description: "Server-Sent Events of run changes"},
			{Address: "/api/status", Text: "Status", Description: "Pipelines, webhook sources, pollers and store"},
			{Address: "/health", Text: "Health"},
		},
	})
	defer pages.Close()

	observers := []func(pipeline.Update){coll.Observe, func(pipeline.Update) { pages.Notify() }}
	if tc := safe.Get().Tracing; tracing.Enabled(tc.Endpoint) {
		tr, err := tracing.New(bg, tracing.Options{
			Endpoint:   tc.Endpoint,
			Insecure:   tc.Insecure,
			PageURL:    func(id int64) string { return api.PageURL(external, id) },
			Registerer: reg,
			Logger:     logger.With("component", "tracing"),
		})
		if err != nil {
			return err
		}
		observers = append(observers, tr.Observe)
		defer func() {
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tr.Shutdown(shutdownCtx); err != nil {
				logger.Warn("Flushing traces", "err", err)
			}
		}()
	}

	lead := newLeadership(be, safe, reg, observers, logger)
	verifier := newVerifier(&wg, safe, lead, logger)
	lead.verifier = verifier
	pollers := newPollers(bg, lead, reg, logger)
	lead.pollers = pollers
	defer pollers.stop()
	if err := lead.start(bg, &wg); err != nil {
		return err
	}

	hooks := webhook.New(webhook.Options{
		Settings:     func() webhook.Settings { return webhookSettings(safe.Get()) },
		Ingester:     lead,
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
		lead.reload(bg)
		logger.Info("Configuration reloaded", "file", f.configFile)
		return nil
	}
	status := func() any {
		return statusReport(bg, started, be, lead, hooks, pollers)
	}

	mainMux := http.NewServeMux()
	handle := func(mux *http.ServeMux, pattern, name string, h http.Handler) {
		mux.Handle(pattern, httpMetrics.instrument(name, h))
	}
	handle(mainMux, f.telemetryPath, "metrics", promhttp.InstrumentMetricHandler(reg,
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelError),
			EnableOpenMetrics: true,
			Registry:          reg,
		})))
	apiHandler := api.New(be, status, logger.With("component", "api"), api.Options{ExternalURL: external})
	handle(mainMux, "/api/", "api", apiHandler)
	// A stream lasts as long as its client stays: not a request duration.
	mainMux.Handle("GET /api/events", pages.Events())
	handle(mainMux, "/health", "health", healthHandler(be, safe))
	mainMux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Healthy.")
	})
	mainMux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, r *http.Request) {
		if err := be.Ready(r.Context()); err != nil {
			http.Error(w, "Not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
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
		handle(mainMux, "/", "pages", pages.Pages())
	}

	webhookMux := mainMux
	if f.webhookAddress != "" {
		webhookMux = http.NewServeMux()
	}
	handle(webhookMux, "/webhooks/", "webhooks", hooks)

	servers[0].RegisterOnShutdown(pages.Close)
	mainHandler.set(mainMux)
	webhookHandler.set(webhookMux)
	serving = true

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
	shutdown()
	return serveErr
}

// switchHandler serves whichever handler was set last: the start-up
// answers until the store is open, then the exporter's routes.
type switchHandler struct{ h atomic.Pointer[http.Handler] }

func (s *switchHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *switchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// opening answers while the store opens: healthy, not ready, and 503 for
// everything else (a webhook sender may retry).
func opening(shared bool) http.Handler {
	msg := "the store is opening"
	if shared {
		msg = "connecting to PostgreSQL"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/-/healthy":
			fmt.Fprintln(w, "Healthy.")
		case "/-/ready":
			http.Error(w, "Not ready: "+msg, http.StatusServiceUnavailable)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			writeJSON(w, map[string]string{"status": "error", "errorType": "unavailable", "error": "not ready: " + msg})
		}
	})
}

// parseExternalURL parses --web.external-url; empty means none.
func parseExternalURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--web.external-url=%q: want an absolute http(s) URL such as https://exporter.example.com/", s)
	}
	return u, nil
}

// newServer returns a server of h whose connections count against the
// process's connection limit (listener.go).
func newServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         sharedConnLimiter(logger).connState,
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
