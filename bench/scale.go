package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

// orgConfig is the config of the organization rows: one pattern pipeline
// that discovers a pipeline per repository bench/repo-N, and no more
// settings than its defaults.
const orgConfig = "webhooks:\n  github: { secret: " + secret + " }\npipelines:\n  - { repository: \"bench/*\", workflow: test.yml }\n"

// The Accept headers Prometheus 2.42 scrapes with: without native
// histograms it prefers OpenMetrics text; with them, protobuf.
const (
	acceptText   = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	acceptNative = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)

// orgDeliveries are, for each of n repositories, the life of one run of
// test.yml with 10 jobs: the published workflow_run and workflow_job
// payloads moved to repository bench/repo-i and to their own ids.
func orgDeliveries(n int) []orgDelivery {
	run := fixtures.MustLoad("github/workflow_run/completed.json")
	requested := fixtures.MustLoad("github/workflow_run/requested.json")
	job := fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	var out []orgDelivery
	for i := range n {
		repo := fmt.Sprintf("bench/repo-%d", i)
		runID := int64(5_000_000 + i)
		// The exporter reads full_name, the peer name and owner.login.
		where := map[string]any{"repository.full_name": repo, "repository.name": fmt.Sprintf("repo-%d", i), "repository.owner.login": "bench"}
		with := func(set map[string]any) map[string]any {
			for k, v := range where {
				set[k] = v
			}
			return set
		}
		id := func(k int) string { return fmt.Sprintf("bench-org-%d-%d", runID, k) }
		out = append(out, orgDelivery{id(0), "workflow_run", fixtures.MustEdit(requested, with(map[string]any{"workflow_run.id": runID}))})
		for j := range 10 {
			out = append(out, orgDelivery{id(j + 1), "workflow_job", fixtures.MustEdit(job, with(map[string]any{
				"workflow_job.run_id": runID, "workflow_job.id": runID*100 + int64(j), "workflow_job.name": fmt.Sprintf("job-%d", j),
			}))})
		}
		out = append(out, orgDelivery{id(11), "workflow_run", fixtures.MustEdit(run, with(map[string]any{"workflow_run.id": runID}))})
	}
	return out
}

// orgDelivery is one webhook delivery of orgDeliveries.
type orgDelivery struct {
	id, event string
	body      []byte
}

// post sends the deliveries, in order per repository and 16 at a time in
// all, signed as GitHub signs (SHA-256, and SHA-1 for the peer), and fails
// on any answer but 2xx.
func post(url string, bodies []orgDelivery) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	next := make(chan orgDelivery)
	for range 16 {
		wg.Go(func() {
			for body := range next {
				if err := postOne(url, body); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i, body := range bodies {
		// A run's requested event first, so that its jobs are not held.
		if body.event == "workflow_run" && i%12 == 0 {
			if err := postOne(url, body); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			continue
		}
		next <- body
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%s: %d of %d deliveries failed, first: %w", url, len(errs), len(bodies), errs[0])
	}
	return nil
}

func postOne(url string, d orgDelivery) error {
	body := d.body
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", d.event)
	req.Header.Set("X-GitHub-Delivery", d.id)
	req.Header.Set("X-Hub-Signature-256", fixtures.SignGitHub(secret, body))
	req.Header.Set("X-Hub-Signature", "sha1="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%d", resp.StatusCode)
	}
	return nil
}

// scrapeCost is what one scrape of /metrics costs in one format.
type scrapeCost struct {
	series, bytes int
	best, mean    float64 // ms
}

// measureScrape GETs url n times with the Accept header a Prometheus
// sends and counts the series that Prometheus makes of the answer: a
// sample line of text each; of protobuf, one per counter, gauge or native
// histogram, and _sum, _count and each bucket of a classic one.
func measureScrape(url, accept string, n int) (scrapeCost, error) {
	var c scrapeCost
	var times []float64
	for range n {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return c, err
		}
		req.Header.Set("Accept", accept)
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return c, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return c, err
		}
		times = append(times, float64(time.Since(t0))/1e6)
		c.bytes = len(body)
		c.series = 0
		if strings.Contains(resp.Header.Get("Content-Type"), "protobuf") {
			dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.NewFormat(expfmt.TypeProtoDelim))
			for {
				var mf dto.MetricFamily
				if err := dec.Decode(&mf); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					return c, err
				}
				for _, m := range mf.GetMetric() {
					h := m.GetHistogram()
					switch {
					case h == nil, h.Schema != nil:
						c.series++
					default:
						c.series += 3 + len(h.GetBucket())
					}
				}
			}
		} else {
			for line := range bytes.Lines(body) {
				if len(bytes.TrimSpace(line)) > 0 && line[0] != '#' {
					c.series++
				}
			}
		}
	}
	slices.Sort(times)
	c.best = times[0]
	for _, t := range times {
		c.mean += t / float64(len(times))
	}
	return c, nil
}

