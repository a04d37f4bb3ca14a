package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store"
	"github.com/pipeline-exporter/pipeline_exporter/store/postgres"
)

// backend is the run history as the binary uses it: the Applier's storage,
// the readers' history, and what status, health and readiness report.
type backend interface {
	pipeline.Storage
	pipeline.History
	// Describe names the store for logs and /api/status, never with a
	// password.
	Describe() string
	// Healthy returns nil, or why the store cannot be trusted now.
	Healthy(ctx context.Context) error
	// Ready returns nil when the store can take deliveries.
	Ready(ctx context.Context) error
	// Sizes returns the runs and log entries stored (and bytes on disk,
	// when known).
	Sizes(ctx context.Context) (store.Stats, error)
	// Runs and Errors feed pipeline_exporter_store_runs and
	// pipeline_exporter_store_errors_total at every scrape.
	Runs() int64
	Errors() float64
	Close() error
}

// shared is the part of a backend that several replicas share: only
// PostgreSQL has it.
type shared interface {
	Lead(ctx context.Context) (lost <-chan struct{}, err error)
	Resign()
	Appended() <-chan struct{}
	AppendShared(ctx context.Context, e *pipeline.Entry) error
	WaitResult(ctx context.Context, source pipeline.Source, deliveryID string) (pipeline.Result, bool, error)
	Lag(ctx context.Context) (int64, error)
	Prune(ctx context.Context) error
}

// openBackend opens SQLite under --storage.path, or PostgreSQL when
// --storage.url is given; giving both explicitly is a mistake.
func openBackend(ctx context.Context, f flags, logger *slog.Logger) (backend, error) {
	opts := store.Options{
		MaxRecords: f.maxRecords,
		Retention:  time.Duration(f.retention),
		Logger:     logger.With("component", "store"),
	}
	if f.storageURL == "" {
		st, err := store.Open(f.storagePath, opts)
		if err != nil {
			return nil, err
		}
		return sqliteBackend{st}, nil
	}
	if f.storagePathSet {
		return nil, errBothStorages
	}
	logger.Info("Connecting to PostgreSQL", "url", postgres.Redacted(f.storageURL))
	st, err := postgres.OpenRetry(ctx, f.storageURL, postgres.Options(opts))
	if err != nil {
		return nil, err
	}
	return &postgresBackend{Store: st}, nil
}

// errBothStorages says which flag to drop when both stores are named.
var errBothStorages = errors.New("both --storage.path and --storage.url are set: drop --storage.path to keep the history in PostgreSQL at --storage.url (several replicas), or drop --storage.url (and unset PIPELINE_EXPORTER_STORAGE_URL) to keep it in SQLite under --storage.path")

// sqliteBackend is the embedded default: one process, which always leads.
type sqliteBackend struct{ *store.Store }

func (b sqliteBackend) Describe() string                           { return b.Path() }
func (b sqliteBackend) Healthy(context.Context) error              { return b.Store.Healthy() }
func (b sqliteBackend) Ready(ctx context.Context) error            { return b.Store.Healthy() }
func (b sqliteBackend) Errors() float64                            { return float64(b.Store.Errors()) }
func (b sqliteBackend) Sizes(context.Context) (store.Stats, error) { return b.Stats() }

func (b sqliteBackend) Runs() int64 {
	st, _ := b.Stats()
	return st.Runs
}

// postgresBackend is the history several replicas share.
type postgresBackend struct {
	*postgres.Store
}

func (b *postgresBackend) Describe() string                  { return postgres.Redacted(b.URL()) }
func (b *postgresBackend) Healthy(ctx context.Context) error { return b.Ping(ctx) }
func (b *postgresBackend) Ready(ctx context.Context) error   { return b.Ping(ctx) }
func (b *postgresBackend) Errors() float64                   { return float64(b.Store.Errors()) }
func (b *postgresBackend) Runs() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, _ := b.RunCount(ctx)
	return n
}
func (b *postgresBackend) Sizes(ctx context.Context) (store.Stats, error) {
	st, err := b.Stats(ctx)
	return store.Stats{Runs: st.Runs, Deliveries: st.LogEntries}, err
}

// healthHandler answers 200 {"status":"ok"} or 503 naming the failing checks.
func healthHandler(be backend, safe *config.SafeConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checks := map[string]string{}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := be.Healthy(ctx); err != nil {
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
