package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// chromium is a headless Debian chromium driven over the DevTools protocol
// on a pipe (--remote-debugging-pipe: requests on fd 3, answers on fd 4,
// each message ended by a NUL byte), so the test needs no WebSocket client
// and no port.
type chromium struct {
	t  *testing.T
	in io.WriteCloser

	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpAnswer
	gone    chan struct{}
}

type cdpAnswer struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startChromium starts the browser. CI installs chromium, so there a missing
// one fails the test; elsewhere it skips.
func startChromium(t *testing.T) *chromium {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium not found in PATH: %v", err)
		}
		t.Skipf("chromium not found in PATH: %v", err)
	}
	toChrome, chromeIn, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	chromeOut, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(path,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--window-size=1280,900",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toChrome.Close()
	fromChrome.Close()
	c := &chromium{t: t, in: chromeIn, pending: map[int]chan cdpAnswer{}, gone: make(chan struct{})}
	go c.read(chromeOut)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		chromeIn.Close()
		_ = cmd.Process.Kill()
		<-exited
		chromeOut.Close()
		if t.Failed() {
			t.Logf("chromium logs:\n%s", logs.String())
		}
	})
	return c
}

func (c *chromium) read(r io.Reader) {
	defer close(c.gone)
	br := bufio.NewReader(r)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var a cdpAnswer
		if json.Unmarshal(msg[:len(msg)-1], &a) != nil || a.ID == 0 {
			continue // an event: the tests poll instead
		}
		c.mu.Lock()
		ch := c.pending[a.ID]
		delete(c.pending, a.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- a
		}
	}
}

// call sends one command (to the page when session is set) and decodes its
// result into out.
func (c *chromium) call(session, method string, params, out any) {
	c.t.Helper()
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan cdpAnswer, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b, err := json.Marshal(msg)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.in.Write(append(b, 0)); err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	select {
	case a := <-ch:
		if a.Error != nil {
			c.t.Fatalf("%s: %s", method, a.Error.Message)
		}
		if out != nil {
			if err := json.Unmarshal(a.Result, out); err != nil {
				c.t.Fatalf("%s: %v in %s", method, err, a.Result)
			}
		}
	case <-c.gone:
		c.t.Fatalf("%s: chromium went away", method)
	case <-time.After(20 * time.Second):
		c.t.Fatalf("%s: no answer in 20s", method)
	}
}

// tab is one page of the browser.
type tab struct {
	c       *chromium
	session string
}

func (c *chromium) newTab() *tab {
	c.t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	c.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	c.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	return &tab{c: c, session: attached.SessionID}
}

// open loads url and waits until the document is complete.
func (p *tab) open(url string) {
	p.c.t.Helper()
	p.c.call(p.session, "Page.navigate", map[string]any{"url": url}, nil)
	p.waitJS(`document.readyState === "complete" && location.href === `+jsString(url), "page "+url+" loaded")
}

// eval returns the value of a JavaScript expression in the page.
func (p *tab) eval(expr string, out any) {
	p.c.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	p.c.call(p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res)
	if res.ExceptionDetails != nil {
		p.c.t.Fatalf("evaluating %s: %s", expr, res.ExceptionDetails.Text)
	}
	if err := json.Unmarshal(res.Result.Value, out); err != nil {
		p.c.t.Fatalf("evaluating %s: %v in %s", expr, err, res.Result.Value)
	}
}

func (p *tab) text(expr string) string {
	p.c.t.Helper()
	var s string
	p.eval(expr, &s)
	return s
}

// waitJS polls a boolean expression until it holds.
func (p *tab) waitJS(expr, what string) {
	p.c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var ok bool
		p.eval("Boolean("+expr+")", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			p.c.t.Fatalf("waited 15s for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// screenshot saves the whole page as a PNG in the test's artifact directory
// (kept with go test -artifacts) and returns its path.
func (p *tab) screenshot(name string) string {
	p.c.t.Helper()
	var shot struct {
		Data string `json:"data"`
	}
	p.c.call(p.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		p.c.t.Fatal(err)
	}
	path := fmt.Sprintf("%s/%s.png", p.c.t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.c.t.Fatal(err)
	}
	return path
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