// scale measures, at 10, 100 and 1,000 pipelines of one run of 10 jobs
// each (discovered from one repository pattern, fed by webhooks), what a
// scrape costs in series, bytes and time, in the text a Prometheus without
// native histograms takes and in the protobuf one with them takes; the
// peer gets the same deliveries. At 1,000 it also measures what the
// scrape costs a real Prometheus, when one is on PATH.
func (b *bench) scale() error {
	for _, n := range []int{10, 100, 1000} {
		dir := filepath.Join(b.work, fmt.Sprintf("org-%d", n))
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		exp, err := b.exporterWith(dir, orgConfig)
		if err != nil {
			return err
		}
		bodies := orgDeliveries(n)
		t0 := time.Now()
		if err := post(exp.url+"/webhooks/github", bodies); err != nil {
			exp.stop()
			return err
		}
		fmt.Fprintf(os.Stderr, "org %d: %d deliveries in %v\n", n, len(bodies), time.Since(t0).Round(time.Millisecond))
		text, err := measureScrape(exp.url+"/metrics", acceptText, 20)
		if err != nil {
			exp.stop()
			return err
		}
		native, err := measureScrape(exp.url+"/metrics", acceptNative, 20)
		if err != nil {
			exp.stop()
			return err
		}
		rss, err := exp.rssMiB()
		if err != nil {
			exp.stop()
			return err
		}
		peer := notMeasured
		if b.peer != "" {
			if pc, err := b.peerScrape(bodies); err != nil {
				fmt.Fprintf(os.Stderr, "peer at %d repositories: %v\n", n, err)
			} else {
				peer = fmt.Sprintf("%d series, %.2f MB", pc.series, float64(pc.bytes)/1e6)
				if n == 1000 {
					b.row(fmt.Sprintf("scrape at %d pipelines × 10 jobs: text series", n), fmt.Sprint(text.series), fmt.Sprint(pc.series), "", ratio(float64(text.series), float64(pc.series)), "", "≤ 125,000", yes(text.series <= 125_000))
				}
			}
		}
		target, holds := "", ""
		if n == 1000 {
			target = "≤ 125,000 series, ≤ 10 MB, best ≤ 300 ms; native ≤ 70,000 series"
			holds = yes(text.series <= 125_000 && text.bytes <= 10_000_000 && text.best <= 300 && native.series <= 70_000)
		}
		b.single(fmt.Sprintf("scrape at %d pipelines × 10 jobs: text series, MB, best/mean ms; native series, MB; RSS (peer: %s)", n, peer),
			fmt.Sprintf("%d, %.2f MB, %.0f/%.0f ms; %d, %.2f MB; %.1f MiB", text.series, float64(text.bytes)/1e6, text.best, text.mean,
				native.series, float64(native.bytes)/1e6, rss), target, holds)
		if n == 1000 && b.prometheus != "" {
			for _, nativeOn := range []bool{false, true} {
				mem, series, err := b.prometheusCost(exp.url, nativeOn)
				if err != nil {
					fmt.Fprintf(os.Stderr, "prometheus: %v\n", err)
					continue
				}
				b.single(fmt.Sprintf("Prometheus 2.42 scraping 1,000 pipelines every 10 s, native histograms %v: head series, RSS after 70 s", map[bool]string{true: "on", false: "off"}[nativeOn]),
					fmt.Sprintf("%.0f series, %.0f MiB", series, mem), "", "")
			}
		}
		exp.stop()
	}
	return nil
}

