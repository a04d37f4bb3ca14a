// Command bench runs the measurements of `make bench` that need the real
// binary — durable webhook ingest side by side with the peer exporter and a
// null receiver, the cost of live-event streams, the run API and
// /metrics at 1k, 100k and 1M stored runs, memory and startup time, and
// ingest while retention prunes — and prints them as one table. It only
// talks to processes it starts on 127.0.0.1, and every loop is bounded.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

const secret = "bench-secret"

func main() {
	bin := flag.String("bin", "", "Directory with the built pipeline_exporter, webhook-load and null-receiver binaries.")
	work := flag.String("work", "", "Scratch directory for data (seeded histories are kept there between runs).")
	sizes := flag.String("sizes", "1000,100000,1000000", "Stored-run counts for the API, scrape and memory rows.")
	requests := flag.Int("requests", 20000, "Requests per throughput run.")
	rounds := flag.Int("rounds", 3, "Rounds of the side-by-side ingest runs (the table shows medians).")
	peer := flag.String("peer", "", "Binary of cpanato/github_actions_exporter, measured side by side; empty prints its columns as not measured.")
	retentionSeconds := flag.Int("retention-seconds", 75, "Length of the fixed-rate run while the pruner works (it runs every minute).")
	parts := flag.String("parts", "ingest,history,retention,scale,poll,orghistory", "Which measurements to run.")
	orgRuns := flag.Int("org-runs", 1_000_000, "Stored runs of the 1,000-pipeline memory row.")
	prometheus := flag.String("prometheus", prometheusOnPath(), "Prometheus binary whose memory the 1,000-pipeline scrape is measured with; empty skips that row.")
	flag.Parse()
	b := &bench{bin: *bin, work: *work, requests: *requests, rounds: *rounds, peer: *peer, prometheus: *prometheus, nextID: 1}
	if err := b.run(strings.Split(*parts, ","), *sizes, *retentionSeconds, orgRuns); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	bin, work, peer  string
	prometheus       string
	requests, rounds int
	// nextID is the first run id of the next load, so that every load's
	// runs are new to the receivers.
	nextID int64
	rows   [][]string
}

// row adds a row of the side-by-side table: measurement, exporter, peer,
// null receiver, exporter ÷ peer, exporter ÷ null, target, holds.
func (b *bench) row(cells ...string) { b.rows = append(b.rows, cells) }

// single adds a row that measures the exporter alone.
func (b *bench) single(name, value, target, holds string) {
	b.row(name, value, "", "", "", "", target, holds)
}

func (b *bench) run(parts []string, sizes string, retentionSeconds int, orgRuns *int) error {
	fmt.Fprintf(os.Stderr, "machine: %d cores, %s\n", runtime.NumCPU(), runtime.GOARCH)
	for _, part := range []struct {
		name string
		run  func() error
	}{
		{"ingest", b.ingest},
		{"history", func() error { return b.history(sizes) }},
		{"retention", func() error { return b.retention(retentionSeconds) }},
		{"scale", b.scale},
		{"poll", b.pollCost},
		{"orghistory", func() error { return b.orgHistory(*orgRuns) }},
	} {
		if !slices.Contains(parts, part.name) {
			continue
		}
		if err := part.run(); err != nil {
			return fmt.Errorf("%s: %w", part.name, err)
		}
	}
	fmt.Printf("\n| measurement | exporter (durable, SQLite) | peer (in memory) | null receiver | exporter ÷ peer | exporter ÷ null | target | holds |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Printf("| %s |\n", strings.Join(r, " | "))
	}
	return nil
}

// receiver is one webhook receiver driven by the same load: this
// exporter, the peer exporter or the null receiver.
type receiver struct {
	name string
	url  string // the webhook URL
	p    *process

	// Samples, one per round.
	perSec16, perSec64, p99, hwmMiB, cpuMicros []float64
}

