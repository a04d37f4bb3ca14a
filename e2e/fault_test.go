package e2e

import (
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountSmallDisk mounts a small tmpfs at dir so the test can fill it. It
// needs root (CI runs as root); elsewhere the test is skipped.
func mountSmallDisk(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a small tmpfs here (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
}

// fill writes a file until the disk is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

func TestDiskFullAnswers503AndRecovers(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	mountSmallDisk(t, data)
	e := startExporter(t, writeConfig(t, coreConfig), data)

	runs := exampleRun(t, 5001, "success")
	e.mustPost(runs[0], http.StatusAccepted)

	filler := filepath.Join(data, "filler")
	fill(t, filler)
	// Deliveries until the WAL has no room left: none may get a 2xx
	// that is not on disk, and the first that cannot be stored gets 503.
	var refused delivery
	for i := int64(0); i < 200; i++ {
		d := exampleRun(t, 6000+i*10, "success")[0]
		a, err := e.post(d)
		if err != nil {
			t.Fatal(err)
		}
		if a.code == http.StatusServiceUnavailable {
			refused = d
			if !strings.Contains(string(a.body), `"status":"error"`) {
				t.Fatalf("503 answer %s is not a JSON error", a.body)
			}
			break
		}
		if a.code != http.StatusAccepted {
			t.Fatalf("with a full disk: %d %s", a.code, a.body)
		}
	}
	if refused.body == nil {
		t.Fatal("the exporter never answered 503 on a full disk")
	}
	if h := e.get("/health"); h.code != http.StatusServiceUnavailable || !strings.Contains(string(h.body), "store") {
		t.Fatalf("/health on a full disk = %d %s", h.code, h.body)
	}
	if got, _ := e.metric(`pipeline_exporter_webhook_requests_total{outcome="error",source="github"}`); got == "0" || got == "" {
		t.Errorf(`webhook_requests_total{outcome="error"} = %q, want > 0`, got)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The sender retries the refused delivery: now it is stored.
	e.mustPost(refused, http.StatusAccepted)
	if h := e.get("/health"); h.code != http.StatusOK {
		t.Fatalf("/health after the disk recovered = %d %s", h.code, h.body)
	}
}

func TestCorruptDatabaseIsRefusedAtStart(t *testing.T) {
	data := t.TempDir()
	db := filepath.Join(data, "pipeline_exporter.db")
	if err := os.WriteFile(db, []byte(strings.Repeat("not a database ", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exporterBinary(t), "--config.file="+writeConfig(t, coreConfig), "--storage.path="+data, "--web.listen-address="+freeAddr(t))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), db) {
		t.Fatalf("the error does not name %s:\n%s", db, out)
	}
}

func TestIdleConnectionsDoNotStarveRequests(t *testing.T) {
	e := startExporter(t, writeConfig(t, coreConfig), filepath.Join(t.TempDir(), "data"))
	addr := strings.TrimPrefix(e.url, "http://")
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// A slow client: half a request line, then nothing.
		if _, err := c.Write([]byte("POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for i, d := range exampleRun(t, 7001, "success") {
		req, _ := http.NewRequest(http.MethodPost, e.url+d.path, strings.NewReader(string(d.body)))
		for k, v := range d.headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d with 300 idle connections open: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
}
