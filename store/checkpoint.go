package store

import (
	"database/sql"
	"time"
)

const (
	// checkpointBytes is about how much the writer commits before the
	// checkpointer copies the WAL into the main file: enough to make each
	// checkpoint's fsync worth it, little enough that readers never search
	// a long WAL.
	checkpointBytes = 4 << 20
	// checkpointInterval bounds how long a trickle of writes stays in the
	// WAL only.
	checkpointInterval = 5 * time.Second
)

// wrote tells the checkpointer that a commit added about n bytes to the WAL.
func (s *Store) wrote(n int64) {
	if s.sinceCheckpoint.Add(n) >= checkpointBytes {
		select {
		case s.checkpointKick <- struct{}{}:
		default:
		}
	}
}

// checkpointer keeps the WAL short without holding up commits. The writer's
// connection has automatic checkpoints off: SQLite would run them inside a
// commit, making every request of that group commit wait for the copy.
//
// Each checkpoint has two steps. A PASSIVE checkpoint on the checkpointer's
// own connection copies the bulk of the WAL into the main file while the
// writer goes on committing. That alone never lets the WAL start over under
// steady load: SQLite rewinds the WAL only when a write transaction begins
// with every frame copied, and the writer has always appended more by the
// time a checkpoint ends. So the writer then copies the few frames
// committed meanwhile itself, between two transactions, and its next
// transaction rewinds the WAL (truncating it to journal_size_limit).
func (s *Store) checkpointer() {
	defer close(s.checkpointDone)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.checkpointStop:
			return
		case <-s.checkpointKick:
		case <-t.C:
			if s.sinceCheckpoint.Load() == 0 {
				continue
			}
		}
		// Writes that land from here on count towards the next checkpoint.
		s.sinceCheckpoint.Store(0)
		if s.checkpointOn(s.cdb) != nil {
			continue
		}
		req := &request{checkpoint: true, done: make(chan error, 1)}
		if s.enqueue(req) != nil {
			return // closing: Close checkpoints the rest
		}
		if <-req.done == nil {
			s.checkpoints.Add(1)
		}
	}
}

// checkpointOn runs a PASSIVE checkpoint, which never waits for the writer
// or readers: it copies what no reader still needs.
func (s *Store) checkpointOn(db *sql.DB) error {
	var busy, walFrames, copied int
	err := db.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &walFrames, &copied)
	if err != nil {
		s.logger.Warn("Checkpoint failed", "path", s.path, "err", err)
	}
	return err
}
