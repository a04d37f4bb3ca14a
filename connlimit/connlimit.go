// Package connlimit bounds the connections the exporter's HTTP servers keep
// open below the process's file limit, closing idle and silent ones first
// so that a client that talks (a webhook sender) is still served.
package connlimit

import (
	"container/list"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// Connection bounds. Every connection costs a file descriptor; a process
// that runs out of them cannot accept a webhook, open its database or reach
// GitHub. 20,000 idle keep-alive connections once did exactly that.
const (
	// maxConns bounds the connections of all listeners whatever the file
	// limit: the exporter serves a few senders, Prometheus and some
	// browsers, and each idle connection holds tens of KiB of buffers.
	maxConns = 8192
	// minReservedFiles is kept for everything that is not an incoming
	// connection (the store's files, outgoing HTTP, the listeners).
	minReservedFiles = 64
)

// connLimiter bounds the connections the exporter keeps open below its
// file limit. At the bound, a new connection closes the oldest idle
// keep-alive connection, else the oldest that has not sent a whole request
// yet: a client that says nothing, or too little to be served, makes room
// for one that talks, such as a webhook sender. Connections being served
// are never closed; when all are, the new one is.
//
// It sees connections through http.Server.ConnState, after the TLS
// wrapping exporter-toolkit may add, so the toolkit keeps creating the
// listeners (systemd sockets, vsock, TLS and basic auth from the web
// config) and one limiter can watch several servers.
type connLimiter struct {
	max    int
	logger *slog.Logger

	mu   sync.Mutex
	open map[net.Conn]*list.Element // the element in idle or fresh; nil while served
	// idle and fresh hold connections oldest first: idle between
	// keep-alive requests, fresh since accepted until a request is read.
	idle, fresh list.List
	// pressed is set while connections are being closed to make room, so
	// that is logged once, not per connection.
	pressed bool
}

// processConns is the limiter of every server of the process: they share
// one file limit. ConnState makes it on first use.
var processConns struct {
	once sync.Once
	l    *connLimiter
}

// ConnState returns the http.Server.ConnState hook of the process's one
// limiter, made on first use from the file limit; logger hears when it
// starts closing connections and when the pressure is over.
func ConnState(logger *slog.Logger) func(net.Conn, http.ConnState) {
	return sharedConnLimiter(logger).connState
}

func sharedConnLimiter(logger *slog.Logger) *connLimiter {
	processConns.once.Do(func() {
		nofile := fileLimit()
		processConns.l = newConnLimiter(connBudget(nofile), logger)
		logger.Info("Limiting open connections", "limit", processConns.l.max, "file_limit", nofile)
	})
	return processConns.l
}

// fileLimit returns the process's soft limit of open files (which Go
// raises to the hard limit at start), or 0 when unknown.
func fileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// connBudget is how many connections a file limit of nofile allows: an
// eighth of it, and at least minReservedFiles, stay for other files.
func connBudget(nofile uint64) int {
	if nofile == 0 || nofile > maxConns*2 {
		return maxConns
	}
	reserve := max(nofile/8, minReservedFiles)
	if nofile <= reserve {
		return 1
	}
	return int(min(nofile-reserve, maxConns))
}

func newConnLimiter(maxOpen int, logger *slog.Logger) *connLimiter {
	return &connLimiter{max: maxOpen, logger: logger, open: map[net.Conn]*list.Element{}}
}

// connState is the http.Server.ConnState hook.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateNew:
		l.open[c] = l.fresh.PushBack(c)
		if len(l.open) > l.max {
			l.makeRoom(c)
		} else if l.pressed && len(l.open) < l.max*9/10 {
			l.pressed = false
			l.logger.Info("Open connections back under their limit", "open", len(l.open), "limit", l.max)
		}
	case http.StateActive:
		l.remove(c)
		l.open[c] = nil
	case http.StateIdle:
		l.remove(c)
		l.open[c] = l.idle.PushBack(c)
	case http.StateHijacked, http.StateClosed:
		l.remove(c)
	}
}

// makeRoom closes one connection so that newest can stay: the oldest idle,
// else the oldest fresh, else newest itself.
func (l *connLimiter) makeRoom(newest net.Conn) {
	victim := newest
	if e := l.idle.Front(); e != nil {
		victim = e.Value.(net.Conn)
	} else if e := l.fresh.Front(); e != nil && e.Value.(net.Conn) != newest {
		victim = e.Value.(net.Conn)
	}
	if !l.pressed {
		l.pressed = true
		l.logger.Warn("Too many open connections: closing idle ones to make room for new ones", "limit", l.max)
	}
	l.remove(victim)
	// The server notices on its next read or write and reports the
	// connection closed.
	_ = victim.Close()
}

// remove forgets c; calling it for an unknown connection is harmless.
func (l *connLimiter) remove(c net.Conn) {
	if e := l.open[c]; e != nil {
		// list.Remove leaves a list alone unless e is in it.
		l.idle.Remove(e)
		l.fresh.Remove(e)
	}
	delete(l.open, c)
}
