// Package store keeps pipeline_exporter's durable history in SQLite: the raw
// webhook deliveries (the dedup journal) and every pipeline run as JSON, with
// the columns the run API filters on.
//
// All writes go through one writer goroutine that commits whatever is queued
// in one transaction (group commit), so every acknowledged write has reached
// the disk (synchronous=FULL) without one fsync per request. Reads use their
// own connection pool and never wait for the writer (WAL).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// FileName is the name of the database file inside the storage directory.
const FileName = "pipeline_exporter.db"

// fullCheckBytes is the largest file Open checks page by page before it
// returns. quick_check reads the whole file, which takes seconds at a
// million runs; a bigger file is checked in the background instead.
const fullCheckBytes = 64 << 20

// readConns bounds the read pool: the API, the collector and status pages
// read concurrently, and WAL lets each of them see a consistent snapshot.
const readConns = 4

// Options tunes retention and injects the clock and logger.
type Options struct {
	// MaxRecords is how many runs are kept; the oldest finished runs are
	// deleted past it. 0 keeps every run.
	MaxRecords int
	// Retention is how long runs and deliveries are kept, measured from a
	// run's CreatedAt and a delivery's ReceivedAt. 0 keeps them forever.
	Retention time.Duration
	// Now is the clock retention is measured on; nil means time.Now.
	Now func() time.Time
	// Logger receives write failures and pruning reports; nil discards them.
	Logger *slog.Logger
}

// Stats describes the store's size. It is cheap enough to read on every
// scrape: the counts are kept in memory and the sizes come from os.Stat.
type Stats struct {
	Runs       int64
	Deliveries int64
	// SizeBytes is the size of the database file plus its write-ahead log.
	SizeBytes int64
}

// Store is the SQLite history. Its methods are safe for concurrent use.
type Store struct {
	path   string
	opts   Options
	logger *slog.Logger

	// wdb is used only by the writer goroutine and BulkLoad; it has a single
	// connection, which is the only one that ever writes.
	wdb *sql.DB
	rdb *sql.DB
	// hasDeliveryStmt is prepared once on the read pool: HasDelivery runs
	// for every webhook, and parsing its SQL each time cost more than the
	// lookup itself.
	hasDeliveryStmt *sql.Stmt
	// cdb is the checkpointer's single connection.
	cdb *sql.DB

	stmts writeStmts

	// mu guards closed against Submit racing Close: Submit sends on reqs
	// under the read lock, Close closes reqs under the write lock.
	mu      sync.RWMutex
	closed  bool
	reqs    chan *request
	stopped chan struct{} // closed when the writer goroutine has returned

	stopPruner context.CancelFunc
	prunerDone chan struct{}

	// sinceCheckpoint is about how many bytes were committed since the
	// last checkpoint started; past checkpointBytes the writer kicks the
	// checkpointer.
	sinceCheckpoint atomic.Int64
	checkpointKick  chan struct{}
	checkpointStop  chan struct{}
	checkpointDone  chan struct{}
	// checkpoints counts completed background checkpoints.
	checkpoints atomic.Int64

	// pending counts deliveries queued but not yet committed, so that
	// HasDelivery answers true for a redelivery that races its original.
	pendingMu sync.Mutex
	pending   map[deliveryKey]int

	runs       atomic.Int64
	deliveries atomic.Int64
	// commits counts successful Submit transactions; tests use it to see
	// that concurrent requests share commits.
	commits atomic.Int64
	// errors counts failed write transactions since Open, for
	// pipeline_exporter_store_errors_total.
	errors atomic.Int64

	// stopCheck and checkDone belong to the background integrity check;
	// checkDone is nil when Open checked the whole file itself.
	stopCheck context.CancelFunc
	checkDone chan struct{}

	healthMu sync.Mutex
	writeErr error
	// damage is what the background integrity check found; unlike a write
	// error, no commit clears it.
	damage error
}

type deliveryKey struct {
	source pipeline.Source
	id     string
}

// Open opens (creating if needed) the database in dir, checks its integrity,
// brings its schema up to date and starts the writer and the pruner.
//
// A file that is not SQLite, or whose header or schema is damaged, is
// refused. Damage deeper in a file bigger than 64 MiB is found by a check
// that runs in the background after Open returns; Healthy reports it.
func Open(dir string, opts Options) (*Store, error) {
	return open(dir, opts, migrations, fullCheckBytes)
}

