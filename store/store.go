// Package store keeps pipeline_exporter's durable history in SQLite: the
// delivery log (every input as received, the source of truth) and every
// pipeline run as JSON with the columns the run API filters on. It
// implements pipeline.Storage for the Applier, the only writer, and
// pipeline.History for the readers.
//
// Writes go through one connection, so the Applier's transactions and the
// pruner's steps take turns; every commit reaches the disk
// (synchronous=FULL). Reads use their own connection pool and never wait
// for the writer (WAL).
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
	// Retention is how long runs and applied log entries are kept,
	// measured from when the exporter first saw a run (its SeenAt) and
	// received an entry. 0 keeps them forever. Applied recheck entries
	// are not kept (see pruneStep).
	Retention time.Duration
	// Now is the clock retention is measured on; nil means time.Now.
	Now func() time.Time
	// Logger receives write failures and pruning reports; nil discards them.
	Logger *slog.Logger
}

// Stats describes the store's size.
type Stats struct {
	Runs int64
	// Deliveries counts the entries of the delivery log.
	Deliveries int64
	// SizeBytes is the size of the database file plus its write-ahead log.
	SizeBytes int64
}

// Store is the SQLite history. Its methods are safe for concurrent use.
type Store struct {
	path   string
	opts   Options
	logger *slog.Logger
	lock   *dirLock
	// file is the database file as opened: a file deleted or replaced
	// under the running exporter no longer matches it.
	file os.FileInfo

	// wdb has a single connection, the only one that ever writes.
	wdb    *sql.DB
	writes *writeStatements
	rdb    *sql.DB

	stopPruner context.CancelFunc
	prunerDone chan struct{}

	// errors counts failed write transactions since Open, for
	// pipeline_exporter_store_errors_total.
	errors atomic.Int64

	// stopCheck and checkDone belong to the background integrity check;
	// checkDone is nil when Open checked the whole file itself.
	stopCheck context.CancelFunc
	checkDone chan struct{}

	healthMu sync.Mutex
	writeErr error
	// damage is what the background integrity check found, or that the
	// file was deleted or replaced; unlike a write error, no commit
	// clears it.
	damage error
}

// Open opens (creating if needed) the database in dir, checks its integrity,
// brings its schema up to date and starts the pruner. It takes an exclusive
// lock on dir first: a second exporter on the same directory is refused.
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
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, FileName)
	s := &Store{path: path, opts: opts, logger: opts.Logger, lock: lock}
	// Before the first connection: a new file has size 0.
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	fullCheck := size <= fullCheckMax
	start := time.Now()
	if err := s.openDBs(migs, fullCheck); err != nil {
		s.closeDBs(false)
		lock.release()
		return nil, err
	}
	if s.file, err = os.Stat(path); err != nil {
		s.closeDBs(false)
		lock.release()
		return nil, fmt.Errorf("store: %w", err)
	}
	if fullCheck {
		s.logger.Info("Checked the store", "path", path, "bytes", size, "duration", time.Since(start))
	} else {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopCheck = cancel
		s.checkDone = make(chan struct{})
		go s.backgroundCheck(ctx)
	}
	// Always: applied recheck entries are pruned even where runs and
	// deliveries are kept forever.
	ctx, cancel := context.WithCancel(context.Background())
	s.stopPruner = cancel
	s.prunerDone = make(chan struct{})
	go s.pruner(ctx)
	st, _ := s.Stats()
	s.logger.Info("Opened store", "path", path, "runs", st.Runs, "log_entries", st.Deliveries)
	return s, nil
}

