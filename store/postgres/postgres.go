// Package postgres keeps pipeline_exporter's delivery log and run history in
// PostgreSQL, so that several replicas can share them (docs/operations.md,
// "Several instances on PostgreSQL"). It implements pipeline.Storage and pipeline.History with the
// same meaning as the SQLite store, and adds what replicas need: a leader
// chosen by an advisory lock (Lead), a fencing check in every commit of the
// applier, appends from followers (AppendShared) and a short wait for the
// leader's outcome (WaitResult).
package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Options tunes retention and injects the clock and logger.
type Options struct {
	// MaxRecords is how many runs Prune keeps; the oldest finished runs
	// past it are deleted. 0 keeps every run.
	MaxRecords int
	// Retention is how long Prune keeps runs, measured from when the
	// exporter first saw them (SeenAt), and applied log entries, measured
	// from their ReceivedAt. 0 keeps them forever.
	Retention time.Duration
	// Now is the clock retention is measured on; nil means time.Now.
	Now func() time.Time
	// LeaderLease is how long the leader's lease lasts without renewal
	// before another replica takes over (see Lead); 0 means
	// DefaultLeaderLease.
	LeaderLease time.Duration
	// Logger receives leadership changes, reconnections and pruning
	// reports; nil discards them.
	Logger *slog.Logger
}

// ErrNotLeader is returned by Begin and Commit when this store does not
// hold the leader lock: only the leader applies entries.
var ErrNotLeader = fmt.Errorf("store: not the leader: %w", pipeline.ErrFenced)

// Store is the PostgreSQL store. Its methods are safe for concurrent use.
type Store struct {
	url    string // redacted
	secret string // the password, scrubbed from every error text
	// appName is the application_name of every session of this store,
	// unique to it: the lease names the leader's sessions by it.
	appName string
	pool    *pgxpool.Pool
	opts    Options
	logger  *slog.Logger
	// failures counts the failed operations that refused or lost a write
	// (errorf's errors that wrap pipeline.ErrUnavailable), as SQLite's
	// store counts its failed writes; the collector counts its failed
	// reads itself.
	failures atomic.Int64

	// epoch is the fencing token of the current leadership, 0 when this
	// store does not lead. Commits compare it with state.leader_epoch.
	epoch atomic.Int64
	lead  leadership

	// applied is closed and replaced whenever the listener hears that the
	// leader committed applied entries; WaitResult waits on it.
	appliedMu sync.Mutex
	applied   chan struct{}
	// appended receives a value when a replica appended to the log.
	appended     chan struct{}
	stopListener context.CancelFunc
	listenerDone chan struct{}
}

// cancelGrace is how long a cancelled query may take to end on the server
// before its connection is dropped.
const cancelGrace = 500 * time.Millisecond

