package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/google/go-github/v60/github"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// discardIngester accepts everything and keeps nothing, so that benchmarks
// measure the handler and not a growing list of calls.
type discardIngester struct{}

func (discardIngester) Ingest(context.Context, *pipeline.Entry) (pipeline.Result, error) {
	return pipeline.Result{Outcome: pipeline.OutcomeAccepted}, nil
}

// BenchmarkGitHubWorkflowJob measures one workflow_job delivery through the
// handler: read, verify, decode, fake ingest, answer.
func BenchmarkGitHubWorkflowJob(b *testing.B) {
	e := newEnv(b)
	e.h.ingester = discardIngester{}
	body := fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	h := auth("github", e.settings, body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
		req.Header = h
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkDecodeWorkflowJob compares the handler's decoding
// (go-json-experiment/json into the fields the Tracker needs) with
// go-github's full event type through encoding/json.
func BenchmarkDecodeWorkflowJob(b *testing.B) {
	body := fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	b.Run("handler", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parseWorkflowJob(body, testNow); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-github", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var ev github.WorkflowJobEvent
			if err := json.Unmarshal(body, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHTTP16 posts signed workflow_job deliveries over loopback HTTP
// from 16 concurrent clients, to the handler and to a null receiver that only
// reads the body, the baseline the handler's throughput is judged against.
func BenchmarkHTTP16(b *testing.B) {
	body := fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	null := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	e := newEnv(b)
	e.h.ingester = discardIngester{}
	for _, target := range []struct {
		name string
		h    http.Handler
	}{{"null", null}, {"handler", e.h}} {
		b.Run(target.name, func(b *testing.B) {
			srv := httptest.NewServer(target.h)
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, MaxConnsPerHost: 16}}
			h := auth("github", e.settings, body)
			var n atomic.Int64
			b.SetParallelism((16 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/github", bytes.NewReader(body))
					req.Header = h.Clone()
					req.Header.Set("X-GitHub-Delivery", strconv.FormatInt(n.Add(1), 10))
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
