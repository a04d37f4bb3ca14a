package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

// pollRepositories is how many repositories the poll row watches.
const pollRepositories = 500

// benchStart dates the fake GitHub's runs, the same at every answer.
var benchStart = time.Now().UTC().Truncate(time.Second)

// fakeGitHub answers the REST calls the poller makes for its repositories,
// each with one finished run of test.yml that never changes, the way
// GitHub answers them: an ETag on every answer, 304 to a matching
// If-None-Match, which costs no rate-limit point, and the X-RateLimit
// headers. It counts requests, 304s and points.
type fakeGitHub struct {
	mu                            sync.Mutex
	requests, notModified, points int
	byEndpoint                    map[string]int
}

func (f *fakeGitHub) counts() (requests, notModified, points int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests, f.notModified, f.points
}

// runsBody is the published list-runs example with its one run moved to
// repo, made a finished run of test.yml with id id.
func runsBody(repo string, id int64) ([]byte, error) {
	var list map[string]any
	if err := json.Unmarshal(fixtures.MustLoad("github/rest/actions/list-workflow-runs-for-repo.json"), &list); err != nil {
		return nil, err
	}
	run := list["workflow_runs"].([]any)[0].(map[string]any)
	run["id"], run["path"], run["status"], run["conclusion"] = id, ".github/workflows/test.yml", "completed", "success"
	run["repository"].(map[string]any)["full_name"] = repo
	// Inside the poller's backfill window, so that the first poll reads it.
	at := benchStart.Add(-time.Hour).Format(time.RFC3339)
	run["created_at"], run["updated_at"], run["run_started_at"] = at, at, at
	return json.Marshal(list)
}

// jobsBody is the published list-jobs example with its jobs moved to run id.
func jobsBody(id int64) ([]byte, error) {
	var list map[string]any
	if err := json.Unmarshal(fixtures.MustLoad("github/rest/actions/list-jobs-for-workflow-run.json"), &list); err != nil {
		return nil, err
	}
	for _, j := range list["jobs"].([]any) {
		j.(map[string]any)["run_id"] = id
	}
	return json.Marshal(list)
}

func (f *fakeGitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /repos/{owner}/{repo}/actions/runs[/{id}/attempts/{n}/jobs]
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	endpoint := "other"
	var body []byte
	var err error
	switch {
	case len(parts) == 5 && parts[0] == "repos" && parts[3] == "actions" && parts[4] == "runs":
		endpoint = "runs"
		n, _ := strconv.Atoi(strings.TrimPrefix(parts[2], "repo-"))
		body, err = runsBody(parts[1]+"/"+parts[2], int64(7_000_000+n))
	case len(parts) == 9 && parts[4] == "runs" && parts[8] == "jobs":
		endpoint = "jobs"
		id, _ := strconv.ParseInt(parts[5], 10, 64)
		body, err = jobsBody(id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	f.byEndpoint[endpoint]++
	w.Header().Set("X-RateLimit-Limit", "5000")
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(max(0, 5000-f.points)))
	w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
	if err != nil || body == nil {
		f.points++
		http.NotFound(w, r)
		return
	}
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		f.notModified++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	f.points++
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(body)
}

// pollCost measures the GitHub API calls the poller spends on 500
// repositories whose runs do not change: after the first poll (which
// reads each run and its jobs), requests and rate-limit points over a
// window, polling every second, scaled to an hour at the default
// poll_interval of 60 s. The peer does not poll workflow runs (it gets them
// by webhook; its API poller reads billing only, from api.github.com).
func (b *bench) pollCost() error {
	fake := &fakeGitHub{byEndpoint: map[string]int{}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	var repos []string
	for i := range pollRepositories {
		repos = append(repos, fmt.Sprintf("%q", fmt.Sprintf("bench/repo-%d", i)))
	}
	cfg := fmt.Sprintf("github:\n  repositories: [%s]\n  token: bench-token\n  api_url: %s/\n  poll_interval: 1s\n%s",
		strings.Join(repos, ", "), srv.URL, strings.TrimPrefix(orgConfig, ""))
	dir := filepath.Join(b.work, "poll")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	exp, err := b.exporterWith(dir, cfg)
	if err != nil {
		return err
	}
	defer exp.stop()
	// The first poll of every repository, and one more round.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if req, _, _ := fake.counts(); req >= 3*pollRepositories {
			break
		}
		if time.Now().After(deadline) {
			req, _, _ := fake.counts()
			return fmt.Errorf("the poller made %d requests in 3 minutes", req)
		}
		time.Sleep(100 * time.Millisecond)
	}
	first, err := gauge(exp.url+"/metrics", "pipeline_exporter_store_runs")
	if err != nil {
		return err
	}
	req0, nm0, pts0 := fake.counts()
	const window = 30 * time.Second
	time.Sleep(window)
	req1, nm1, pts1 := fake.counts()
	req, nm, pts := req1-req0, nm1-nm0, pts1-pts0
	// A poll cycle asks each repository once; the window held this many.
	cycles := float64(req) / pollRepositories
	perCycleReq, perCyclePts := float64(req)/cycles, float64(pts)/cycles
	const cyclesPerHour = 3600 / 60
	fmt.Fprintf(os.Stderr, "poll: %d requests (%d answered 304), %d points in %v (%.1f cycles); runs stored after the first poll: %.0f; by endpoint %v\n",
		req, nm, pts, window, cycles, first, fake.byEndpoint)
	b.single(fmt.Sprintf("GitHub API per hour at poll_interval 60s, %d unchanged repositories: requests, rate-limit points (peer: does not poll runs)", pollRepositories),
		fmt.Sprintf("%.0f requests (%.0f%% answered 304), %.0f points", perCycleReq*cyclesPerHour, 100*float64(nm)/float64(max(req, 1)), perCyclePts*cyclesPerHour),
		"0 points", yes(pts == 0))
	return nil
}
