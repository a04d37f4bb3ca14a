package e2e

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
)

// TestReplicaRechecksOnLeaderOnly: with two replicas on PostgreSQL, only
// the leader rechecks the live build, every replica shows it, and after
// the leader stops the new leader goes on rechecking from the shared store.
func TestReplicaRechecksOnLeaderOnly(t *testing.T) {
	site, requests := buildSite(t)
	cfg := writeConfig(t, buildSiteConfig(site.URL, "500ms"))
	dbURL := pgtest.NewDatabase(t)
	a := startReplica(t, cfg, dbURL, freeAddr(t))
	b := startReplica(t, cfg, dbURL, freeAddr(t))
	leader := waitOneLeader(t, 5*time.Second, a, b)
	follower := a
	if leader == a {
		follower = b
	}
	for _, d := range exampleRun(t, exampleRunID, "success") {
		if code, body, err := newBalancer(leader).post(leader.url, d); err != nil || code >= 300 {
			t.Fatalf("POST: %d %s %v", code, body, err)
		}
	}
	checked := func(e *exporter) string {
		v, _ := e.metric(`pipeline_live_last_check_timestamp_seconds{pipeline="site"}`)
		return v
	}
	deadline := time.Now().Add(10 * time.Second)
	for checked(follower) == "" {
		if time.Now().After(deadline) {
			t.Fatal("the follower shows no live build")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Over 5 s at one recheck per 500 ms, one leader makes about 10
	// requests; two replicas rechecking would make about 20.
	before := requests.Load()
	time.Sleep(5 * time.Second)
	n := requests.Load() - before
	if n < 5 || n > 13 {
		t.Errorf("%d rechecks in 5s at a 500ms interval, want about 10 (the leader's alone)", n)
	}
	t.Logf("%d rechecks in 5s at a 500ms interval", n)
	if v, _ := follower.metric(`pipeline_live_stale{pipeline="site"}`); v != "0" {
		t.Errorf("follower: pipeline_live_stale = %q, want 0", v)
	}

	// The leader stops; the other replica leads and rechecks.
	leader.stop(syscall.SIGTERM)
	waitOneLeader(t, 15*time.Second, follower)
	last := checked(follower)
	deadline = time.Now().Add(10 * time.Second)
	for checked(follower) == last {
		if time.Now().After(deadline) {
			t.Fatalf("no recheck after the failover: last check still %s", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// buildSite starts a site that serves the fixture's commit in an X-Commit
// header, and counts the requests it answers.
func buildSite(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var requests atomic.Int32
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.Header().Set("X-Commit", fixtureSHA)
	}))
	t.Cleanup(site.Close)
	return site, &requests
}

// buildSiteConfig is the configuration of one pipeline, site, whose verify
// checks buildSite's X-Commit header and rechecks it every interval.
func buildSiteConfig(siteURL, interval string) string {
	return `
webhooks:
  github: { secret: ` + githubSecret + ` }
pipelines:
  - name: site
    workflow: test.yml
    branches: [master]
    verify:
      url: ` + siteURL + `/
      timeout: 1s
      recheck_interval: ` + interval + `
      build: { header: X-Commit }
`
}