// OpenRetry connects to the PostgreSQL database at rawURL (a postgres://
// URL or a libpq keyword/value string; PGPASSWORD, PGPASSFILE and the other
// libpq variables are honoured), brings its schema up to date and starts
// listening for the other replicas' notifications. While the database is
// unreachable or refuses the connection it keeps trying, with backoff from
// 500 ms to 30 s, logging each failure; it gives up only when ctx ends or
// the URL cannot be parsed. Errors name the URL with its password masked
// and never contain the password.
func OpenRetry(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	s, err := parse(rawURL, opts)
	if err != nil {
		return nil, err
	}
	wait := 500 * time.Millisecond
	for {
		err := s.connect(ctx)
		if err == nil {
			return s, nil
		}
		s.logger.Warn("PostgreSQL unavailable, retrying", "url", s.url, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			s.pool.Close()
			return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func parse(rawURL string, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LeaderLease <= 0 {
		opts.LeaderLease = DefaultLeaderLease
	}
	s := &Store{
		url:      Redacted(rawURL),
		secret:   urlPassword(rawURL),
		appName:  "pipeline_exporter " + rand.Text()[:12],
		opts:     opts,
		logger:   opts.Logger,
		applied:  make(chan struct{}),
		appended: make(chan struct{}, 1),
	}
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, s.errorf("store: PostgreSQL URL %s: %w", s.url, err)
	}
	if cfg.ConnConfig.Password != "" {
		s.secret = cfg.ConnConfig.Password
	}
	// Every replica's webhook handlers append concurrently, each in its own
	// short transaction; pgxpool's default of max(4, CPUs) connections
	// would queue them.
	if !strings.Contains(rawURL, "pool_max_conns") {
		cfg.MaxConns = 16
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = s.appName
	// A query whose context ends is cancelled on the server (a cancel
	// request), not only abandoned by the client: an insert waiting for a
	// lock must not commit after its sender was answered 503.
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, s.errorf("store: PostgreSQL %s: %w", s.url, err)
	}
	s.pool = pool
	return s, nil
}

// connect checks that the database answers, migrates it and starts the
// listener.
func (s *Store) connect(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return s.errorf("store: PostgreSQL %s is unreachable: %w", s.url, err)
	}
	if err := s.migrate(ctx, migrations); err != nil {
		return s.errorf("store: PostgreSQL %s: %w", s.url, err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.stopListener = cancel
	s.listenerDone = make(chan struct{})
	go s.listen(lctx)
	s.logger.Info("Opened store", "url", s.url)
	return nil
}

// URL is the store's URL with its password masked, for logs and
// /api/status.
func (s *Store) URL() string { return s.url }

// Ping reports whether the database answers, for /-/ready.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return s.errorf("%w: PostgreSQL %s: %w", pipeline.ErrUnavailable, s.url, err)
	}
	return nil
}

// Close gives up the leadership, stops the listener and closes the
// connections.
func (s *Store) Close() error {
	s.Resign()
	if s.stopListener != nil {
		s.stopListener()
		<-s.listenerDone
	}
	s.pool.Close()
	return nil
}

// Redacted returns the storage URL with its password masked, for logs and
// /api/status. It handles postgres:// URLs (user info and a password query
// parameter) and libpq keyword/value strings.
func Redacted(rawURL string) string {
	if !strings.Contains(rawURL, "://") {
		return kvPassword.ReplaceAllString(rawURL, "${1}xxxxx")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse quotes its input in the error; say nothing of it.
		return "(unparsable URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// kvPassword matches the password of a keyword/value connection string,
// quoted or not.
var kvPassword = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// urlPassword returns the password written in rawURL, if any.
func urlPassword(rawURL string) string {
	if !strings.Contains(rawURL, "://") {
		if m := kvPassword.FindStringSubmatch(rawURL); m != nil {
			return strings.Trim(m[2], "'")
		}
		return ""
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	if p := u.Query().Get("password"); p != "" {
		return p
	}
	p, _ := u.User.Password()
	return p
}

// scrubbedError is an error whose text has the password masked; Unwrap
// keeps errors.Is and errors.As working.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// errorf returns fmt.Errorf's error with the password masked in the text,
// whatever a driver error might quote, and counts it in Errors when it
// wraps pipeline.ErrUnavailable.
func (s *Store) errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if errors.Is(err, pipeline.ErrUnavailable) {
		s.failures.Add(1)
	}
	if s.secret == "" || !strings.Contains(err.Error(), s.secret) {
		return err
	}
	return &scrubbedError{msg: strings.ReplaceAll(err.Error(), s.secret, "xxxxx"), err: err}
}

// Errors returns how many operations refused or lost a write since start.
func (s *Store) Errors() int64 { return s.failures.Load() }

// Stats counts what the store holds.
type Stats struct {
	Runs       int64
	LogEntries int64
}

// RunCount returns the number of runs, kept in the state row: a scrape
// reads it.
func (s *Store) RunCount(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT runs FROM state WHERE id = 1`).Scan(&n); err != nil {
		return 0, s.errorf("counting runs: %w", err)
	}
	return n, nil
}

// Stats returns the number of runs and log entries, for /api/status.
// PostgreSQL counts the log's rows (a visibility check per row): a few
// milliseconds at a hundred thousand entries.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.pool.QueryRow(ctx, `SELECT runs, (SELECT count(*) FROM log) FROM state WHERE id = 1`).Scan(&st.Runs, &st.LogEntries)
	if err != nil {
		return st, s.errorf("counting runs: %w", err)
	}
	return st, nil
}
