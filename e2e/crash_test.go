package e2e

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

// loadUntilStopped posts distinct workflow_run deliveries (one new GitHub run
// each) from 16 clients until the exporter stops answering or max requests
// were sent, and returns the run ids whose delivery got a 2xx.
func loadUntilStopped(t *testing.T, e *exporter, firstID int64, max int, stopAfter int64, stop func()) []int64 {
	t.Helper()
	template := fixtures.MustLoad("github/workflow_run/requested.json")
	var (
		next    atomic.Int64
		acked   atomic.Int64
		mu      sync.Mutex
		ackedID []int64
		once    sync.Once
		wg      sync.WaitGroup
	)
	for c := 0; c < 16; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(max) {
					return
				}
				runID := firstID + i
				// Fresh timestamps and ids, as live runs have: the
				// published example is from 2020.
				now := time.Now().UTC().Format(time.RFC3339)
				body := fixtures.MustEdit(template, map[string]any{"workflow_run.id": runID, "workflow_run.created_at": now, "workflow_run.updated_at": now})
				a, err := e.post(githubDelivery(githubSecret, "workflow_run", fmt.Sprintf("crash-%d", runID), body))
				if err != nil {
					return // the process is gone
				}
				if a.code >= 200 && a.code < 300 {
					mu.Lock()
					ackedID = append(ackedID, runID)
					mu.Unlock()
					if acked.Add(1) == stopAfter {
						once.Do(stop)
					}
				}
			}
		}()
	}
	wg.Wait()
	return ackedID
}

// assertAllPresent restarts the exporter on the same data and checks that
// every acknowledged run is in the history.
func assertAllPresent(t *testing.T, cfg, data string, acked []int64) {
	t.Helper()
	e := startExporter(t, cfg, data)
	have := map[int64]bool{}
	for _, r := range e.allRuns("") {
		if r.GitHub != nil {
			have[r.GitHub.RunID] = true
		}
	}
	missing := 0
	for _, id := range acked {
		if !have[id] {
			missing++
			if missing <= 5 {
				t.Errorf("run %d was acknowledged but is not in the history", id)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged deliveries lost", missing, len(acked))
	}
	t.Logf("%d acknowledged deliveries, all in the history after the restart (%d runs stored)", len(acked), len(have))
}

func TestKill9LosesNoAcknowledgedDelivery(t *testing.T) {
	cfg := writeConfig(t, coreConfig)
	data := filepath.Join(t.TempDir(), "data")
	e := startExporter(t, cfg, data)
	acked := loadUntilStopped(t, e, 1_000_000, 20000, 300, func() {
		// Mid-load: 16 clients keep sending while the process dies.
		_ = e.cmd.Process.Signal(syscall.SIGKILL)
	})
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("exporter did not die on SIGKILL")
	}
	if len(acked) < 300 {
		t.Fatalf("only %d deliveries acknowledged before the kill", len(acked))
	}
	assertAllPresent(t, cfg, data, acked)
}

func TestSIGTERMDrainsAcceptedRequests(t *testing.T) {
	cfg := writeConfig(t, coreConfig)
	data := filepath.Join(t.TempDir(), "data")
	e := startExporter(t, cfg, data)
	acked := loadUntilStopped(t, e, 2_000_000, 20000, 300, func() {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
	})
	select {
	case <-e.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("exporter did not exit after SIGTERM")
	}
	if code := e.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code after SIGTERM under load = %d\n%s", code, e.logs.String())
	}
	assertAllPresent(t, cfg, data, acked)
}