func (s *Store) openDBs(migs []string, fullCheck bool) error {
	// A non-file: DSN keeps the path literal (no URI escaping); the driver
	// strips the query. synchronous=FULL makes every commit fsync the WAL, so
	// an acknowledged write survives power loss. journal_size_limit lets the
	// WAL shrink back after a big transaction instead of counting against
	// SizeBytes forever. SQLite's own automatic checkpoint copies the WAL
	// into the main file after the commit that passes 1,000 pages. A
	// passive checkpoint every second on a connection of its own was
	// tried: under steady load it never caught up with the writer, so the
	// WAL never restarted and grew by gigabytes.
	var err error
	s.wdb, err = sql.Open("sqlite", s.path+"?_txlock=immediate"+
		"&_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"+
		"&_pragma=journal_size_limit(67108864)")
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
	if s.writes, err = prepareWrites(s.wdb); err != nil {
		return err
	}

	s.rdb, err = sql.Open("sqlite", s.path+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.rdb.SetMaxOpenConns(readConns)
	s.rdb.SetMaxIdleConns(readConns)
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
	// The check reads every page once, so a page cache only costs memory:
	// 64 KiB instead of SQLite's 2 MiB took a 2.1 GB store's check from
	// 4.6 s to 5.5 s and the exporter's peak 3 MiB lower while it runs
	// (the bench's "1,000 pipelines, … stored runs" row).
	db, err := sql.Open("sqlite", s.path+"?_pragma=query_only(1)&_pragma=cache_size(-64)")
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

// Close stops the pruner and the background check, closes the database,
// which checkpoints the WAL into the main file, and releases the directory
// lock. The Applier must have stopped.
func (s *Store) Close() error {
	s.stopPruner()
	<-s.prunerDone
	if s.stopCheck != nil {
		s.stopCheck()
		<-s.checkDone
	}
	err := s.closeDBs(true)
	s.lock.release()
	return err
}

// closeDBs closes both pools; checkpoint is false when Open failed, on a
// file that may not even be a database.
func (s *Store) closeDBs(checkpoint bool) error {
	var errs []error
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.writes != nil {
		s.writes.close()
	}
	if s.wdb != nil {
		// The read pool is closed first so the checkpoint can empty the
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

// Stats returns the number of stored runs and log entries and the size of
// the database on disk: two kept counts and two os.Stat calls, cheap enough
// for every scrape.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	if err := s.rdb.QueryRow(`SELECT runs, deliveries FROM counts`).Scan(&st.Runs, &st.Deliveries); err != nil {
		return st, fmt.Errorf("store: %w", err)
	}
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
// background integrity check found, the database file deleted or replaced
// under the running exporter (both until a restart), or the last write
// error while the store cannot write (until the next successful commit).
func (s *Store) Healthy() error {
	if err := s.checkFile(); err != nil {
		return err
	}
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	return s.writeErr
}

// checkFile reports damage, and finds a database file that was deleted or
// replaced since Open: writes would go to a file nobody will read again,
// so from then on every transaction is refused. It logs once.
func (s *Store) checkFile() error {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.damage != nil {
		return s.damage
	}
	fi, err := os.Stat(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s.damage = fmt.Errorf("store: %s was deleted while the exporter ran; restart it to start a new history, or restore a backup", s.path)
	case err == nil && !os.SameFile(fi, s.file):
		s.damage = fmt.Errorf("store: %s was replaced while the exporter ran; restart it to use the new file", s.path)
	default:
		return nil
	}
	s.logger.Error("Refusing writes", "err", s.damage)
	return s.damage
}

// setHealth records the outcome of a write; a change is logged once, not
// per request.
func (s *Store) setHealth(err error) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	switch {
	case err != nil && s.writeErr == nil:
		s.logger.Error("Store writes failing", "path", s.path, "err", err)
	case err == nil && s.writeErr != nil:
		s.logger.Info("Store writes recovered", "path", s.path)
	}
	s.writeErr = err
}

// Errors returns how many write transactions have failed since Open.
func (s *Store) Errors() int64 { return s.errors.Load() }

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
	// SQLite says only "unable to open database file (14)" for a folder
	// that is missing or not writable.
	if fi, err := os.Stat(filepath.Dir(dst)); err != nil || !fi.IsDir() {
		return fmt.Errorf("store: backup: the folder %s does not exist; create it first", filepath.Dir(dst))
	}
	// The copy holds raw deliveries: it is created here, empty and 0600,
	// and VACUUM INTO (which accepts an empty file) fills it; SQLite would
	// create it 0644.
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, os.ErrExist):
		return fmt.Errorf("store: backup %s already exists", dst)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("store: backup to %s: cannot create the file there (permission denied)", dst)
	case err != nil:
		return fmt.Errorf("store: backup: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(dst)
		return fmt.Errorf("store: backup: %w", err)
	}
	// VACUUM INTO only reads one snapshot, so in WAL mode ingest goes on.
	// It needs a connection of its own: the read pool is query_only, which
	// VACUUM INTO refuses, and the writer's one connection must stay free.
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("store: backup: %w", err)
	}
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, dst)
	db.Close()
	if err != nil {
		os.Remove(dst)
		var serr *sqlite.Error
		if errors.As(err, &serr) && serr.Code()&0xff == sqlite3.SQLITE_CANTOPEN {
			return fmt.Errorf("store: backup to %s: cannot create the file there (permission denied?)", dst)
		}
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
