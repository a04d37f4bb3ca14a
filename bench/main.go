// Command bench runs the measurements of `make bench` that need the real
// binary — durable webhook ingest against a null receiver, the run API and
// /metrics at 1k, 100k and 1M stored runs, memory and startup time, and
// ingest while retention prunes — and prints them as one table. It only
// talks to processes it starts on 127.0.0.1, and every loop is bounded.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	flag.Parse()
	b := &bench{bin: *bin, work: *work, requests: *requests, rounds: *rounds, peer: *peer, nextID: 1}
	if err := b.run(*sizes, *retentionSeconds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	bin, work, peer  string
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

func (b *bench) run(sizes string, retentionSeconds int) error {
	fmt.Fprintf(os.Stderr, "machine: %d cores, %s\n", runtime.NumCPU(), runtime.GOARCH)
	if err := b.ingest(); err != nil {
		return err
	}
	if err := b.history(sizes); err != nil {
		return err
	}
	if err := b.retention(retentionSeconds); err != nil {
		return err
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
	exp, err := b.exporter(ingest, true)
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
			r.p.resetHWM()
			res, err := b.load(r.url, 16, 5000, 500)
			if err != nil {
				return err
			}
			r.p99 = append(r.p99, res.P99)
			r.hwmMiB = append(r.hwmMiB, r.p.hwmMiB())
		}
	}
	streams, err := b.streamsCost(expR)
	if err != nil {
		return err
	}
	for round := 0; round < b.rounds; round++ {
		for _, r := range recv {
			settle()
			cpu0 := r.p.cpuSeconds()
			res, err := b.load(r.url, 16, b.requests, 0)
			if err != nil {
				return err
			}
			r.cpuMicros = append(r.cpuMicros, (r.p.cpuSeconds()-cpu0)/float64(b.requests)*1e6)
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

// streamsCost measures the exporter's ingest p99 at 500 req/s without and
// with 100 open /api/events streams, alternating, and returns the row.
func (b *bench) streamsCost(exp *receiver) ([]string, error) {
	const clients = 100
	var without, with []float64
	var events int64
	for round := 0; round < b.rounds; round++ {
		settle()
		res, err := b.load(exp.url, 16, 5000, 500)
		if err != nil {
			return nil, err
		}
		without = append(without, res.P99)

		settle()
		s, err := openStreams(strings.TrimSuffix(exp.url, "/webhooks/github")+"/api/events", clients)
		if err != nil {
			return nil, err
		}
		res, err = b.load(exp.url, 16, 5000, 500)
		got := s.close()
		if err != nil {
			return nil, err
		}
		with = append(with, res.P99)
		events += got
	}
	w, wo := median(with), median(without)
	return []string{fmt.Sprintf("exporter p99 at 500 req/s, 0 → %d open /api/events streams (ms)", clients),
		fmt.Sprintf("%.2f → %.2f = %.2f× (each stream received %d run events per run)", wo, w, w/wo, events/clients/int64(b.rounds)),
		"", "", "", "", "report", ""}, nil
}

// streams are open /api/events clients that read and count run events.
type streams struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	events atomic.Int64
}

// openStreams opens n streams and returns once the server has answered
// every one with 200.
func openStreams(url string, n int) (*streams, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &streams{cancel: cancel}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	ready := make(chan error, n)
	for i := 0; i < n; i++ {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := client.Do(req)
			if err != nil {
				ready <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				ready <- fmt.Errorf("GET %s: %d", url, resp.StatusCode)
				return
			}
			ready <- nil
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				if string(sc.Bytes()) == "event: run" {
					s.events.Add(1)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-ready; err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// close ends the streams and returns how many run events they received.
func (s *streams) close() int64 {
	s.cancel()
	s.wg.Wait()
	return s.events.Load()
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
		exp, err := b.exporter(dir, false)
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
		p.rssMiB = exp.rssMiB()
		exp.stop()
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
		exp, err := b.exporter(dir, true, args...)
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

// process is a binary the bench started.
type process struct {
	cmd *exec.Cmd
	url string
}

func (b *bench) start(name string, args ...string) (*process, error) {
	return b.startPath(filepath.Join(b.bin, name), name, args...)
}

// startPath starts the binary at path, logging to name.log in the work
// directory.
func (b *bench) startPath(path, name string, args ...string) (*process, error) {
	cmd := exec.Command(path, args...)
	logs, err := os.Create(filepath.Join(b.work, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &process{cmd: cmd}, nil
}

// exporter starts pipeline_exporter on dir with a config that tracks the
// load generator's workflow and, for the seeded histories, the seeded
// pipelines; it returns once /-/ready answers.
func (b *bench) exporter(dir string, fresh bool, args ...string) (*process, error) {
	if fresh {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
	}
	cfg := "webhooks:\n  github: { secret: " + secret + " }\npipelines:\n  - { name: site, workflow: test.yml }\n"
	for i := 0; i < seedPipelines; i++ {
		cfg += fmt.Sprintf("  - { name: site-%d, workflow: deploy-%d.yml }\n", i, i)
	}
	cfgPath := filepath.Join(b.work, "bench.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	addr := freeAddr()
	// Seeded runs are up to 60 days old and must all stay: no retention
	// unless the caller asks for it (kingpin refuses a repeated flag).
	all := []string{"--config.file=" + cfgPath, "--storage.path=" + dir, "--web.listen-address=" + addr}
	all = append(all, args...)
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--storage.max-records=") }) {
		all = append(all, "--storage.max-records=0")
	}
	all = append(all, "--storage.retention=0")
	p, err := b.start("pipeline_exporter", all...)
	if err != nil {
		return nil, err
	}
	p.url = "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("exporter on %s not ready within 60s; see %s", dir, filepath.Join(b.work, "pipeline_exporter.log"))
}

// waitForLog waits until the exporter's log has a line containing msg.
func (b *bench) waitForLog(msg string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		logs, err := os.ReadFile(filepath.Join(b.work, "pipeline_exporter.log"))
		if err != nil {
			return err
		}
		if strings.Contains(string(logs), msg) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no %q in the exporter's log within %v", msg, limit)
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// cpuSeconds is the process's user+system CPU time from /proc.
func (p *process) cpuSeconds() float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// rssMiB is the process's resident set size from /proc.
func (p *process) rssMiB() float64 { return p.status("VmRSS:") }

// hwmMiB is the process's peak resident set size since it started or
// since resetHWM.
func (p *process) hwmMiB() float64 { return p.status("VmHWM:") }

// resetHWM sets the peak resident set size to the current one (Linux's
// clear_refs "5"), so that the next hwmMiB is the peak of what follows.
func (p *process) resetHWM() {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0)
}

// status reads a size in kB from /proc/PID/status, in MiB.
func (p *process) status(field string) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitTCP(addr string) error {
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}