// ingest measures, side by side in one run, durable ingest throughput at 16
// and 64 clients, p99 at a fixed 500 req/s and peak RSS over that run, for
// the exporter, the peer (when --peer names its binary) and the null
// receiver; then the cost of open /api/events streams on the exporter's
// p99. Rounds alternate the receivers so a busy moment on the shared
// machine falls on all of them; the table shows medians (peak RSS: the
// highest).
func (b *bench) ingest() error {
	var recv []*receiver

	nullAddr := freeAddr()
	null, err := b.start("null-receiver", "--listen-address="+nullAddr)
	if err != nil {
		return err
	}
	defer null.stop()
	if err := waitTCP(nullAddr); err != nil {
		return err
	}
	nullR := &receiver{name: "null receiver", url: "http://" + nullAddr + "/webhooks/github", p: null}

	var peerR *receiver
	if b.peer != "" {
		ingressAddr, metricsAddr := freeAddr(), freeAddr()
		// The peer exporter as its README runs it: webhooks on the ingress
		// address at /gh_event, authenticated with the secret (SHA-1
		// X-Hub-Signature, which webhook-load sends as GitHub does).
		peer, err := b.startPath(b.peer, "peer", "--gh.github-webhook-token="+secret,
			"--web.listen-address="+metricsAddr, "--web.listen-address-ingress="+ingressAddr)
		if err != nil {
			return err
		}
		defer peer.stop()
		if err := waitTCP(ingressAddr); err != nil {
			return err
		}
		peerR = &receiver{name: "peer", url: "http://" + ingressAddr + "/gh_event", p: peer}
	}

	// A fresh history: run ids start at 1 in every bench run, and a
	// history kept from an earlier one would answer them all as
	// duplicates.
	ingest := filepath.Join(b.work, "ingest")
	if err := os.RemoveAll(ingest); err != nil {
		return err
	}
	exp, err := b.exporter(ingest)
	if err != nil {
		return err
	}
	defer exp.stop()
	expR := &receiver{name: "exporter", url: exp.url + "/webhooks/github", p: exp}

	recv = append(recv, expR)
	if peerR != nil {
		recv = append(recv, peerR)
	}
	recv = append(recv, nullR)

	for _, r := range recv {
		if _, err := b.load(r.url, 16, 2000, 0); err != nil { // warm up
			return err
		}
	}
	// The fixed-rate runs come first, before any burst has grown a heap,
	// so the peak RSS is that of a steady 500/s.
	for round := 0; round < b.rounds; round++ {
		for _, r := range recv {
			settle()
			if err := r.p.resetHWM(); err != nil {
				return err
			}
			res, err := b.load(r.url, 16, 5000, 500)
			if err != nil {
				return err
			}
			hwm, err := r.p.hwmMiB()
			if err != nil {
				return err
			}
			r.p99 = append(r.p99, res.P99)
			r.hwmMiB = append(r.hwmMiB, hwm)
		}
	}
	streams, err := b.streamsCost(expR)
	if err != nil {
		return err
	}
	for round := 0; round < b.rounds; round++ {
		for _, r := range recv {
			settle()
			cpu0, err := r.p.cpuSeconds()
			if err != nil {
				return err
			}
			res, err := b.load(r.url, 16, b.requests, 0)
			if err != nil {
				return err
			}
			cpu1, err := r.p.cpuSeconds()
			if err != nil {
				return err
			}
			r.cpuMicros = append(r.cpuMicros, (cpu1-cpu0)/float64(b.requests)*1e6)
			r.perSec16 = append(r.perSec16, res.PerSecond)
			settle()
			if res, err = b.load(r.url, 64, b.requests, 0); err != nil {
				return err
			}
			r.perSec64 = append(r.perSec64, res.PerSecond)
		}
	}

	side := func(name string, value func(*receiver) float64, format string, target string, holds func(vsPeer float64) bool) {
		e, n := value(expR), value(nullR)
		cells := []string{name, fmt.Sprintf(format, e), notMeasured, fmt.Sprintf(format, n), notMeasured, ratio(e, n), target, notMeasured}
		if peerR != nil {
			p := value(peerR)
			cells[2], cells[4] = fmt.Sprintf(format, p), ratio(e, p)
			if holds != nil {
				cells[7] = yes(holds(e / p))
			}
		}
		if holds == nil {
			cells[7] = ""
		}
		b.row(cells...)
	}
	side("durable ingest, 16 clients (req/s)", func(r *receiver) float64 { return median(r.perSec16) }, "%.0f", "≥ 1.0× peer", func(x float64) bool { return x >= 1 })
	side("durable ingest, 64 clients (req/s)", func(r *receiver) float64 { return median(r.perSec64) }, "%.0f", "≥ 1.0× peer", func(x float64) bool { return x >= 1 })
	side("p99 at a fixed 500 req/s (ms)", func(r *receiver) float64 { return median(r.p99) }, "%.2f", "≤ 2× peer", func(x float64) bool { return x <= 2 })
	side("peak RSS over the 500 req/s run (MiB, VmHWM)", func(r *receiver) float64 { return slices.Max(r.hwmMiB) }, "%.1f", "≤ 1.5× peer", func(x float64) bool { return x <= 1.5 })
	side("CPU per webhook at 16 clients (µs)", func(r *receiver) float64 { return median(r.cpuMicros) }, "%.0f", "", nil)
	b.row(streams...)
	for _, r := range []*receiver{expR, peerR} {
		if r == nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "%s samples: 16 clients %v/s, 64 clients %v/s, p99 %v ms, peak RSS %v MiB\n",
			r.name, rounded(r.perSec16), rounded(r.perSec64), rounded(r.p99), rounded(r.hwmMiB))
	}
	outcomes, err := counters(exp.url+"/metrics", "pipeline_exporter_webhook_requests_total{", `source="github"`)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "exporter webhook outcomes over the ingest runs: %v\n", outcomes)
	return nil
}

