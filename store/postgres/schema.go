package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migrations holds the schema, one entry per version: entry i brings a
// database from version i to i+1. Entries are never edited once released;
// a schema change is a new entry.
//
// log is the delivery log. Its seq comes from a sequence, and PostgreSQL
// sequences are not commit-ordered (a replica's entry may commit after a
// higher seq), so the applier finds its work by "NOT applied" (a partial
// index), never by "seq > last applied". delivery_id is NULL for entries
// that cannot repeat (polls, verify results); NULLs never conflict.
//
// runs.id is assigned by the Tracker. The runs indexes end in id so that a
// filtered list is read newest first from an index and stops at the limit.
// pipelines keeps, per pipeline, the ids of its latest finished and latest
// successful run (written with the runs, only ever increasing), and the
// partial index runs_active its active runs: Summaries and Restore read
// those, in time proportional to the pipelines, not to the history.
//
// state is one row: the highest run id and change sequence ever stored
// (pruning deletes rows, and ids are never reused), the Tracker's held job
// events, and leader_epoch, the fencing token incremented by every new
// leader and checked by every commit of the applier.
var migrations = []string{
	`CREATE TABLE log (
		seq         bigserial   PRIMARY KEY,
		source      text        NOT NULL,
		delivery_id text,
		kind        text        NOT NULL,
		received_at timestamptz NOT NULL,
		body        bytea,
		events      jsonb       NOT NULL,
		applied     boolean     NOT NULL DEFAULT false,
		outcome     text,
		run_ids     bigint[],
		reason      text,
		UNIQUE (source, delivery_id)
	);
	CREATE INDEX log_unapplied ON log (seq) WHERE NOT applied;
	CREATE INDEX log_applied_received_at ON log (received_at) WHERE applied;
	CREATE TABLE runs (
		id                 bigint           PRIMARY KEY,
		pipeline           text             NOT NULL,
		status             text             NOT NULL,
		trigger_source     text             NOT NULL,
		created_at         timestamptz      NOT NULL,
		finished_at        timestamptz,
		seen_at            timestamptz      NOT NULL,
		duration_seconds   double precision NOT NULL,
		github_run_id      bigint,
		github_run_attempt integer,
		change_seq         bigint           NOT NULL,
		data               jsonb            NOT NULL
	);
	CREATE INDEX runs_pipeline ON runs (pipeline, id);
	CREATE INDEX runs_pipeline_status ON runs (pipeline, status, id);
	CREATE INDEX runs_status ON runs (status, id);
	CREATE INDEX runs_trigger ON runs (trigger_source, id);
	CREATE INDEX runs_created_at ON runs (created_at);
	CREATE INDEX runs_seen_at ON runs (seen_at);
	CREATE INDEX runs_duration ON runs (duration_seconds);
	CREATE INDEX runs_change_seq ON runs (change_seq);
	CREATE INDEX runs_github ON runs (github_run_id, github_run_attempt) WHERE github_run_id IS NOT NULL;
	CREATE INDEX runs_active ON runs (pipeline, id) WHERE status IN ('pending', 'running');
	CREATE TABLE pipelines (
		name             text   PRIMARY KEY,
		last_finished_id bigint,
		last_success_id  bigint
	);
	CREATE TABLE state (
		id             integer PRIMARY KEY CHECK (id = 1),
		max_run_id     bigint  NOT NULL,
		max_change_seq bigint  NOT NULL,
		held           jsonb   NOT NULL,
		leader_epoch   bigint  NOT NULL
	);
	INSERT INTO state VALUES (1, 0, 0, '[]', 0);`,

	// Version 2: state.runs counts the runs, kept by triggers in the
	// statements that change them, so that a scrape reads one number
	// instead of counting the table (count(*) of a million runs and a
	// million log entries took 55-64 ms on PostgreSQL 15 here, at every
	// scrape of every replica; the triggers cost ingest about 2%). The
	// triggers run once per statement (a row trigger would update the state
	// row once per run, which a bulk insert pays dearly); the inserted
	// transition table of an upsert holds only the rows it inserted, not
	// the ones it replaced.
	`ALTER TABLE state ADD COLUMN runs bigint NOT NULL DEFAULT 0;
	UPDATE state SET runs = (SELECT count(*) FROM runs);
	CREATE FUNCTION runs_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
	DECLARE n bigint;
	BEGIN
		SELECT count(*) INTO n FROM inserted;
		IF n > 0 THEN
			UPDATE state SET runs = runs + n WHERE id = 1;
		END IF;
		RETURN NULL;
	END $$;
	CREATE TRIGGER runs_count_insert AFTER INSERT ON runs REFERENCING NEW TABLE AS inserted
		FOR EACH STATEMENT EXECUTE FUNCTION runs_count_insert();
	CREATE FUNCTION runs_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
	DECLARE n bigint;
	BEGIN
		SELECT count(*) INTO n FROM deleted;
		IF n > 0 THEN
			UPDATE state SET runs = runs - n WHERE id = 1;
		END IF;
		RETURN NULL;
	END $$;
	CREATE TRIGGER runs_count_delete AFTER DELETE ON runs REFERENCING OLD TABLE AS deleted
		FOR EACH STATEMENT EXECUTE FUNCTION runs_count_delete();`,

	// Version 3: the JSON columns are json, not jsonb. Any valid JSON must
	// be storable, and jsonb refuses the escape \u0000 (its strings are
	// PostgreSQL text, which cannot hold a NUL), so a signed payload with
	// one was answered 503 forever and the leader restored its state at
	// every retry. json keeps the text as written; nothing queries inside
	// these columns, so jsonb's operators and indexes were never used.
	`ALTER TABLE log ALTER COLUMN events TYPE json USING events::json;
	ALTER TABLE runs ALTER COLUMN data TYPE json USING data::json;
	ALTER TABLE state ALTER COLUMN held TYPE json USING held::json;`,

	// Version 4: state.discovered holds the pipelines discovered from
	// repository patterns (at most max_pipelines small records), written
	// by the applier in the transaction of the run that made one.
	`ALTER TABLE state ADD COLUMN discovered json NOT NULL DEFAULT '[]';`,

	// Version 5: lease is the leader's lease, renewed every second on the
	// lock connection: the epoch it was taken with, the application_name
	// of the holder's sessions, and when it was last renewed (PostgreSQL's
	// clock). A row of its own, so that renewing never waits for a lock on
	// the state row that an applier's commit (or anyone) holds.
	`CREATE TABLE lease (
		id         integer     PRIMARY KEY CHECK (id = 1),
		epoch      bigint      NOT NULL,
		holder     text        NOT NULL,
		renewed_at timestamptz NOT NULL
	);
	INSERT INTO lease VALUES (1, 0, '', now());`,

	// Version 6: the applied recheck entries, which Prune deletes; only
	// they are in the index, so pruning them reads no other entry.
	// 'recheck' is pipeline.KindRecheck.
	`CREATE INDEX log_applied_rechecks ON log (seq) WHERE applied AND kind = 'recheck';`,
}

// migrateLock is the advisory lock key that serialises migrations, so
// replicas starting together migrate once.
const migrateLock int64 = 0x7069706d6967 // "pipmig"

// migrate applies the migrations the database has not seen yet, each in its
// own transaction together with its schema_migrations row.
func (s *Store) migrate(ctx context.Context, migs []string) error {
	var version int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&version)
	})
	if err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if version > len(migs) {
		return fmt.Errorf("schema version %d is newer than this binary supports (%d); run a newer pipeline_exporter", version, len(migs))
	}
	for v := version + 1; v <= len(migs); v++ {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
				return err
			}
			// Another replica may have migrated while this one waited.
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, v).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.Exec(ctx, migs[v-1]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrating schema to version %d: %w", v, err)
		}
	}
	return nil
}
