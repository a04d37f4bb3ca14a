package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFileName is the lock file inside the storage directory.
const LockFileName = "pipeline_exporter.lock"

// dirLock is an exclusive flock on the storage directory's lock file. The
// kernel releases it when the process dies, so a kill -9 never leaves a
// stale lock behind. Two exporters on one directory would reuse run ids
// and lose acknowledged deliveries.
type dirLock struct {
	f *os.File
}

// lockDir takes the lock on dir or says which process holds it.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = "process " + strconv.Itoa(pid)
			}
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: %s is in use by %s (lock file %s); run one exporter per storage directory", dir, holder, path)
		}
		return nil, fmt.Errorf("store: locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

func (l *dirLock) release() {
	if l != nil && l.f != nil {
		// Closing the file releases the flock.
		l.f.Close()
		l.f = nil
	}
}