// settle lets what the previous run left (a checkpoint, a peer's
// goroutines) finish before the next run is measured.
func settle() { time.Sleep(time.Second) }

const notMeasured = "not measured"

// ratio is a over b, as the table prints it.
func ratio(a, b float64) string {
	if b == 0 {
		return notMeasured
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func rounded(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Round(x*100) / 100
	}
	return out
}

// counters reads the samples of a metric family whose labels contain
// match, keyed by their labels.
func counters(url, prefix, match string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok || !strings.Contains(rest, match) {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, err
		}
		if v != 0 {
			out[labels] = v
		}
	}
	return out, nil
}

// history measures the API, /metrics, memory and startup at each size.
func (b *bench) history(sizes string) error {
	type point struct {
		n                     int
		failedP99, pipeP99    float64
		scrapeMean, scrapeP99 float64
		rssMiB, startup       float64
	}
	var points []point
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		dir := filepath.Join(b.work, "history-"+s)
		if _, err := os.Stat(dir); err != nil {
			t0 := time.Now()
			if err := seed(dir, n); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "seeded %d runs in %v\n", n, time.Since(t0).Round(time.Millisecond))
		}
		t0 := time.Now()
		exp, err := b.exporter(dir)
		if err != nil {
			return err
		}
		p := point{n: n, startup: time.Since(t0).Seconds()}
		// A history over 64 MiB gets its full integrity check in the
		// background after start (about 40 s at 1M runs here); it reads the
		// whole file and would slow everything measured meanwhile.
		if fi, err := os.Stat(filepath.Join(dir, "pipeline_exporter.db")); err == nil && fi.Size() > 64<<20 {
			if err := b.waitForLog("Checked the store", 3*time.Minute); err != nil {
				exp.stop()
				return err
			}
		}
		if p.failedP99, _, err = latency(exp.url+"/api/pipeline-runs?status=failed&limit=50", 300); err != nil {
			exp.stop()
			return err
		}
		if p.pipeP99, _, err = latency(exp.url+"/api/pipeline-runs?pipeline=site-3&limit=50", 300); err != nil {
			exp.stop()
			return err
		}
		if p.scrapeP99, p.scrapeMean, err = latency(exp.url+"/metrics", 200); err != nil {
			exp.stop()
			return err
		}
		p.rssMiB, err = exp.rssMiB()
		exp.stop()
		if err != nil {
			return err
		}
		points = append(points, p)
	}
	first, last := points[0], points[len(points)-1]
	for _, p := range points {
		b.single(fmt.Sprintf("%d runs: API status=failed p99 / pipeline=X p99", p.n), fmt.Sprintf("%.2f ms / %.2f ms", p.failedP99, p.pipeP99), "", "")
	}
	r1 := last.failedP99 / first.failedP99
	r2 := last.pipeP99 / first.pipeP99
	b.single(fmt.Sprintf("API p99 %d vs %d runs", last.n, first.n), fmt.Sprintf("%.2f× / %.2f×", r1, r2), "≤ 2×", yes(r1 <= 2 && r2 <= 2))
	for _, p := range points {
		b.single(fmt.Sprintf("%d runs: /metrics mean, RSS, startup", p.n), fmt.Sprintf("%.2f ms, %.1f MiB, %.2f s", p.scrapeMean, p.rssMiB, p.startup), "", "")
	}
	sr := last.scrapeMean / first.scrapeMean
	b.single(fmt.Sprintf("/metrics time %d vs %d runs", last.n, first.n), fmt.Sprintf("%.2f×", sr), "≤ 1.2×", yes(sr <= 1.2))
	mr := last.rssMiB / first.rssMiB
	b.single(fmt.Sprintf("RSS %d vs %d runs", last.n, first.n), fmt.Sprintf("%.2f×", mr), "≤ 1.5×", yes(mr <= 1.5))
	b.single(fmt.Sprintf("startup with %d runs", last.n), fmt.Sprintf("%.2f s", last.startup), "< 2 s", yes(last.startup < 2))
	return nil
}

