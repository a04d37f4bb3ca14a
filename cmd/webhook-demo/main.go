// Command webhook-demo plays one live publish against a running
// pipeline_exporter: a Supabase database webhook (the trigger), then
// GitHub's published workflow_run and workflow_job example webhooks,
// signed, as the workflow run the trigger dispatched. Each call is a new
// publish: the examples get fresh run and job ids and the current time, and
// lose their links to the example's run on GitHub; nothing else of them is
// changed, so the run is neither a duplicate of the last one nor dated 2020
// (which retention would prune), nor linked to a GitHub run that is not it.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

func main() {
	url := flag.String("url", "http://localhost:8080", "Base URL of the exporter (or of its webhook listener).")
	secret := flag.String("secret", "demo-github-secret-change-me", "webhooks.github.secret of the exporter's config.")
	supabaseSecret := flag.String("supabase-secret", "demo-supabase-secret-change-me", "webhooks.supabase.secret of the exporter's config (sent as a Bearer token).")
	flag.Parse()
	runID, err := demo(*url, *secret, *supabaseSecret, time.Now())
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook-demo:", err)
		os.Exit(1)
	}
	fmt.Printf("\nNow look at run %d:\n", runID)
	fmt.Printf("  %s/runs/%d                     its page: trigger, dispatch, the job\n", *url, runID)
	fmt.Printf("  curl -s %s/api/pipeline-runs/%d    the same as JSON\n", *url, runID)
	fmt.Printf("  curl -s %s/metrics | grep '^pipeline_runs_total'\n", *url)
}

// step is one delivery of the publish.
type step struct {
	path, event string
	body        []byte
	headers     map[string]string
}

// demo posts the publish and returns the id of the run it made.
func demo(url, secret, supabaseSecret string, now time.Time) (int64, error) {
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
