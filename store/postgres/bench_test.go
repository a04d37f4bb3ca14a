package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
	"github.com/pipeline-exporter/pipeline_exporter/store/storetest"
)

// BenchmarkSummaries measures the store read of every scrape at 1,000
// pipelines (storetest.BenchmarkSummaries).
func BenchmarkSummaries(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := openOnce(ctx, pgtest.NewDatabase(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, err := s.Lead(ctx); err != nil {
		b.Fatal(err)
	}
	storetest.BenchmarkSummaries(b, s, 1000)
}