// retention compares ingest p99 at 500/s with and without the pruner
// deleting tens of thousands of runs at the same time.
func (b *bench) retention(seconds int) error {
	requests := 500 * seconds
	// measure returns the load's result and the runs stored after it, read
	// from the exporter's own gauge, so the table shows that pruning ran.
	measure := func(name string, args ...string) (*loadResult, float64, error) {
		dir := filepath.Join(b.work, name)
		_ = os.RemoveAll(dir)
		if err := seed(dir, 100000); err != nil {
			return nil, 0, err
		}
		exp, err := b.exporter(dir, args...)
		if err != nil {
			return nil, 0, err
		}
		defer exp.stop()
		res, err := b.load(exp.url+"/webhooks/github", 16, requests, 500)
		if err != nil {
			return nil, 0, err
		}
		stored, err := gauge(exp.url+"/metrics", "pipeline_exporter_store_runs")
		return res, stored, err
	}
	base, baseRuns, err := measure("retention-off", "--storage.max-records=0")
	if err != nil {
		return err
	}
	pruned, prunedRuns, err := measure("retention-on", "--storage.max-records=20000")
	if err != nil {
		return err
	}
	r := pruned.P99 / base.P99
	b.single(fmt.Sprintf("p99 at 500/s for %ds, 100k seeded runs: no pruning → max-records 20000", seconds),
		fmt.Sprintf("%.2f ms → %.2f ms = %.2f× (runs stored after: %.0f → %.0f)", base.P99, pruned.P99, r, baseRuns, prunedRuns),
		"≤ 1.5×", yes(r <= 1.5))
	return nil
}

// gauge reads one unlabelled sample from an exposition.
func gauge(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", url, name)
}

// loadResult is webhook-load's JSON answer.
type loadResult struct {
	PerSecond float64        `json:"per_second"`
	P99       float64        `json:"p99_ms"`
	Codes     map[string]int `json:"codes"`
}

// load drives url with webhook-load's realistic mix (each run's whole
// life, its jobs included) and fails on any answer but 2xx.
func (b *bench) load(url string, clients, requests int, rate float64) (*loadResult, error) {
	first := b.nextID
	b.nextID += int64(requests)
	out, err := exec.Command(filepath.Join(b.bin, "webhook-load"), "--json", "--ids=cycle", "--url="+url, "--secret="+secret,
		"--concurrency="+strconv.Itoa(clients), "--requests="+strconv.Itoa(requests),
		"--rate="+strconv.FormatFloat(rate, 'f', -1, 64), "--first-id="+strconv.FormatInt(first, 10)).Output()
	if err != nil {
		return nil, fmt.Errorf("webhook-load: %w", err)
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, err
	}
	if bad := non2xx(r.Codes); bad > 0 {
		return nil, fmt.Errorf("%s answered %d of %d requests with non-2xx: %v", url, bad, requests, r.Codes)
	}
	return &r, nil
}

func non2xx(codes map[string]int) int {
	n := 0
	for c, k := range codes {
		if !strings.HasPrefix(c, "2") {
			n += k
		}
	}
	return n
}

// latency GETs url n times in a row and returns p99 and mean in milliseconds.
func latency(url string, n int) (p99, mean float64, err error) {
	var d []float64
	for i := 0; i < n; i++ {
		t0 := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			return 0, 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("GET %s: %d", url, resp.StatusCode)
		}
		d = append(d, float64(time.Since(t0))/1e6)
	}
	slices.Sort(d)
	var sum float64
	for _, v := range d {
		sum += v
	}
	return d[int(0.99*float64(len(d)-1))], sum / float64(len(d)), nil
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
