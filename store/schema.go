package store

import (
	"database/sql"
	"fmt"
)

// migrations holds the schema, one entry per version: entry i brings a
// database from user_version i to i+1. Entries are never edited once
// released; a schema change is a new entry.
//
// Times are Unix nanoseconds. runs.id is AUTOINCREMENT so that
// sqlite_sequence remembers the highest id ever stored even after pruning
// (ids are assigned by the Tracker and must never be reused). The runs
// indexes each end in id so a filtered list is read newest first straight
// from the index, stopping at the limit; (pipeline, status, id) serves the
// common "failed runs of this pipeline" link and the last-success lookup.
var migrations = []string{
	`CREATE TABLE deliveries (
		source      TEXT    NOT NULL,
		id          TEXT    NOT NULL,
		event       TEXT    NOT NULL,
		received_at INTEGER NOT NULL,
		body        BLOB    NOT NULL,
		PRIMARY KEY (source, id)
	);
	CREATE INDEX deliveries_received_at ON deliveries (received_at);
	CREATE TABLE runs (
		id                 INTEGER PRIMARY KEY AUTOINCREMENT,
		pipeline           TEXT    NOT NULL,
		status             TEXT    NOT NULL,
		trigger_source     TEXT    NOT NULL,
		created_at         INTEGER NOT NULL,
		finished_at        INTEGER,
		github_run_id      INTEGER,
		github_run_attempt INTEGER,
		data               BLOB    NOT NULL
	);
	CREATE INDEX runs_pipeline ON runs (pipeline, id);
	CREATE INDEX runs_pipeline_status ON runs (pipeline, status, id);
	CREATE INDEX runs_status ON runs (status, id);
	CREATE INDEX runs_trigger ON runs (trigger_source, id);
	CREATE INDEX runs_github ON runs (github_run_id, github_run_attempt);
	CREATE INDEX runs_created_at ON runs (created_at);`,

	// Version 2: the row counts, kept by triggers in the transactions that
	// change them, so Open reads two numbers instead of counting a million
	// rows, and the writer can upsert a run in one statement without asking
	// whether it was new.
	`CREATE TABLE counts (
		id         INTEGER PRIMARY KEY CHECK (id = 1),
		runs       INTEGER NOT NULL,
		deliveries INTEGER NOT NULL
	);
	INSERT INTO counts VALUES (1, (SELECT COUNT(*) FROM runs), (SELECT COUNT(*) FROM deliveries));
	CREATE TRIGGER runs_count_insert AFTER INSERT ON runs BEGIN UPDATE counts SET runs = runs + 1; END;
	CREATE TRIGGER runs_count_delete AFTER DELETE ON runs BEGIN UPDATE counts SET runs = runs - 1; END;
	CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries BEGIN UPDATE counts SET deliveries = deliveries + 1; END;
	CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries BEGIN UPDATE counts SET deliveries = deliveries - 1; END;`,

	// Version 3: the delivery log replaces the deliveries journal. Every
	// input (webhook delivery, poll result, verify result) is an entry with
	// a sequence number; (source, delivery_id) is unique, and NULL for
	// entries that cannot repeat. applied marks what the Applier has
	// committed; result is the outcome it reported. The deliveries already
	// journaled move over as applied entries, so their redeliveries stay
	// duplicates. Runs gain the change sequence of their latest change,
	// the exporter's first sight of them (retention counts from it) and
	// their duration (the min_duration filter). state holds the Applier's
	// small committed values: the held job events and the last change
	// sequence.
	`CREATE TABLE log (
		seq         INTEGER PRIMARY KEY AUTOINCREMENT,
		source      TEXT    NOT NULL,
		delivery_id TEXT,
		kind        TEXT    NOT NULL,
		received_at INTEGER NOT NULL,
		body        BLOB,
		events      BLOB    NOT NULL,
		applied     INTEGER NOT NULL DEFAULT 0,
		result      BLOB
	);
	CREATE UNIQUE INDEX log_delivery ON log (source, delivery_id);
	CREATE INDEX log_unapplied ON log (seq) WHERE applied = 0;
	CREATE INDEX log_received_at ON log (received_at);
	INSERT INTO log (source, delivery_id, kind, received_at, body, events, applied)
		SELECT source, id, event, received_at, body, '[]', 1 FROM deliveries ORDER BY received_at;
	DROP TABLE deliveries;
	UPDATE counts SET deliveries = (SELECT COUNT(*) FROM log);
	CREATE TRIGGER log_count_insert AFTER INSERT ON log BEGIN UPDATE counts SET deliveries = deliveries + 1; END;
	CREATE TRIGGER log_count_delete AFTER DELETE ON log BEGIN UPDATE counts SET deliveries = deliveries - 1; END;
	ALTER TABLE runs ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE runs ADD COLUMN seen_at INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE runs ADD COLUMN duration REAL NOT NULL DEFAULT 0;
	UPDATE runs SET seen_at = created_at,
		duration = COALESCE(json_extract(CAST(data AS TEXT), '$.duration_seconds'), 0);
	CREATE INDEX runs_change_seq ON runs (change_seq);
	CREATE INDEX runs_seen_at ON runs (seen_at);
	CREATE TABLE state (
		key   TEXT PRIMARY KEY,
		value BLOB NOT NULL
	);`,
	// Version 4: bodies are stored compressed (see body.go); body_codec
	// says how, and the bodies written before stay as they are.
	`ALTER TABLE log ADD COLUMN body_codec TEXT NOT NULL DEFAULT '';`,
	// Version 5: the applied recheck entries, which the pruner deletes
	// (see pruneRechecksQuery). Only they are in the index, so pruning
	// them reads no other entry. 'recheck' is pipeline.KindRecheck.
	`CREATE INDEX log_applied_rechecks ON log (seq) WHERE kind = 'recheck' AND applied = 1;`,
}

// migrate applies the migrations the database has not seen yet, each in its
// own transaction together with its user_version bump, so a crash leaves the
// file at a whole version.
func migrate(db *sql.DB, path string, migs []string) error {
	var version int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("store: %s: reading schema version: %w", path, err)
	}
	if version > len(migs) {
		return fmt.Errorf("store: %s has schema version %d, newer than this binary supports (%d); run a newer pipeline_exporter or restore a backup", path, version, len(migs))
	}
	for v := version; v < len(migs); v++ {
		if err := migrateOne(db, migs[v], v+1); err != nil {
			return fmt.Errorf("store: %s: migrating schema to version %d: %w", path, v+1, err)
		}
	}
	return nil
}

func migrateOne(db *sql.DB, stmt string, version int) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(stmt); err != nil {
		return err
	}
	// PRAGMA takes no bound parameters; version is an int we computed.
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, version)); err != nil {
		return err
	}
	return tx.Commit()
}
