package store

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/pipeline-exporter/pipeline_exporter/store/storetest"
)

// TestStoreSuite runs the storage seam's suite, which the PostgreSQL store
// runs too, against SQLite.
func TestStoreSuite(t *testing.T) {
	var dirs sync.Map // *testing.T → data directory
	storetest.Run(t, func(t *testing.T) storetest.Store {
		dir, ok := dirs.Load(t)
		if !ok {
			dir = filepath.Join(t.TempDir(), "data")
			dirs.Store(t, dir)
		}
		s, err := Open(dir.(string), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, func(t *testing.T, s storetest.Store) []int64 {
		return logSeqs(t, s.(*Store))
	})
}

// logSeqs returns the seq of every entry in the log, in order.
func logSeqs(t *testing.T, s *Store) []int64 {
	t.Helper()
	rows, err := s.rdb.Query(`SELECT seq FROM log ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var seqs []int64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return seqs
}
