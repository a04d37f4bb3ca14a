// Package pgtest starts a real PostgreSQL 15 server for tests, the way the
// stack tests start Prometheus: initdb and pg_ctl from Debian's postgresql
// package, in a temporary directory, on a free 127.0.0.1 port, with password
// authentication. One server serves a whole test binary; every test gets its
// own database.
//
// Without the binaries the tests that need a server are skipped, except in
// CI (CI=true), where they fail: the CI image installs the package.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir holds Debian's PostgreSQL 15 server binaries.
const BinDir = "/usr/lib/postgresql/15/bin"

// osUser is the operating system account the server runs as when the tests
// run as root: initdb and postgres refuse to run as root.
const osUser = "postgres"

// Server is a running PostgreSQL server.
type Server struct {
	dir      string
	port     int
	password string
	pid      int
}

var (
	mu       sync.Mutex
	shared   *Server
	startErr error
)

// Main runs the tests of a package and then stops the server they started,
// if any. Call it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
			code = 1
		}
		shared = nil
	}
	return code
}

// Shared returns the test binary's server, starting it on first use. The
// test is skipped when PostgreSQL is not installed, and fails when it is
// not installed in CI or does not start.
func Shared(t testing.TB) *Server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && startErr == nil {
		shared, startErr = Start()
	}
	if startErr != nil {
		if errors.Is(startErr, errNotInstalled) && os.Getenv("CI") != "true" {
			t.Skip(startErr)
		}
		t.Fatal(startErr)
	}
	return shared
}

// NewDatabase creates a database for the test on the shared server and
// returns its URL (the password included). The database is dropped when
// the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	s := Shared(t)
	name := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Error(err)
		}
	})
	return s.URL(name)
}

var errNotInstalled = errors.New("pgtest: PostgreSQL 15 is not installed (" + BinDir + "); install Debian's postgresql package")

// Start initialises and starts a new server. Stop it with Stop.
func Start() (*Server, error) {
	for _, bin := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(BinDir, bin)); err != nil {
			return nil, errNotInstalled
		}
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{dir: dir, password: randomHex(16)}
	if err := s.start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup(osUser)
		if err != nil {
			return fmt.Errorf("pgtest: running as root needs the %q account: %w", osUser, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(s.dir, uid, gid); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	pwfile := filepath.Join(s.dir, "pwfile")
	if err := s.run("sh", "-c", "umask 077 && echo \"$0\" > \"$1\"", s.password, pwfile); err != nil {
		return err
	}
	data := filepath.Join(s.dir, "data")
	if err := s.run(filepath.Join(BinDir, "initdb"), "-D", data, "-U", "postgres", "-A", "scram-sha-256",
		"--pwfile", pwfile, "-E", "UTF8", "--locale", "C.UTF-8", "--no-sync"); err != nil {
		return err
	}
	// The port is free when we ask; another process may take it before the
	// server binds it, so a failed start is tried again on a new port.
	var err error
	for range 3 {
		s.port, err = freePort()
		if err != nil {
			return err
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=200", s.port, s.dir)
		err = s.run(filepath.Join(BinDir, "pg_ctl"), "start", "-w", "-t", "60", "-D", data,
			"-l", filepath.Join(s.dir, "log"), "-o", opts)
		if err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	pidLine, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	first, _, _ := strings.Cut(string(pidLine), "\n")
	if s.pid, err = strconv.Atoi(strings.TrimSpace(first)); err != nil {
		return fmt.Errorf("pgtest: postmaster.pid: %w", err)
	}
	return nil
}

// run runs a command as the server's owner.
func (s *Server) run(name string, args ...string) error {
	if os.Geteuid() == 0 {
		args = append([]string{"-u", osUser, "--", name}, args...)
		name = "runuser"
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("pgtest: %s: %w\n%s\n%s", name, err, out, log)
	}
	return nil
}

// URL returns the URL of a database on the server, the password included.
func (s *Server) URL(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", s.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Password is the superuser's password, for tests that check it never
// leaks.
func (s *Server) Password() string { return s.password }

func (s *Server) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: %s: %w", sql, err)
	}
	return nil
}

// Stop stops the server by its PID (a fast shutdown, then SIGKILL after
// 10 s) and removes its directory.
func (s *Server) Stop() error {
	err := stopPID(s.pid)
	if rmErr := os.RemoveAll(s.dir); err == nil && rmErr != nil {
		err = fmt.Errorf("pgtest: %w", rmErr)
	}
	return err
}

func stopPID(pid int) error {
	// SIGINT is the postmaster's fast shutdown: sessions are ended and the
	// server stops without waiting for clients.
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("pgtest: stopping PostgreSQL (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("pgtest: PostgreSQL (pid %d) did not stop within 10 s; killed", pid)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