// open is Open with the migrations and the full-check limit as parameters,
// so tests can add schema versions and force the background check.
func open(dir string, opts Options, migs []string, fullCheckMax int64) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	s := &Store{
		path:    path,
		opts:    opts,
		logger:  opts.Logger,
		reqs:    make(chan *request, 4*maxBatch),
		stopped: make(chan struct{}),
		pending: make(map[deliveryKey]int),

		checkpointKick: make(chan struct{}, 1),
		checkpointStop: make(chan struct{}),
		checkpointDone: make(chan struct{}),
	}
	// Before the first connection: a new file has size 0.
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	fullCheck := size <= fullCheckMax
	if err := s.openDBs(migs, fullCheck); err != nil {
		s.closeDBs(false)
		return nil, err
	}
	go s.writer()
	go s.checkpointer()
	if !fullCheck {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopCheck = cancel
		s.checkDone = make(chan struct{})
		go s.backgroundCheck(ctx)
	}
	if opts.MaxRecords > 0 || opts.Retention > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopPruner = cancel
		s.prunerDone = make(chan struct{})
		go s.pruner(ctx)
	}
	s.logger.Info("Opened store", "path", path, "runs", s.runs.Load(), "deliveries", s.deliveries.Load())
	return s, nil
}

func (s *Store) openDBs(migs []string, fullCheck bool) error {
	// A non-file: DSN keeps the path literal (no URI escaping); the driver
	// strips the query. synchronous=FULL makes every commit fsync the WAL, so
	// an acknowledged write survives power loss. journal_size_limit lets the
	// WAL shrink back after a big transaction instead of counting against
	// SizeBytes forever. The checkpointer, not the commit, copies the WAL
	// into the main file.
	var err error
	s.wdb, err = sql.Open("sqlite", s.path+"?_txlock=immediate"+
		"&_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"+
		"&_pragma=journal_size_limit(67108864)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)

	// Reading the schema reads the header and the schema's pages: enough to
	// refuse a file that is not a database before a migration touches it.
	var tables int
	if err := s.wdb.QueryRow(`SELECT COUNT(*) FROM sqlite_schema`).Scan(&tables); err != nil {
		if isCorrupt(err) {
			return s.corrupt(err.Error())
		}
		return fmt.Errorf("store: %s: %w", s.path, err)
	}
	if fullCheck {
		if err := s.quickCheck(context.Background(), s.wdb); err != nil {
			return err
		}
	}
	if err := migrate(s.wdb, s.path, migs); err != nil {
		return err
	}
	if err := s.stmts.prepare(s.wdb); err != nil {
		return fmt.Errorf("store: %s: %w", s.path, err)
	}

	s.rdb, err = sql.Open("sqlite", s.path+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.rdb.SetMaxOpenConns(readConns)
	s.rdb.SetMaxIdleConns(readConns)
	if s.hasDeliveryStmt, err = s.rdb.Prepare(`SELECT 1 FROM deliveries WHERE source = ? AND id = ?`); err != nil {
		return fmt.Errorf("store: %s: %w", s.path, err)
	}

	// synchronous=FULL: the main file must be on disk before the WAL
	// frames it was copied from are overwritten.
	s.cdb, err = sql.Open("sqlite", s.path+"?_pragma=synchronous(FULL)")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.cdb.SetMaxOpenConns(1)
	s.cdb.SetMaxIdleConns(1)

	var runs, deliveries int64
	if err := s.rdb.QueryRow(`SELECT runs, deliveries FROM counts`).Scan(&runs, &deliveries); err != nil {
		return fmt.Errorf("store: %s: %w", s.path, err)
	}
	s.runs.Store(runs)
	s.deliveries.Store(deliveries)
	return nil
}

// quickCheck reads every page of the file and returns an error naming it
// as corrupt when any is damaged, so the operator can restore a backup.
func (s *Store) quickCheck(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `PRAGMA quick_check`)
	if err != nil {
		if isCorrupt(err) {
			return s.corrupt(err.Error())
		}
		return fmt.Errorf("store: %s: %w", s.path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("store: %s: %w", s.path, err)
		}
		if line != "ok" && len(problems) < 3 {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		if isCorrupt(err) {
			return s.corrupt(err.Error())
		}
		return fmt.Errorf("store: %s: %w", s.path, err)
	}
	if len(problems) > 0 {
		return s.corrupt(fmt.Sprint(problems))
	}
	return nil
}

// backgroundCheck runs quickCheck on a connection of its own while the
// store serves, and marks the store unhealthy for good if the file is
// damaged: the history cannot be trusted until a backup is restored.
func (s *Store) backgroundCheck(ctx context.Context) {
	defer close(s.checkDone)
	db, err := sql.Open("sqlite", s.path+"?_pragma=query_only(1)")
	if err != nil {
		s.logger.Error("Checking the store failed", "path", s.path, "err", err)
		return
	}
	defer db.Close()
	start := time.Now()
	err = s.quickCheck(ctx, db)
	switch {
	case ctx.Err() != nil:
		// Closed before the check finished.
	case errors.Is(err, errCorrupt):
		s.logger.Error("Store is corrupt", "path", s.path, "err", err)
		s.healthMu.Lock()
		s.damage = err
		s.healthMu.Unlock()
	case err != nil:
		s.logger.Error("Checking the store failed", "path", s.path, "err", err)
	default:
		s.logger.Info("Checked the store", "path", s.path, "duration", time.Since(start))
	}
}

// errCorrupt is wrapped by the errors of corrupt.
var errCorrupt = errors.New("corrupt")

func (s *Store) corrupt(detail string) error {
	return fmt.Errorf("store: %s is %w: %s; restore a backup or move the file away", s.path, errCorrupt, detail)
}

func isCorrupt(err error) bool {
	var serr *sqlite.Error
	if !errors.As(err, &serr) {
		return false
	}
	switch serr.Code() & 0xff {
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return true
	}
	return false
}

// Close stops the pruner, lets the writer commit every queued request, and
// closes the database, which checkpoints the WAL into the main file.
func (s *Store) Close() error {
	if s.stopPruner != nil {
		s.stopPruner()
		<-s.prunerDone
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.mu.Unlock()
	if s.stopCheck != nil {
		s.stopCheck()
		<-s.checkDone
	}
	<-s.stopped
	close(s.checkpointStop)
	<-s.checkpointDone
	return s.closeDBs(true)
}

// closeDBs closes both pools; checkpoint is false when Open failed, on a
// file that may not even be a database.
func (s *Store) closeDBs(checkpoint bool) error {
	var errs []error
	for _, db := range []*sql.DB{s.rdb, s.cdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	s.stmts.close()
	if s.wdb != nil {
		// The other pools are closed first so the checkpoint can empty the
		// WAL.
		if checkpoint {
			if _, err := s.wdb.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				s.logger.Warn("Checkpoint at close failed", "path", s.path, "err", err)
			}
		}
		errs = append(errs, s.wdb.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: closing %s: %w", s.path, err)
	}
	return nil
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// Stats returns the number of stored runs and deliveries and the size of the
// database on disk.
func (s *Store) Stats() (Stats, error) {
	st := Stats{Runs: s.runs.Load(), Deliveries: s.deliveries.Load()}
	for _, p := range []string{s.path, s.path + "-wal"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("store: %w", err)
		}
		st.SizeBytes += fi.Size()
	}
	return st, nil
}

// Healthy returns nil, or why the store cannot be trusted: damage the
// background integrity check found (until a restart with a restored file),
// or the last write error while the store cannot write (until the next
// successful commit).
func (s *Store) Healthy() error {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.damage != nil {
		return s.damage
	}
	return s.writeErr
}

func (s *Store) setHealth(err error) {
	s.healthMu.Lock()
	s.writeErr = err
	s.healthMu.Unlock()
}

// Errors returns how many write transactions have failed since Open.
func (s *Store) Errors() int64 { return s.errors.Load() }

// Backup writes a consistent copy of the database to dst while the store
// keeps running. It refuses to overwrite an existing file.
func (s *Store) Backup(ctx context.Context, dst string) error {
	return backup(ctx, s.path, dst)
}

// BackupDir writes a consistent copy of the history in dir to dst without
// opening it as a Store: it is what `pipeline_exporter backup` runs, in a
// process of its own, while the exporter keeps writing (WAL readers never
// block the writer). It refuses a missing history and an existing dst.
func BackupDir(ctx context.Context, dir, dst string) error {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	return backup(ctx, path, dst)
}

func backup(ctx context.Context, path, dst string) error {
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("store: backup %s already exists", dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: backup: %w", err)
	}
	// VACUUM INTO only reads one snapshot, so in WAL mode ingest goes on.
	// It needs a connection of its own: the read pool is query_only, which
	// VACUUM INTO refuses, and the writer's one connection must stay free.
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, dst)
	db.Close()
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("store: backup to %s: %w", dst, err)
	}
	// VACUUM INTO does not sync its output; a backup must survive a crash
	// that follows it.
	if err := syncPath(dst); err != nil {
		return fmt.Errorf("store: backup to %s: %w", dst, err)
	}
	if err := syncPath(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("store: backup to %s: %w", dst, err)
	}
	return nil
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
