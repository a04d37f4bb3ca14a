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
	})
}
