package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
)

// TestMain stops the PostgreSQL server the replica tests started, if any.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// startReplica starts the binary on the PostgreSQL database at dbURL,
// listening on addr (so that a restarted replica keeps its address, as a
// pod keeps its Service), and waits until /-/ready answers 200.
func startReplica(t *testing.T, configPath, dbURL, addr string) *exporter {
	t.Helper()
	return waitReady(t, launchReplica(t, configPath, dbURL, addr))
}

// launchReplica starts the binary on PostgreSQL without waiting for it.
// The URL goes through the environment, as a Kubernetes Secret would pass
// it, so that it is not in the process list.
func launchReplica(t *testing.T, configPath, dbURL, addr string) *exporter {
	t.Helper()
	return launch(t, configPath, addr, []string{"PIPELINE_EXPORTER_STORAGE_URL=" + dbURL})
}

// launch starts the binary at info level (the replica tests send
// thousands of deliveries) with the given environment and flags.
func launch(t *testing.T, configPath, addr string, env []string, args ...string) *exporter {
	t.Helper()
	return run(t, nil, env, addr, append([]string{
		"--config.file=" + configPath,
		"--web.listen-address=" + addr,
		"--web.shutdown-timeout=10s",
		"--storage.retention=0",
		"--log.level=info",
	}, args...)...)
}

// waitReady waits until /-/ready answers 200, or 401 (the listener is up
// behind exporter-toolkit's basic auth).
func waitReady(t *testing.T, e *exporter) *exporter {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-e.exited:
			t.Fatalf("exporter exited at start: %v\n%s", e.cmd.ProcessState, e.logs.String())
		default:
		}
		if code := readyCode(e); code == http.StatusOK || code == http.StatusUnauthorized {
			return e
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("exporter not ready after 20s:\n%s", e.logs.String())
	return nil
}

// readyCode is the status of GET /-/ready, or 0 when nothing answers.
func readyCode(e *exporter) int {
	resp, err := http.Get(e.url + "/-/ready")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// leads reports what the replica's /api/status says of its leadership;
// false also when it does not answer.
func leads(e *exporter) bool {
	lead, err := leaderStatus(e)
	return err == nil && lead
}

// leaderStatus reads whether the replica says it leads, or why its status
// could not be read.
func leaderStatus(e *exporter) (bool, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(e.url + "/api/status")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var s struct {
		Data struct {
			Leader bool `json:"leader"`
		} `json:"data"`
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s: %s", resp.Status, body)
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return false, err
	}
	return s.Data.Leader, nil
}

// dbConn connects the test itself to the replicas' database.
func dbConn(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// logRow is one delivery of the shared log as the test reads it.
type logRow struct {
	count   int
	applied bool
}

// logRows reads the shared log's github deliveries by delivery id.
func logRows(t *testing.T, conn *pgx.Conn) map[string]logRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT delivery_id, count(*), bool_and(applied)
		FROM log WHERE source = 'github' GROUP BY delivery_id`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]logRow{}
	for rows.Next() {
		var (
			id string
			r  logRow
		)
		if err := rows.Scan(&id, &r.count, &r.applied); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// tcpProxy stands between the replicas and PostgreSQL so that a test can
// take the database away (every connection cut, new ones refused) and give
// it back on the same address, without restarting the shared server.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newTCPProxy returns a proxy to target on a free loopback address; it is
// down until up is called.
func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, addr: freeAddr(t), target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(p.down)
	return p
}

// up listens and forwards every connection to the target.
func (p *tcpProxy) up() {
	p.t.Helper()
	var (
		ln  net.Listener
		err error
	)
	// The address was just given up by down; binding it again may take a
	// moment.
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *tcpProxy) forward(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, s) {
		c.Close()
		s.Close()
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(s, c)
	go pipe(c, s)
	<-done
	c.Close()
	s.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

// track records a forwarded pair, unless the proxy went down meanwhile.
func (p *tcpProxy) track(c, s net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	return true
}

// down closes the listener and cuts every connection, as a database that
// stopped would.
func (p *tcpProxy) down() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	p.wg.Wait()
}

// withHost is dbURL with its host:port replaced by addr.
func withHost(t *testing.T, dbURL, addr string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// hostOf is the host:port of dbURL.
func hostOf(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
