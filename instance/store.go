package instance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store"
	"github.com/pipeline-exporter/pipeline_exporter/store/postgres"
)

// Store is the run history as an instance uses it: the Applier's storage,
// the readers' history, and what status, health and readiness report.
// OpenStore returns one for SQLite or PostgreSQL.
type Store interface {
	pipeline.Storage
	pipeline.History
	// KnownDeliveries says which delivery ids the log holds, for the
	// reading back of missed GitHub deliveries.
	KnownDeliveries(ctx context.Context, source pipeline.Source, ids []string) (map[string]bool, error)
	// Discovered returns the pipelines discovered from repository
	// patterns, oldest first.
	Discovered(ctx context.Context) ([]pipeline.Discovered, error)
	// Describe names the store for logs and /api/status, never with a
	// password.
	Describe() string
	// Healthy returns nil, or why the store cannot be trusted now.
	Healthy(ctx context.Context) error
	// Sizes returns the runs and log entries stored (and bytes on disk,
	// when known).
	Sizes(ctx context.Context) (store.Stats, error)
	// Runs and Errors feed pipeline_exporter_store_runs and
	// pipeline_exporter_store_errors_total at every scrape.
	Runs() int64
	Errors() float64
	Close() error
}

// Shared is the part of a Store that several replicas share: only
// PostgreSQL's has it (*postgres.Store implements it). An instance whose
// store has it campaigns for the leadership; one whose store has not
// always leads.
type Shared interface {
	// Lead blocks until this replica leads or ctx ends; lost is closed
	// when the leadership ends.
	Lead(ctx context.Context) (lost <-chan struct{}, err error)
	// Resign gives the leadership up and waits until it has ended.
	Resign()
	// Appended receives a value when another replica appended to the log.
	Appended() <-chan struct{}
	// AppendShared makes one entry durable in the log without applying it;
	// e.Seq stays 0 for a duplicate.
	AppendShared(ctx context.Context, e *pipeline.Entry) error
	// ReceivedAt returns when the delivery with this key that the log
	// holds was received.
	ReceivedAt(ctx context.Context, source pipeline.Source, deliveryID string) (time.Time, error)
	// WaitResult waits briefly for the leader's result of the entry.
	WaitResult(ctx context.Context, source pipeline.Source, deliveryID string) (pipeline.Result, bool, error)
	// Lag counts the log entries appended but not applied.
	Lag(ctx context.Context) (int64, error)
	// Prune enforces retention.
	Prune(ctx context.Context) error
}

// StoreOptions say which store to open and how long it keeps runs.
type StoreOptions struct {
	// Path is the SQLite directory; used when URL is empty.
	Path string
	// PathSet says that Path was given explicitly, which with URL is a
	// mistake.
	PathSet bool
	// URL is the PostgreSQL URL of a history several replicas share.
	URL string
	// LeaderLease is how long a PostgreSQL leader's lease lasts without
	// renewal (--storage.leader-lease).
	LeaderLease time.Duration
	MaxRecords  int
	Retention   time.Duration
	Logger      *slog.Logger
}

// OpenStore opens SQLite under o.Path, or PostgreSQL when o.URL is given
// (retrying until it answers or ctx ends); giving both explicitly is a
// mistake.
func OpenStore(ctx context.Context, o StoreOptions) (Store, error) {
	opts := store.Options{
		MaxRecords: o.MaxRecords,
		Retention:  o.Retention,
		Logger:     o.Logger.With("component", "store"),
	}
	if o.URL == "" {
		st, err := store.Open(o.Path, opts)
		if err != nil {
			return nil, err
		}
		return sqliteStore{st}, nil
	}
	if o.PathSet {
		return nil, errBothStorages
	}
	if o.LeaderLease < minLeaderLease {
		return nil, fmt.Errorf("--storage.leader-lease=%v is too short: the leader renews its lease every second, so give it at least %v", o.LeaderLease, minLeaderLease)
	}
	o.Logger.Info("Connecting to PostgreSQL", "url", postgres.Redacted(o.URL))
	st, err := postgres.OpenRetry(ctx, o.URL, postgres.Options{
		MaxRecords:  opts.MaxRecords,
		Retention:   opts.Retention,
		LeaderLease: o.LeaderLease,
		Logger:      opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &postgresStore{Store: st}, nil
}

// minLeaderLease is the shortest lease a leader renewing every second
// keeps through one slow renewal.
const minLeaderLease = 2 * time.Second

// errBothStorages says which flag to drop when both stores are named.
var errBothStorages = errors.New("both --storage.path and --storage.url are set: drop --storage.path to keep the history in PostgreSQL at --storage.url (several replicas), or drop --storage.url (and unset PIPELINE_EXPORTER_STORAGE_URL) to keep it in SQLite under --storage.path")

// sqliteStore is the embedded default: one process, which always leads.
type sqliteStore struct{ *store.Store }

func (b sqliteStore) Describe() string                           { return b.Path() }
func (b sqliteStore) Healthy(context.Context) error              { return b.Store.Healthy() }
func (b sqliteStore) Errors() float64                            { return float64(b.Store.Errors()) }
func (b sqliteStore) Sizes(context.Context) (store.Stats, error) { return b.Stats() }

func (b sqliteStore) Runs() int64 {
	st, _ := b.Stats()
	return st.Runs
}

// postgresStore is the history several replicas share.
type postgresStore struct {
	*postgres.Store
}

func (b *postgresStore) Describe() string                  { return postgres.Redacted(b.URL()) }
func (b *postgresStore) Healthy(ctx context.Context) error { return b.Ping(ctx) }
func (b *postgresStore) Errors() float64                   { return float64(b.Store.Errors()) }
func (b *postgresStore) Runs() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, _ := b.RunCount(ctx)
	return n
}
func (b *postgresStore) Sizes(ctx context.Context) (store.Stats, error) {
	st, err := b.Stats(ctx)
	return store.Stats{Runs: st.Runs, Deliveries: st.LogEntries}, err
}
