package connlimit

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
)

func TestConnBudget(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{
		{0, maxConns},       // unknown
		{1 << 20, maxConns}, // a container's usual limit
		{1024, 896},
		{4096, 3584},
		{256, 192},
		{64, 1},
	} {
		if got := connBudget(tc.nofile); got != tc.want {
			t.Errorf("connBudget(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
	}
}

// closed reports whether c was closed on our side; the other side of c
// must be read.
func closed(c net.Conn) bool {
	_, err := c.Write([]byte("x"))
	return errors.Is(err, io.ErrClosedPipe)
}

func TestConnLimiterClosesIdleThenSilentNeverServed(t *testing.T) {
	type conn struct {
		state      http.ConnState
		wantClosed bool
	}
	for _, tc := range []struct {
		name  string
		conns []conn // oldest first, then one new connection
		// newClosed is whether the new connection itself is closed.
		newClosed bool
	}{
		{"under the limit", []conn{{http.StateIdle, false}, {http.StateNew, false}}, false},
		{"oldest idle first", []conn{{http.StateActive, false}, {http.StateNew, false}, {http.StateIdle, true}, {http.StateIdle, false}}, false},
		{"then oldest silent", []conn{{http.StateNew, true}, {http.StateActive, false}, {http.StateNew, false}, {http.StateActive, false}}, false},
		{"never one being served", []conn{{http.StateActive, false}, {http.StateActive, false}, {http.StateActive, false}, {http.StateActive, false}}, true},
		{"closed ones make room", []conn{{http.StateClosed, false}, {http.StateHijacked, false}, {http.StateNew, false}, {http.StateNew, false}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newConnLimiter(4, slog.New(slog.DiscardHandler))
			var ours []net.Conn
			for _, c := range tc.conns {
				a, b := net.Pipe()
				defer a.Close()
				defer b.Close()
				go func() { _, _ = io.Copy(io.Discard, b) }()
				l.connState(a, http.StateNew)
				if c.state != http.StateNew {
					l.connState(a, c.state)
				}
				ours = append(ours, a)
			}
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() { _, _ = io.Copy(io.Discard, b) }()
			l.connState(a, http.StateNew)
			for i, c := range tc.conns {
				if got := closed(ours[i]); got != c.wantClosed {
					t.Errorf("connection %d (%v): closed %v, want %v", i, c.state, got, c.wantClosed)
				}
			}
			if got := closed(a); got != tc.newClosed {
				t.Errorf("the new connection: closed %v, want %v", got, tc.newClosed)
			}
		})
	}
}
