package e2e

import (
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestRechecksLeaveNoLogEntries: a pipeline's live build is rechecked every
// 200ms and each recheck goes through the log; killed with SIGKILL and
// started again, the exporter prunes the applied recheck entries at once,
// leaving the webhook deliveries and the verify result, and the live
// build's last check, which is in the run. A redelivery is still a
// duplicate.
func TestRechecksLeaveNoLogEntries(t *testing.T) {
	site, requests := buildSite(t)
	config := func(interval string) string {
		return writeConfig(t, buildSiteConfig(site.URL, interval))
	}
	data := filepath.Join(t.TempDir(), "data")
	e := startExporter(t, config("200ms"), data)
	deliveries := exampleRun(t, exampleRunID, "success")
	for _, d := range deliveries {
		e.mustPost(d, http.StatusAccepted)
	}
	// The verify check and then at least five rechecks.
	deadline := time.Now().Add(15 * time.Second)
	for requests.Load() < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests to the site in 15s, want a verify check and 5 rechecks", requests.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Applied as they come; the pruner's next pass is a minute away.
	webhooksAndVerify := int64(len(deliveries) + 1)
	if got := e.status().Deliveries; got < webhooksAndVerify+4 {
		t.Fatalf("log entries while rechecking: %d, want the %d webhooks and verify result and the rechecks", got, webhooksAndVerify)
	}
	lastCheck, _ := e.metric(`pipeline_live_last_check_timestamp_seconds{pipeline="site"}`)
	e.stop(syscall.SIGKILL)

	// An hour's interval: no recheck is due after the restart.
	e = startExporter(t, config("1h"), data)
	deadline = time.Now().Add(5 * time.Second)
	for e.status().Deliveries != webhooksAndVerify {
		if time.Now().After(deadline) {
			t.Fatalf("log entries after a restart: %d, want %d (the webhooks and the verify result)", e.status().Deliveries, webhooksAndVerify)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The last check a metric showed before the kill was committed, so it
	// is in the run; a later one may have been committed before the kill.
	after, _ := e.metric(`pipeline_live_last_check_timestamp_seconds{pipeline="site"}`)
	before, err1 := strconv.ParseFloat(lastCheck, 64)
	now, err2 := strconv.ParseFloat(after, 64)
	if err1 != nil || err2 != nil || now < before {
		t.Errorf("pipeline_live_last_check_timestamp_seconds %q after the restart, want at least %q from before it", after, lastCheck)
	}
	if v, _ := e.metric(`pipeline_live_stale{pipeline="site"}`); v != "0" {
		t.Errorf("pipeline_live_stale after the restart = %q, want 0", v)
	}
	e.mustPost(deliveries[2], http.StatusOK)
	if v, _ := e.metric(`pipeline_exporter_webhook_requests_total{outcome="duplicate",source="github"}`); v != "1" {
		t.Errorf("a redelivery after pruning: duplicate count %q, want 1", v)
	}
}
