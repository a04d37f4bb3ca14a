package web

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// BenchmarkNotifyStreams measures what open /api/events streams cost the
// commit path: each iteration commits one run change and calls Notify, as
// the applier does, then waits until every client has read the event.
// ns/op is the change's delivery to all clients; commit-p99-ns is the
// applier's own step (commit + Notify), which must not grow with clients;
// reads/op is the history reads the live streams made per change.
func BenchmarkNotifyStreams(b *testing.B) {
	for _, clients := range []int{0, 1, 100} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			h := newMemHistory()
			w := New(Options{History: h, MaxStreams: clients + 1})
			srv := httptest.NewServer(w.Events())
			defer func() { w.Close(); srv.Close() }()

			// received[i] is the last change sequence client i read.
			received := make([]atomic.Int64, clients)
			var ready sync.WaitGroup
			for i := range clients {
				ready.Add(1)
				go func() {
					resp, err := http.Get(srv.URL)
					if err != nil {
						b.Error(err)
						ready.Done()
						return
					}
					defer resp.Body.Close()
					ready.Done()
					sc := bufio.NewScanner(resp.Body)
					sc.Buffer(make([]byte, 64<<10), 1<<20)
					for sc.Scan() {
						if id, ok := bytes.CutPrefix(sc.Bytes(), []byte("id: ")); ok {
							n, _ := strconv.ParseInt(string(id), 10, 64)
							received[i].Store(n)
						}
					}
				}()
			}
			ready.Wait()
			// Every stream is registered once it has received a first change.
			seq := h.commit(testRun(1, pipeline.StatusRunning))
			w.Notify()
			waitAll(received, seq)

			run := testRun(2, pipeline.StatusRunning)
			steps := make([]time.Duration, 0, b.N)
			h.mu.Lock()
			h.changedCalls = 0
			h.mu.Unlock()
			b.ResetTimer()
			for i := range b.N {
				run.DurationSeconds = float64(i)
				start := time.Now()
				seq = h.commit(run)
				w.Notify()
				steps = append(steps, time.Since(start))
				waitAll(received, seq)
			}
			b.StopTimer()
			slices.Sort(steps)
			b.ReportMetric(float64(steps[len(steps)*99/100]), "commit-p99-ns")
			h.mu.Lock()
			b.ReportMetric(float64(h.changedCalls)/float64(b.N), "reads/op")
			h.mu.Unlock()
		})
	}
}

func waitAll(received []atomic.Int64, seq int64) {
	for i := range received {
		for received[i].Load() < seq {
			time.Sleep(20 * time.Microsecond)
		}
	}
}
