package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

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
func (b *bench) exporter(dir string, args ...string) (*process, error) {
	cfg := "webhooks:\n  github: { secret: " + secret + " }\npipelines:\n  - { name: site, workflow: test.yml }\n"
	for i := 0; i < seedPipelines; i++ {
		cfg += fmt.Sprintf("  - { name: site-%d, workflow: deploy-%d.yml }\n", i, i)
	}
	return b.exporterWith(dir, cfg, args...)
}

// exporterWith starts pipeline_exporter on dir with the config cfg; it
// returns once /-/ready answers.
func (b *bench) exporterWith(dir, cfg string, args ...string) (*process, error) {
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
func (p *process) cpuSeconds() (float64, error) {
	path := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("%s: %d fields", path, len(fields))
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return (utime + stime) / 100, nil // USER_HZ
}

// rssMiB is the process's resident set size from /proc.
func (p *process) rssMiB() (float64, error) { return p.status("VmRSS:") }

// hwmMiB is the process's peak resident set size since it started or
// since resetHWM.
func (p *process) hwmMiB() (float64, error) { return p.status("VmHWM:") }

// resetHWM sets the peak resident set size to the current one (Linux's
// clear_refs "5"), so that the next hwmMiB is the peak of what follows.
// Without it the peak would include the warm-up: an error ends the bench.
func (p *process) resetHWM() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0)
}

// status reads a size in kB from /proc/PID/status, in MiB.
func (p *process) status(field string) (float64, error) {
	path := fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s %w", path, field, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, field)
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