// peerScrape feeds the deliveries to a new peer exporter and measures its
// text scrape.
func (b *bench) peerScrape(bodies []orgDelivery) (scrapeCost, error) {
	ingressAddr, metricsAddr := freeAddr(), freeAddr()
	peer, err := b.startPath(b.peer, "peer-org", "--gh.github-webhook-token="+secret,
		"--web.listen-address="+metricsAddr, "--web.listen-address-ingress="+ingressAddr)
	if err != nil {
		return scrapeCost{}, err
	}
	defer peer.stop()
	if err := waitTCP(ingressAddr); err != nil {
		return scrapeCost{}, err
	}
	if err := post("http://"+ingressAddr+"/gh_event", bodies); err != nil {
		return scrapeCost{}, err
	}
	return measureScrape("http://"+metricsAddr+"/metrics", acceptText, 5)
}

// prometheusCost starts the real Prometheus scraping url every 10 s, with
// or without native histograms, and returns its resident memory (MiB) and
// head series after 70 s.
func (b *bench) prometheusCost(url string, native bool) (rssMiB, series float64, err error) {
	dir, err := os.MkdirTemp(b.work, "prometheus-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	target := strings.TrimPrefix(url, "http://")
	cfg := fmt.Sprintf("global: { scrape_interval: 10s, scrape_timeout: 10s }\nscrape_configs:\n  - job_name: pipeline_exporter\n    static_configs: [{ targets: [%q] }]\n", target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return 0, 0, err
	}
	addr := freeAddr()
	args := []string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr}
	if native {
		args = append(args, "--enable-feature=native-histograms")
	}
	p, err := b.startPath(b.prometheus, "prometheus", args...)
	if err != nil {
		return 0, 0, err
	}
	defer p.stop()
	time.Sleep(70 * time.Second)
	if rssMiB, err = p.rssMiB(); err != nil {
		return 0, 0, err
	}
	series, err = gauge("http://"+addr+"/metrics", "prometheus_tsdb_head_series")
	return rssMiB, series, err
}

// prometheusOnPath is the prometheus binary, or "" when there is none.
func prometheusOnPath() string {
	p, err := exec.LookPath("prometheus")
	if err != nil {
		return ""
	}
	return p
}

// orgHistory measures the exporter's memory at 1,000 discovered pipelines
// with n stored runs (seeded once, kept in the work directory), after 20
// scrapes.
func (b *bench) orgHistory(n int) error {
	dir := filepath.Join(b.work, fmt.Sprintf("org-history-%d", n))
	if _, err := os.Stat(dir); err != nil {
		t0 := time.Now()
		if err := seedOrg(dir, n, 1000); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "seeded %d runs of 1,000 pipelines in %v\n", n, time.Since(t0).Round(time.Millisecond))
	}
	exp, err := b.exporterWith(dir, orgConfig)
	if err != nil {
		return err
	}
	defer exp.stop()
	if fi, err := os.Stat(filepath.Join(dir, "pipeline_exporter.db")); err == nil && fi.Size() > 64<<20 {
		if err := b.waitForLog("Checked the store", 3*time.Minute); err != nil {
			return err
		}
	}
	text, err := measureScrape(exp.url+"/metrics", acceptText, 20)
	if err != nil {
		return err
	}
	rss, err := exp.rssMiB()
	if err != nil {
		return err
	}
	hwm, err := exp.hwmMiB()
	if err != nil {
		return err
	}
	b.single(fmt.Sprintf("1,000 pipelines, %d stored runs: RSS after 20 scrapes, peak; scrape mean", n),
		fmt.Sprintf("%.1f MiB, %.1f MiB; %.0f ms (%d series)", rss, hwm, text.mean, text.series), "≤ 64 MiB", yes(hwm <= 64))
	return nil
}
