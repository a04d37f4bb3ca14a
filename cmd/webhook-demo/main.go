// Command webhook-demo plays one live publish against a running
// pipeline_exporter: a Supabase database webhook (the trigger), then
// GitHub's published workflow_run and workflow_job example webhooks,
// signed, as the workflow run the trigger dispatched. With --site-address
// it also serves the "site" the publish goes live on, a page whose meta tag
// names the commit built, until the exporter's verify stage has seen it. Each call is a new
// publish: the examples get fresh run and job ids and the current time, and
// lose their links to the example's run on GitHub; nothing else of them is
// changed, so the run is neither a duplicate of the last one nor dated 2020
// (which retention would prune), nor linked to a GitHub run that is not it.
package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

func main() {
	url := flag.String("url", "http://localhost:8080", "Base URL of the exporter (or of its webhook listener).")
	secret := flag.String("secret", "demo-github-secret-change-me", "webhooks.github.secret of the exporter's config.")
	supabaseSecret := flag.String("supabase-secret", "demo-supabase-secret-change-me", "webhooks.supabase.secret of the exporter's config (sent as a Bearer token).")
	siteAddress := flag.String("site-address", "localhost:8081", "Serve the demo site here while the publish goes live (the example config verifies it); empty serves none.")
	flag.Parse()
	now := time.Now()
	// A commit of its own for each publish: the build the site must show.
	commit := fmt.Sprintf("%x", sha1.Sum(fmt.Append(nil, now.UnixNano())))
	var stopSite func()
	if *siteAddress != "" {
		var err error
		if stopSite, err = serveSite(*siteAddress, commit); err != nil {
			fmt.Fprintln(os.Stderr, "webhook-demo:", err)
			os.Exit(1)
		}
	}
	runID, err := demo(*url, *secret, *supabaseSecret, commit, now)
	if err == nil && stopSite != nil {
		err = awaitVerify(*url, runID)
		stopSite()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook-demo:", err)
		os.Exit(1)
	}
	fmt.Printf("\nNow look at run %d:\n", runID)
	fmt.Printf("  %s/runs/%d                     its page: trigger, dispatch, the job\n", *url, runID)
	fmt.Printf("  curl -s %s/api/pipeline-runs/%d    the same as JSON\n", *url, runID)
	fmt.Printf("  curl -s %s/metrics | grep '^pipeline_runs_total'\n", *url)
	if stopSite != nil {
		fmt.Printf("  curl -s %s/api/pipelines                 the build live on the demo site\n", *url)
		fmt.Printf("\nThe demo site stopped with the demo: two rechecks later the landing page's\n" +
			"Pipelines table marks the build stale, as after a rollback. `make demo` again publishes anew.\n")
	}
}

// serveSite serves the demo site at addr: a page whose meta tag names the
// commit, as a site built with the commit written into it would.
func serveSite(addr, commit string) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serving the demo site on %s: %w (pass --site-address=HOST:PORT, and the same URL as verify.url in the config)", addr, err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "<!doctype html>\n<html><head><meta name=\"commit\" content=\"%s\"><title>Demo site</title></head>\n<body><h1>Hello from webhook-demo</h1></body></html>\n", commit)
		}),
	}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("demo site http://%s/ serves commit %s\n", ln.Addr(), commit[:7])
	return func() { _ = srv.Close() }, nil
}

