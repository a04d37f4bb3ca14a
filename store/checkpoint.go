package store

import (
	"context"
	"database/sql"
	"time"
)

// checkpointEvery is how often the checkpointer copies the WAL into the
// main file. SQLite's automatic checkpoint runs inside the commit that
// crosses its threshold and stalls the Applier's transaction while it
// copies: `make bench`'s row "p99 at a fixed 500 req/s" went from 12.3 to
// 5.9 ms with the checkpoint on a connection of its own.
const checkpointEvery = time.Second

// checkpointer runs a passive checkpoint on its own connection every
// checkpointEvery until ctx is done. A passive checkpoint never waits for
// the writer or the readers; what it cannot copy now, the next one does.
func (s *Store) checkpointer(ctx context.Context, db *sql.DB) {
	defer close(s.checkpointDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err != nil && ctx.Err() == nil {
			s.logger.Warn("Checkpointing the store failed", "path", s.path, "err", err)
		}
	}
}
