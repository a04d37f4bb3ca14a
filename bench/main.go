// Command bench runs the measurements of `make bench` that need the real
// binary — durable webhook ingest against a null receiver, the run API and
// /metrics at 1k, 100k and 1M stored runs, memory and startup time, and
// ingest while retention prunes — and prints them as one table. It only
// talks to processes it starts on 127.0.0.1, and every loop is bounded.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
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
	retentionSeconds := flag.Int("retention-seconds", 75, "Length of the fixed-rate run while the pruner works (it runs every minute).")
	flag.Parse()
	b := &bench{bin: *bin, work: *work, requests: *requests}
	if err := b.run(*sizes, *retentionSeconds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	bin, work string
	requests  int
	rows      [][]string
}

func (b *bench) row(cells ...string) { b.rows = append(b.rows, cells) }

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
	fmt.Printf("\n| measurement | value | target | holds |\n|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Printf("| %s |\n", strings.Join(r, " | "))
	}
	return nil
}

// ingest compares the exporter's durable ingest with the null receiver,
// both driven by the same load generator in the same run.
func (b *bench) ingest() error {
	nullAddr := freeAddr()
	null, err := b.start("null-receiver", "--listen-address="+nullAddr)
	if err != nil {
		return err
	}
	defer null.stop()
	if err := waitTCP(nullAddr); err != nil {
		return err
	}
	nullURL := "http://" + nullAddr + "/webhooks/github"
	if _, err := b.load(nullURL, 16, 2000, 0, 1); err != nil { // warm up
		return err
	}
	nullMax, err := b.load(nullURL, 16, b.requests, 0, 1e6)
	if err != nil {
		return err
	}
	null500, err := b.load(nullURL, 16, 5000, 500, 2e6)
	if err != nil {
		return err
	}

	exp, err := b.exporter(filepath.Join(b.work, "ingest"), true)
	if err != nil {
		return err
	}
	defer exp.stop()
	expURL := exp.url + "/webhooks/github"
	if _, err := b.load(expURL, 16, 2000, 0, 3e6); err != nil {
		return err
	}
	cpu0 := exp.cpuSeconds()
	expMax, err := b.load(expURL, 16, b.requests, 0, 4e6)
	if err != nil {
		return err
	}
	cpuPer := (exp.cpuSeconds() - cpu0) / float64(b.requests) * 1e6
	exp500, err := b.load(expURL, 16, 5000, 500, 5e6)
	if err != nil {
		return err
	}
	if bad := non2xx(expMax.Codes) + non2xx(exp500.Codes); bad > 0 {
		return fmt.Errorf("exporter answered %d requests with non-2xx: %v %v", bad, expMax.Codes, exp500.Codes)
	}
	ratio := expMax.PerSecond / nullMax.PerSecond
	b.row("ingest, 16 clients: null receiver", fmt.Sprintf("%.0f/s", nullMax.PerSecond), "baseline", "")
	b.row("ingest, 16 clients: exporter (durable)", fmt.Sprintf("%.0f/s = %.2f× null", expMax.PerSecond, ratio), "≥ 0.5×", yes(ratio >= 0.5))
	p99 := exp500.P99 / null500.P99
	b.row("p99 at 500/s: null → exporter", fmt.Sprintf("%.2f ms → %.2f ms = %.2f×", null500.P99, exp500.P99, p99), "≤ 2×", yes(p99 <= 2))
	b.row("exporter CPU per webhook", fmt.Sprintf("%.0f µs", cpuPer), "report", "")
	return nil
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
		b.row(fmt.Sprintf("%d runs: API status=failed p99 / pipeline=X p99", p.n), fmt.Sprintf("%.2f ms / %.2f ms", p.failedP99, p.pipeP99), "", "")
	}
	r1 := last.failedP99 / first.failedP99
	r2 := last.pipeP99 / first.pipeP99
	b.row(fmt.Sprintf("API p99 %d vs %d runs", last.n, first.n), fmt.Sprintf("%.2f× / %.2f×", r1, r2), "≤ 2×", yes(r1 <= 2 && r2 <= 2))
	for _, p := range points {
		b.row(fmt.Sprintf("%d runs: /metrics mean, RSS, startup", p.n), fmt.Sprintf("%.2f ms, %.1f MiB, %.2f s", p.scrapeMean, p.rssMiB, p.startup), "", "")
	}
	sr := last.scrapeMean / first.scrapeMean
	b.row(fmt.Sprintf("/metrics time %d vs %d runs", last.n, first.n), fmt.Sprintf("%.2f×", sr), "≤ 1.2×", yes(sr <= 1.2))
	mr := last.rssMiB / first.rssMiB
	b.row(fmt.Sprintf("RSS %d vs %d runs", last.n, first.n), fmt.Sprintf("%.2f×", mr), "≤ 1.5×", yes(mr <= 1.5))
	b.row(fmt.Sprintf("startup with %d runs", last.n), fmt.Sprintf("%.2f s", last.startup), "< 2 s", yes(last.startup < 2))
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
		res, err := b.load(exp.url+"/webhooks/github", 16, requests, 500, float64(time.Now().UnixNano()/1e3))
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
	b.row(fmt.Sprintf("p99 at 500/s for %ds, 100k seeded runs: no pruning → max-records 20000", seconds),
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

func (b *bench) load(url string, clients, requests int, rate, firstID float64) (*loadResult, error) {
	out, err := exec.Command(filepath.Join(b.bin, "webhook-load"), "--json", "--url="+url, "--secret="+secret,
		"--concurrency="+strconv.Itoa(clients), "--requests="+strconv.Itoa(requests),
		"--rate="+strconv.FormatFloat(rate, 'f', -1, 64), "--first-id="+strconv.FormatFloat(firstID, 'f', 0, 64)).Output()
	if err != nil {
		return nil, fmt.Errorf("webhook-load: %w", err)
	}
	var r loadResult
	return &r, json.Unmarshal(out, &r)
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
	cmd := exec.Command(filepath.Join(b.bin, name), args...)
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
func (p *process) rssMiB() float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
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
