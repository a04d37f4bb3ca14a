package main

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store"
	"github.com/pipeline-exporter/pipeline_exporter/webhook"
)

const benchSecret = "bench-secret"

// BenchmarkIngestCycle is `make bench`'s durable ingest in one process, for
// a CPU profile: this load generator's cycle mix from 16 clients over
// loopback HTTP to the webhook handler, the Applier and the SQLite store
// in a temporary directory, wired as cmd/pipeline_exporter wires them
// (without its observers). An op is one delivery, answered once durable.
//
//	go test -run '^$' -bench IngestCycle -cpuprofile cpu.out ./cmd/webhook-load
func BenchmarkIngestCycle(b *testing.B) {
	cfg, err := config.Parse([]byte("webhooks:\n  github: { secret: "+benchSecret+" }\npipelines:\n  - { name: site, workflow: test.yml }\n"), "bench.yml")
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	a, err := pipeline.NewApplier(ctx, st, cfg.Specs(), pipeline.ApplierOptions{Now: time.Now})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	h := webhook.New(webhook.Options{
		Settings:   func() webhook.Settings { return webhook.Settings{GitHubSecret: benchSecret} },
		Ingester:   a,
		Registerer: prometheus.NewRegistry(),
	})
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)

	b.ResetTimer()
	res, err := load(srv.URL+"/webhooks/github", benchSecret, "cycle", 16, b.N, 0, 1)
	if err != nil {
		b.Fatal(err)
	}
	if res.Codes["202"] != b.N {
		b.Fatalf("answers %v, want %d × 202", res.Codes, b.N)
	}
	b.ReportMetric(res.P99, "p99-ms")
}
