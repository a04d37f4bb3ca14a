// Command webhook-load measures webhook ingest: it signs the published
// workflow_run and workflow_job examples, gives every request a distinct run
// or job id and delivery id, posts them from concurrent clients and reports
// throughput, latency percentiles and status codes. The same generator
// drives the exporter and the null receiver, so their figures compare.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

// Result is one load test's outcome.
type Result struct {
	Target      string         `json:"target"`
	Requests    int            `json:"requests"`
	Concurrency int            `json:"concurrency"`
	Rate        float64        `json:"rate,omitempty"`
	Seconds     float64        `json:"seconds"`
	PerSecond   float64        `json:"per_second"`
	P50         float64        `json:"p50_ms"`
	P90         float64        `json:"p90_ms"`
	P99         float64        `json:"p99_ms"`
	Max         float64        `json:"max_ms"`
	Codes       map[string]int `json:"codes"`
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/webhooks/github", "Webhook URL to load.")
	secret := flag.String("secret", "demo-github-secret-change-me", "GitHub webhook secret.")
	concurrency := flag.Int("concurrency", 16, "Concurrent clients.")
	requests := flag.Int("requests", 6000, "Requests to send (bounded: the test stops by itself).")
	rate := flag.Float64("rate", 0, "Fixed request rate per second; 0 sends as fast as the clients can.")
	firstID := flag.Int64("first-id", time.Now().UnixNano()/1e3, "First run/job id; ids must be new to the exporter.")
	asJSON := flag.Bool("json", false, "Print the result as JSON.")
	flag.Parse()

	res, err := load(*url, *secret, *concurrency, *requests, *rate, *firstID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook-load:", err)
		os.Exit(1)
	}
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	fmt.Printf("%s: %d requests, %d clients: %.0f/s, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms, codes %v\n",
		res.Target, res.Requests, res.Concurrency, res.PerSecond, res.P50, res.P90, res.P99, res.Max, res.Codes)
}

// placeholder marks the id to replace in a payload template; it is a number
// so the template stays the published JSON with one value changed.
const placeholder = "777000777000777"

type template struct {
	event string
	parts [][]byte // body split around the placeholder
}

func templates() ([]template, error) {
	ph, _ := strconv.ParseInt(placeholder, 10, 64)
	specs := []struct {
		event, file string
		set         map[string]any
	}{
		{"workflow_run", "github/workflow_run/requested.json", map[string]any{"workflow_run.id": ph}},
		{"workflow_job", "github/workflow_job/completed.success.with-organization.json", map[string]any{"workflow_job.id": ph, "workflow_job.run_id": ph}},
		{"workflow_run", "github/workflow_run/completed.json", map[string]any{"workflow_run.id": ph}},
	}
	var out []template
	for _, s := range specs {
		raw, err := fixtures.Load(s.file)
		if err != nil {
			return nil, err
		}
		body, err := fixtures.Edit(raw, s.set)
		if err != nil {
			return nil, err
		}
		out = append(out, template{event: s.event, parts: bytes.Split(body, []byte(placeholder))})
	}
	return out, nil
}

// request i is step i%3 (run requested, job completed, run completed) of
// run firstID+i/3: every request is a distinct event of a distinct run or job.
func build(ts []template, firstID int64, i int) (string, []byte) {
	t := ts[i%len(ts)]
	id := []byte(strconv.FormatInt(firstID+int64(i/len(ts)), 10))
	return t.event, bytes.Join(t.parts, id)
}

func load(url, secret string, concurrency, requests int, rate float64, firstID int64) (*Result, error) {
	ts, err := templates()
	if err != nil {
		return nil, err
	}
	transport := &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency}
	client := &http.Client{Timeout: 30 * time.Second, Transport: transport}

	// Each job carries its scheduled start so a fixed-rate test measures
	// latency from when the request was due, not from when a client was free.
	jobs := make(chan time.Time, concurrency)
	var next atomic.Int64
	latencies := make([][]time.Duration, concurrency)
	codes := make([]map[string]int, concurrency)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		codes[w] = map[string]int{}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for due := range jobs {
				i := int(next.Add(1) - 1)
				event, body := build(ts, firstID, i)
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-GitHub-Event", event)
				req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("load-%d-%d", firstID, i))
				req.Header.Set("X-Hub-Signature-256", fixtures.SignGitHub(secret, body))
				resp, err := client.Do(req)
				code := "error"
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = strconv.Itoa(resp.StatusCode)
				}
				latencies[w] = append(latencies[w], time.Since(due))
				codes[w][code]++
			}
		}(w)
	}
	start := time.Now()
	for i := 0; i < requests; i++ {
		due := time.Now()
		if rate > 0 {
			due = start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		jobs <- due
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	res := &Result{Target: url, Requests: requests, Concurrency: concurrency, Rate: rate, Seconds: elapsed.Seconds(), Codes: map[string]int{}}
	for w := range latencies {
		all = append(all, latencies[w]...)
		for c, n := range codes[w] {
			res.Codes[c] += n
		}
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))]) / 1e6
	}
	res.PerSecond = float64(requests) / elapsed.Seconds()
	res.P50, res.P90, res.P99, res.Max = pct(.50), pct(.90), pct(.99), pct(1)
	return res, nil
}
