package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/connlimit"
	"github.com/pipeline-exporter/pipeline_exporter/instance"
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

// serve runs the exporter until ctx is cancelled (SIGTERM/SIGINT): the
// listeners, the instance (opened once the store answers), and reload on
// SIGHUP, in one run.Group. On the way out the listeners stop taking
// requests and finish those in flight first, then the instance stops, then
// the store closes.
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
	var current atomic.Pointer[instance.Instance]
	mainHandler, webhookHandler := &switchHandler{}, &switchHandler{}
	mainHandler.set(opening(f.storageURL != ""))
	webhookHandler.set(opening(f.storageURL != ""))

	var g run.Group
	mainSrv := newServer(mainHandler, logger)
	mainSrv.RegisterOnShutdown(func() {
		if in := current.Load(); in != nil {
			in.CloseStreams()
		}
	})
	addListener(&g, mainSrv, f.web, f.shutdownTimeout, logger)
	if f.webhookAddress != "" {
		noSystemd := false
		wfc := &web.FlagConfig{
			WebListenAddresses: &[]string{f.webhookAddress},
			WebSystemdSocket:   &noSystemd,
			WebConfigFile:      &f.webhookConfig,
		}
		addListener(&g, newServer(webhookHandler, logger), wfc, f.shutdownTimeout, logger.With("listener", "webhooks"))
	}

	instCtx, stopInstance := context.WithCancel(context.Background())
	g.Add(func() error {
		st, err := instance.OpenStore(instCtx, instance.StoreOptions{
			Path:        f.storagePath,
			PathSet:     f.storagePathSet,
			URL:         f.storageURL,
			LeaderLease: f.leaderLease,
			MaxRecords:  f.maxRecords,
			Retention:   time.Duration(f.retention),
			Logger:      logger,
		})
		if err != nil {
			if instCtx.Err() != nil {
				logger.Info("Shutting down before the store opened")
				return nil
			}
			return err
		}
		defer func() {
			if err := st.Close(); err != nil {
				logger.Error("Closing the store", "err", err)
			}
		}()
		in, err := instance.New(instance.Options{
			Store:            st,
			Config:           safe,
			Registry:         reg,
			TelemetryPath:    f.telemetryPath,
			ExternalURL:      external,
			MaxEventStreams:  f.maxEventStreams,
			SeparateWebhooks: f.webhookAddress != "",
			StageBuckets:     f.stageBuckets,
			Retention:        time.Duration(f.retention),
			Logger:           logger,
		})
		if err != nil {
			return err
		}
		current.Store(in)
		mainHandler.set(in.Handler())
		webhookHandler.set(in.WebhookHandler())
		return in.Run(instCtx)
	}, func(error) { stopInstance() })

	// SIGHUP reloads; SIGTERM and SIGINT (ctx) end the group.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	sigCtx, stopSignals := context.WithCancel(ctx)
	g.Add(func() error {
		for {
			select {
			case <-hup:
				if in := current.Load(); in != nil {
					_ = in.Reload(sigCtx)
				} else if err := safe.Reload(); err != nil {
					logger.Error("Reloading the configuration failed; keeping the previous one", "err", err)
				}
			case <-sigCtx.Done():
				if ctx.Err() != nil {
					logger.Info("Shutting down: no new requests; finishing those in flight")
				}
				return nil
			}
		}
	}, func(error) { stopSignals() })
	return g.Run()
}

// addListener adds srv, served on the toolkit's listener (TLS, basic auth),
// to g: its interrupt stops new requests and waits up to timeout for those
// in flight, before the actors added after it are interrupted.
func addListener(g *run.Group, srv *http.Server, fc *web.FlagConfig, timeout time.Duration, logger *slog.Logger) {
	g.Add(func() error {
		err := web.ListenAndServe(srv, fc, logger)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			logger.Error("Shutting down a listener", "err", err)
		}
	})
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
			_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": "unavailable", "error": "not ready: " + msg})
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
// process's connection limit (package connlimit).
func newServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         connlimit.ConnState(logger),
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
}