// awaitVerify waits for the run to finish, at most a minute: the
// exporter checks the demo site once the workflow run completed.
func awaitVerify(url string, runID int64) error {
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		var ans struct {
			Data struct {
				Status string `json:"status"`
				Error  string `json:"error"`
				Verify *struct {
					Served string `json:"served"`
				} `json:"verify"`
			} `json:"data"`
		}
		resp, err := client.Get(fmt.Sprintf("%s/api/pipeline-runs/%d", url, runID))
		if err == nil {
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ans)
			resp.Body.Close()
		}
		switch {
		case err != nil:
			return fmt.Errorf("reading run %d: %w", runID, err)
		case ans.Data.Status == "success" && ans.Data.Verify != nil:
			fmt.Printf("run %d: success, the site serves its build %s\n", runID, ans.Data.Verify.Served[:min(7, len(ans.Data.Verify.Served))])
			return nil
		case ans.Data.Status != "pending" && ans.Data.Status != "running":
			fmt.Printf("run %d: %s %s\n", runID, ans.Data.Status, ans.Data.Error)
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("run %d still %s after a minute: does the config verify the demo site (verify.url)?", runID, ans.Data.Status)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// step is one delivery of the publish.
type step struct {
	path, event string
	body        []byte
	headers     map[string]string
}

// demo posts the publish of commit and returns the id of the run it made.
func demo(url, secret, supabaseSecret, commit string, now time.Time) (int64, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	// Fresh GitHub ids on every call, within JSON's exact integers.
	runID := now.UnixMilli()
	jobID := runID + 1
	stamp := now.UnixNano()
	at := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339) }

	// Supabase publishes no example body, only the documented shape
	// {type, table, schema, record, old_record} (fixtures/README.md); this
	// is an INSERT of it into the posts table the example config follows.
	trigger := step{
		path: "/webhooks/supabase", event: "INSERT",
		body:    fmt.Appendf(nil, `{"type":"INSERT","table":"posts","schema":"public","record":{"id":%d,"title":"Hello from webhook-demo"},"old_record":null}`, stamp),
		headers: map[string]string{"Authorization": "Bearer " + supabaseSecret},
	}
	ans, err := post(client, url, trigger)
	if err != nil {
		return 0, err
	}
	if len(ans.Data.RunIDs) != 1 {
		return 0, fmt.Errorf("the Supabase trigger opened no run (outcome %s, reason %q): does a pipeline follow INSERT on the posts table?", ans.Data.Outcome, ans.Data.Reason)
	}

	// The workflow run the trigger dispatched: created a second after it,
	// its job queued, started and done within seconds.
	// Their html_url is the page of the published example's run or job on
	// GitHub, not of this one, which GitHub never ran: it goes, so that
	// the run page links only to what exists for this run.
	run := func(name string, updated time.Duration) []byte {
		return fixtures.MustWithout(fixtures.MustEdit(fixtures.MustLoad(name), map[string]any{
			"workflow_run.id":             runID,
			"workflow_run.created_at":     at(time.Second),
			"workflow_run.run_started_at": at(time.Second),
			"workflow_run.updated_at":     at(updated),
			"workflow_run.head_sha":       commit,
			// Committed two minutes before the trigger: the lead time.
			"workflow_run.head_commit.id":        commit,
			"workflow_run.head_commit.timestamp": at(-2 * time.Minute),
		}), "workflow_run.html_url")
	}
	// The published job examples share one job id: they are the same job
	// queued, in progress and completed.
	job := func(name string, started, completed time.Duration) []byte {
		set := map[string]any{
			"workflow_job.id":         jobID,
			"workflow_job.run_id":     runID,
			"workflow_job.created_at": at(2 * time.Second),
			"workflow_job.started_at": at(started),
		}
		if completed > 0 {
			set["workflow_job.completed_at"] = at(completed)
		}
		return fixtures.MustWithout(fixtures.MustEdit(fixtures.MustLoad(name), set), "workflow_job.html_url")
	}
	github := []step{
		{event: "workflow_run", body: run("github/workflow_run/requested.json", time.Second)},
		{event: "workflow_job", body: job("github/workflow_job/queued.json", 2*time.Second, 0)},
		{event: "workflow_job", body: job("github/workflow_job/in_progress.json", 3*time.Second, 0)},
		{event: "workflow_job", body: job("github/workflow_job/completed.success.with-organization.json", 3*time.Second, 8*time.Second)},
		{event: "workflow_run", body: run("github/workflow_run/completed.json", 9*time.Second)},
	}
	for i, s := range github {
		s.path = "/webhooks/github"
		s.headers = map[string]string{
			"User-Agent":          "GitHub-Hookshot/webhook-demo",
			"X-GitHub-Event":      s.event,
			"X-GitHub-Delivery":   fmt.Sprintf("demo-%d-%d", stamp, i),
			"X-Hub-Signature-256": fixtures.SignGitHub(secret, s.body),
		}
		if _, err := post(client, url, s); err != nil {
			return 0, err
		}
	}
	return ans.Data.RunIDs[0], nil
}

// answer is the exporter's answer to a delivery.
type answer struct {
	Data struct {
		Outcome string  `json:"outcome"`
		RunIDs  []int64 `json:"run_ids"`
		Reason  string  `json:"reason"`
	} `json:"data"`
}

func post(client *http.Client, url string, s step) (answer, error) {
	var ans answer
	req, err := http.NewRequest(http.MethodPost, url+s.path, bytes.NewReader(s.body))
	if err != nil {
		return ans, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range s.headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return ans, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	fmt.Printf("%-9s %-13s %d %s\n", s.path[len("/webhooks/"):], s.event, resp.StatusCode, bytes.TrimSpace(body))
	if resp.StatusCode >= 300 {
		return ans, fmt.Errorf("%s %s delivery answered %d", s.path, s.event, resp.StatusCode)
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return ans, fmt.Errorf("%s %s answer: %w", s.path, s.event, err)
	}
	return ans, nil
}
