// Command webhook-load measures webhook ingest: it signs the published
// workflow_run and workflow_job examples (with both X-Hub-Signature-256 and
// the legacy X-Hub-Signature, as GitHub sends them), gives every request a
// distinct event of a distinct run or job and a distinct delivery id, posts
// them from concurrent clients and reports throughput, latency percentiles
// and status codes. The same generator drives the exporter, other exporters
// and the null receiver, so their figures compare.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
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
	ids := flag.String("ids", "cycle", "Delivery mix: cycle (each run's whole life: requested, in_progress, three jobs queued/in_progress/completed, completed) or distinct (requested, one job completed, completed).")
	asJSON := flag.Bool("json", false, "Print the result as JSON.")
	flag.Parse()

	res, err := load(*url, *secret, *ids, *concurrency, *requests, *rate, *firstID)
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

// Placeholders mark the ids to replace in a payload template; they are
// numbers so a template stays the published JSON with values changed.
const (
	runPlaceholder = "777000777000777"
	jobPlaceholder = "777000777000778"
)

// template is one delivery's body split around its id placeholders.
type template struct {
	event string
	parts [][]byte // the body between placeholders
	slots []bool   // after parts[i]: true for the job id, false for the run id
}

func newTemplate(event, file string, set map[string]any) (template, error) {
	raw, err := fixtures.Load(file)
	if err != nil {
		return template{}, err
	}
	body, err := fixtures.Edit(raw, set)
	if err != nil {
		return template{}, err
	}
	t := template{event: event}
	for {
		r, j := bytes.Index(body, []byte(runPlaceholder)), bytes.Index(body, []byte(jobPlaceholder))
		if r < 0 && j < 0 {
			t.parts = append(t.parts, body)
			return t, nil
		}
		at, isJob := r, false
		if r < 0 || (j >= 0 && j < r) {
			at, isJob = j, true
		}
		t.parts = append(t.parts, body[:at])
		t.slots = append(t.slots, isJob)
		body = body[at+len(runPlaceholder):]
	}
}

func (t template) body(runID, jobID int64) []byte {
	var b bytes.Buffer
	for i, p := range t.parts {
		b.Write(p)
		if i < len(t.slots) {
			id := runID
			if t.slots[i] {
				id = jobID
			}
			b.WriteString(strconv.FormatInt(id, 10))
		}
	}
	return b.Bytes()
}

// step is one delivery of a run's life: its template and, for a job
// event, which of the run's jobs it concerns.
type step struct {
	t   template
	job int64
}

// jobStride spaces runs' job ids so that each job id is used by one run
// only.
const jobStride = 8

// plan returns the deliveries of one run, in the order GitHub sends them.
//
// "distinct" is three deliveries per run: requested, one job completed,
// run completed. "cycle" is a run's whole life as a deploy workflow sends
// it: requested, in_progress, three jobs (build, test, deploy) each queued,
// in_progress and completed, then the run completed — the realistic mix,
// where most deliveries are job events of a run the exporter already holds.
func plan(ids string) ([]step, error) {
	ph, _ := strconv.ParseInt(runPlaceholder, 10, 64)
	jph, _ := strconv.ParseInt(jobPlaceholder, 10, 64)
	run := func(file string) (step, error) {
		t, err := newTemplate("workflow_run", "github/workflow_run/"+file, map[string]any{"workflow_run.id": ph})
		return step{t: t}, err
	}
	job := func(file, name string, n int64) (step, error) {
		set := map[string]any{"workflow_job.id": jph, "workflow_job.run_id": ph}
		if name != "" {
			set["workflow_job.name"] = name
		}
		t, err := newTemplate("workflow_job", "github/workflow_job/"+file, set)
		return step{t: t, job: n}, err
	}
	var steps []step
	add := func(s step, err error) error {
		steps = append(steps, s)
		return err
	}
	switch ids {
	case "distinct":
		if err := add(run("requested.json")); err != nil {
			return nil, err
		}
		if err := add(job("completed.success.with-organization.json", "", 0)); err != nil {
			return nil, err
		}
		return steps, add(run("completed.json"))
	case "cycle":
		if err := add(run("requested.json")); err != nil {
			return nil, err
		}
		if err := add(run("in_progress.octokit-webhooks-net.json")); err != nil {
			return nil, err
		}
		for n, name := range []string{"build", "test", "deploy"} {
			for _, file := range []string{"queued.json", "in_progress.json", "completed.success.with-organization.json"} {
				if err := add(job(file, name, int64(n))); err != nil {
					return nil, err
				}
			}
		}
		return steps, add(run("completed.json"))
	}
	return nil, fmt.Errorf("-ids: %q is neither cycle nor distinct", ids)
}

// build returns request i: step i%len(steps) of run firstID+i/len(steps).
// Every request is a distinct event, of a distinct run or job.
func build(steps []step, firstID int64, i int) (string, []byte) {
	s := steps[i%len(steps)]
	runID := firstID + int64(i/len(steps))
	return s.t.event, s.t.body(runID, runID*jobStride+s.job)
}

// signSHA1 is the legacy X-Hub-Signature GitHub still sends next to
// X-Hub-Signature-256; exporters that only check SHA-1 need it.
func signSHA1(secret string, body []byte) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

func load(url, secret, ids string, concurrency, requests int, rate float64, firstID int64) (*Result, error) {
	steps, err := plan(ids)
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
				event, body := build(steps, firstID, i)
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-GitHub-Event", event)
				req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("load-%d-%d", firstID, i))
				req.Header.Set("X-Hub-Signature-256", fixtures.SignGitHub(secret, body))
				req.Header.Set("X-Hub-Signature", signSHA1(secret, body))
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
