// Package e2e holds the end-to-end tests: they build the real binary, start
// it on free ports with temporary data directories, and talk to it over HTTP
// the way webhook senders, Prometheus and users do.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

var (
	buildOnce   sync.Once
	builtBinary string
	buildErr    error
)

// exporterBinary builds cmd/pipeline_exporter once per test run.
func exporterBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pipeline-exporter-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBinary = filepath.Join(dir, "pipeline_exporter")
		cmd := exec.Command("go", "build", "-o", builtBinary, "../cmd/pipeline_exporter")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBinary
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// exporter is one running pipeline_exporter process.
type exporter struct {
	t       *testing.T
	cmd     *exec.Cmd
	url     string
	dataDir string
	logs    *syncBuffer
	exited  chan struct{}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// writeConfig writes a config file into a temp dir and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pipeline_exporter.yml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startExporter starts the binary on a free port and waits until /-/ready
// answers. The process is killed at the end of the test if still running.
func startExporter(t *testing.T, configPath, dataDir string, args ...string) *exporter {
	t.Helper()
	return startWrapped(t, nil, configPath, dataDir, args...)
}

// startWrapped is startExporter with the binary run by a wrapper command
// (wrapper then the binary and its flags), e.g. prlimit.
func startWrapped(t *testing.T, wrapper []string, configPath, dataDir string, args ...string) *exporter {
	t.Helper()
	addr := freeAddr(t)
	e := run(t, wrapper, nil, addr, append([]string{
		"--config.file=" + configPath,
		"--storage.path=" + dataDir,
		"--web.listen-address=" + addr,
		"--log.level=debug",
	}, args...)...)
	e.dataDir = dataDir
	return waitReady(t, e)
}

// run starts the binary with args (through wrapper, when not nil) and env
// added to this process's environment, listening on addr. The process is
// killed at the end of the test if still running, and its logs shown if
// the test failed.
func run(t *testing.T, wrapper, env []string, addr string, args ...string) *exporter {
	t.Helper()
	all := append(append(slices.Clone(wrapper), exporterBinary(t)), args...)
	e := &exporter{t: t, url: "http://" + addr, logs: &syncBuffer{}, exited: make(chan struct{})}
	e.cmd = exec.Command(all[0], all[1:]...)
	e.cmd.Env = append(os.Environ(), env...)
	e.cmd.Stdout, e.cmd.Stderr = e.logs, e.logs
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() {
		_ = e.cmd.Process.Kill()
		<-e.exited
		if t.Failed() {
			t.Logf("exporter %s logs:\n%s", addr, e.logs.String())
		}
	})
	return e
}

// stop sends sig and waits for the process to exit; it returns the exit code.
func (e *exporter) stop(sig syscall.Signal) int {
	e.t.Helper()
	if err := e.cmd.Process.Signal(sig); err != nil {
		e.t.Fatal(err)
	}
	select {
	case <-e.exited:
	case <-time.After(30 * time.Second):
		e.t.Fatalf("exporter did not exit within 30s of %v", sig)
	}
	return e.cmd.ProcessState.ExitCode()
}

// delivery is one webhook request.
type delivery struct {
	path    string // e.g. /webhooks/github
	headers map[string]string
	body    []byte
}

// githubDelivery signs body as GitHub does.
func githubDelivery(secret, event, id string, body []byte) delivery {
	return delivery{path: "/webhooks/github", body: body, headers: map[string]string{
		"Content-Type":        "application/json",
		"User-Agent":          "GitHub-Hookshot/e2e",
		"X-GitHub-Event":      event,
		"X-GitHub-Delivery":   id,
		"X-Hub-Signature-256": fixtures.SignGitHub(secret, body),
	}}
}

// answer is a decoded JSON answer of the exporter.
type answer struct {
	code int
	body []byte
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("decoding %s: %v", a.body, err)
	}
}

func (e *exporter) post(d delivery) (answer, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.url+d.path, bytes.NewReader(d.body))
	if err != nil {
		return answer{}, err
	}
	for k, v := range d.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, body: body}, err
}

func (e *exporter) mustPost(d delivery, wantCode int) answer {
	e.t.Helper()
	a, err := e.post(d)
	if err != nil {
		e.t.Fatal(err)
	}
	if a.code != wantCode {
		e.t.Fatalf("POST %s %s: %d %s, want %d", d.path, d.headers["X-GitHub-Event"], a.code, a.body, wantCode)
	}
	return a
}

// reload asks the exporter to reload its configuration file and fails
// unless it answers wantCode.
func (e *exporter) reload(wantCode int) {
	e.t.Helper()
	resp, err := http.Post(e.url+"/-/reload", "", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != wantCode {
		e.t.Fatalf("POST /-/reload = %d, want %d", resp.StatusCode, wantCode)
	}
}

func (e *exporter) get(path string) answer {
	e.t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return answer{code: resp.StatusCode, body: body}
}

// metric returns the value of the exposition line that starts with series
// (name and labels exactly as exposed, labels in sorted order), or false.
func (e *exporter) metric(series string) (string, bool) {
	e.t.Helper()
	for _, line := range strings.Split(string(e.get("/metrics").body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v, true
		}
	}
	return "", false
}

// runJSON is the part of the run JSON the tests look at.
type runJSON struct {
	ID       int64  `json:"id"`
	Pipeline string `json:"pipeline"`
	Status   string `json:"status"`
	Error    string `json:"error"`
	Trigger  struct {
		Source     string `json:"source"`
		Event      string `json:"event"`
		DeliveryID string `json:"delivery_id"`
	} `json:"trigger"`
	Triggers []json.RawMessage `json:"triggers"`
	GitHub   *struct {
		RunID      int64 `json:"run_id"`
		RunAttempt int   `json:"run_attempt"`
	} `json:"github"`
	Stages []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"stages"`
	DurationSeconds float64 `json:"duration_seconds"`
}

type listAnswer struct {
	Status string `json:"status"`
	Data   struct {
		Runs       []runJSON `json:"runs"`
		NextCursor string    `json:"next_cursor"`
	} `json:"data"`
}

// allRuns pages through /api/pipeline-runs.
func (e *exporter) allRuns(query string) []runJSON {
	e.t.Helper()
	var runs []runJSON
	cursor := ""
	for {
		q := "/api/pipeline-runs?limit=500" + query
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		a := e.get(q)
		// The API caps concurrent reads and says when to come back, as a
		// client that pages through the history would be told.
		for tries := 0; a.code == http.StatusServiceUnavailable && tries < 10; tries++ {
			time.Sleep(time.Second)
			a = e.get(q)
		}
		if a.code != http.StatusOK {
			e.t.Fatalf("GET %s: %d %s", q, a.code, a.body)
		}
		var l listAnswer
		a.decode(e.t, &l)
		runs = append(runs, l.Data.Runs...)
		if l.Data.NextCursor == "" {
			return runs
		}
		cursor = l.Data.NextCursor
	}
}

func stageNames(r runJSON) string {
	var names []string
	for _, s := range r.Stages {
		names = append(names, s.Name+":"+s.Status)
	}
	return strings.Join(names, ",")
}
