// Command webhook-demo signs the published GitHub example webhooks and posts
// them to a running pipeline_exporter, so that a newcomer sees one run in
// /api/pipeline-runs and /metrics. The examples do not belong to one run, so
// the job examples get the run example's id; nothing else is changed.
package main

import (
	"bytes"
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
	flag.Parse()
	if err := demo(*url, *secret); err != nil {
		fmt.Fprintln(os.Stderr, "webhook-demo:", err)
		os.Exit(1)
	}
	fmt.Printf("\nNow look:\n  curl -s '%s/api/pipeline-runs?limit=5'\n  curl -s %s/metrics | grep '^pipeline_'\n", *url, *url)
}

// demoRunID is the run id of the published workflow_run examples.
const demoRunID = 289782451

func demo(url, secret string) error {
	job := func(name string) []byte {
		return fixtures.MustEdit(fixtures.MustLoad(name), map[string]any{"workflow_job.run_id": demoRunID})
	}
	steps := []struct {
		event string
		body  []byte
	}{
		{"ping", fixtures.MustLoad("github/ping/payload.json")},
		{"workflow_run", fixtures.MustLoad("github/workflow_run/requested.json")},
		{"workflow_job", job("github/workflow_job/queued.json")},
		{"workflow_job", job("github/workflow_job/in_progress.json")},
		{"workflow_job", job("github/workflow_job/completed.success.with-organization.json")},
		{"workflow_run", fixtures.MustLoad("github/workflow_run/completed.json")},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	stamp := time.Now().UnixNano()
	for i, s := range steps {
		req, err := http.NewRequest(http.MethodPost, url+"/webhooks/github", bytes.NewReader(s.body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "GitHub-Hookshot/webhook-demo")
		req.Header.Set("X-GitHub-Event", s.event)
		req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("demo-%d-%d", stamp, i))
		req.Header.Set("X-Hub-Signature-256", fixtures.SignGitHub(secret, s.body))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		fmt.Printf("%-13s %d %s", s.event, resp.StatusCode, answer)
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s delivery answered %d", s.event, resp.StatusCode)
		}
	}
	return nil
}
