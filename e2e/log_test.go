package e2e

import (
	"context"
	"database/sql"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	_ "modernc.org/sqlite" // the SQLite driver the store uses

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store"
)

// TestEntryAppendedNotAppliedIsAppliedOnce is a crash between a delivery's
// append to the log and its apply: the entry is in the log, not applied,
// when the exporter starts. It is applied at start, once: the run appears,
// a restart does not apply it again, and a redelivery is a duplicate.
func TestEntryAppendedNotAppliedIsAppliedOnce(t *testing.T) {
	cfg := writeConfig(t, coreConfig)
	deliveries := exampleRun(t, exampleRunID, "success")
	requested := deliveries[0]

	// The entry as the exporter logs it: from a first exporter's log.
	first := filepath.Join(t.TempDir(), "data")
	e := startExporter(t, cfg, first)
	e.mustPost(requested, http.StatusAccepted)
	e.stop(syscall.SIGTERM)
	entry := readLogEntry(t, filepath.Join(first, store.FileName))
	if len(entry.Events) != 1 {
		t.Fatalf("logged entry has %d events, want the workflow run", len(entry.Events))
	}

	// A second data directory holds it appended and not applied, as a
	// kill -9 between the two steps would leave it.
	data := filepath.Join(t.TempDir(), "data")
	st, err := store.Open(data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := st.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Append([]*pipeline.Entry{entry}); err != nil || entry.Seq == 0 {
		t.Fatalf("append: seq %d, %v", entry.Seq, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	for restart := range 2 {
		e = startExporter(t, cfg, data)
		runs := e.allRuns("")
		if len(runs) != 1 || runs[0].Status != "running" || runs[0].Trigger.Source != "github" {
			t.Fatalf("start %d: runs %+v, want the logged workflow run applied once", restart+1, runs)
		}
		e.stop(syscall.SIGTERM)
	}
	e = startExporter(t, cfg, data)
	e.mustPost(requested, http.StatusOK) // a duplicate of the applied entry
	if runs := e.allRuns(""); len(runs) != 1 {
		t.Fatalf("after the redelivery: %d runs, want 1", len(runs))
	}
	e.stop(syscall.SIGTERM)

	db, err := sql.Open("sqlite", filepath.Join(data, store.FileName)+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, applied int
	var result string
	if err := db.QueryRow(`SELECT COUNT(*), SUM(applied), MAX(CAST(result AS TEXT)) FROM log`).Scan(&n, &applied, &result); err != nil {
		t.Fatal(err)
	}
	if n != 1 || applied != 1 || result != `{"outcome":"accepted","run_ids":[1]}` {
		t.Fatalf("log: %d entries, %d applied, result %s; want the one entry applied with run 1", n, applied, result)
	}
}

// readLogEntry reads the one entry of a stopped exporter's log.
func readLogEntry(t *testing.T, path string) *pipeline.Entry {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var e pipeline.Entry
	var source, id string
	var received int64
	var body, events []byte
	var codec string
	if err := db.QueryRow(`SELECT source, delivery_id, kind, received_at, body, body_codec, events FROM log`).
		Scan(&source, &id, &e.Kind, &received, &body, &codec, &events); err != nil {
		t.Fatal(err)
	}
	// Bodies are stored compressed with S2.
	if codec != "s2" {
		t.Fatalf("body stored with codec %q, want s2", codec)
	}
	if e.Body, err = s2.Decode(nil, body); err != nil {
		t.Fatal(err)
	}
	e.Source, e.DeliveryID, e.ReceivedAt = pipeline.Source(source), id, time.Unix(0, received)
	if e.Events, err = pipeline.UnmarshalEvents(events); err != nil {
		t.Fatal(err)
	}
	return &e
}
