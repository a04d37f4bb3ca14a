package verify

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// fakeClock is the checker's clock: Sleep advances it instead of waiting,
// and handlers advance it to simulate a response time.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2020, 10, 5, 16, 33, 49, 0, time.UTC)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func (f *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sleeps = append(f.sleeps, d)
	f.now = f.now.Add(d)
	return nil
}

func TestCheck(t *testing.T) {
	s := time.Second
	tests := []struct {
		name string
		// handler answers the n-th request (from 1).
		handler func(clock *fakeClock, n int, w http.ResponseWriter, r *http.Request)
		target  Target
		cancel  bool

		wantSuccess  bool
		wantAttempts int
		wantRequests int
		// wantErr has %s for the server URL.
		wantErr    string
		wantSleeps []time.Duration
		// wantResponse is the last answered attempt's response time.
		wantResponse float64
	}{
		{
			name: "success",
			handler: func(clock *fakeClock, _ int, w http.ResponseWriter, _ *http.Request) {
				clock.Advance(250 * time.Millisecond)
				fmt.Fprint(w, "<h1>Welcome</h1>")
			},
			target:       Target{BodyContains: "Welcome", BodyRegexp: regexp.MustCompile(`<h1>\w+</h1>`), Deadline: time.Minute},
			wantSuccess:  true,
			wantAttempts: 1,
			wantRequests: 1,
			wantResponse: 0.25,
		},
		{
			name: "wrong status then success",
			handler: func(clock *fakeClock, n int, w http.ResponseWriter, _ *http.Request) {
				clock.Advance(100 * time.Millisecond)
				if n <= 2 {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			},
			target:       Target{Deadline: time.Minute},
			wantSuccess:  true,
			wantAttempts: 3,
			wantRequests: 3,
			wantSleeps:   []time.Duration{s, 2 * s},
			wantResponse: 0.1,
		},
		{
			name: "wrong status until the deadline",
			handler: func(_ *fakeClock, _ int, w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
			},
			// Attempts at 0, 1s, 3s and 7s; the next would start at 15s.
			target:       Target{Deadline: 10 * time.Second},
			wantAttempts: 4,
			wantRequests: 4,
			wantErr:      "GET %s: status 503, want 200",
			wantSleeps:   []time.Duration{s, 2 * s, 4 * s},
			wantResponse: 0,
		},
		{
			name: "backoff is capped at 30s",
			handler: func(_ *fakeClock, _ int, w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusBadGateway)
			},
			target:       Target{Deadline: 2 * time.Minute},
			wantAttempts: 8,
			wantRequests: 8,
			wantErr:      "GET %s: status 502, want 200",
			wantSleeps:   []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s},
			wantResponse: 0,
		},
		{
			name: "expected non-200 status",
			handler: func(_ *fakeClock, _ int, w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			},
			target:       Target{ExpectStatus: http.StatusNoContent},
			wantSuccess:  true,
			wantAttempts: 1,
			wantRequests: 1,
			wantResponse: 0,
		},
		{
			name: "200 when another status is expected",
			handler: func(_ *fakeClock, _ int, _ http.ResponseWriter, _ *http.Request) {
			},
			target:       Target{ExpectStatus: http.StatusNoContent},
			wantAttempts: 1,
			wantRequests: 1,
			wantErr:      "GET %s: status 200, want 204",
			wantResponse: 0,
		},
		{
			name: "body_contains mismatch",
			handler: func(_ *fakeClock, _ int, w http.ResponseWriter, _ *http.Request) {
				fmt.Fprint(w, "<h1>Maintenance</h1>")
			},
			target:       Target{BodyContains: "Welcome"},
			wantAttempts: 1,
			wantRequests: 1,
			wantErr:      `body does not contain "Welcome"`,
			wantResponse: 0,
		},
		{
			name: "body_regexp mismatch",
			handler: func(_ *fakeClock, _ int, w http.ResponseWriter, _ *http.Request) {
				fmt.Fprint(w, "<h1>Welcome</h1>")
			},
			target:       Target{BodyContains: "Welcome", BodyRegexp: regexp.MustCompile(`v\d+\.\d+`)},
			wantAttempts: 1,
			wantRequests: 1,
			wantErr:      `body does not match "v\\d+\\.\\d+"`,
			wantResponse: 0,
		},
		{
			name: "slow server beyond the timeout",
			handler: func(_ *fakeClock, _ int, _ http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			// Attempts at 0, 1s and 3s; the next would start at 7s.
			target:       Target{Timeout: 20 * time.Millisecond, Deadline: 3 * time.Second},
			wantAttempts: 3,
			wantRequests: 3,
			wantErr:      "timeout after 20ms",
			wantSleeps:   []time.Duration{s, 2 * s},
		},
		{
			name: "redirect loop stops after 5 redirects",
			handler: func(_ *fakeClock, _ int, w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/", http.StatusFound)
			},
			target:       Target{},
			wantAttempts: 1,
			wantRequests: 6,
			wantErr:      "GET %s: stopped after 5 redirects",
		},
		{
			name: "context already cancelled",
			handler: func(_ *fakeClock, _ int, _ http.ResponseWriter, _ *http.Request) {
			},
			target:       Target{Deadline: time.Minute},
			cancel:       true,
			wantAttempts: 1,
			wantErr:      "check interrupted (context canceled); last error: GET %s: context canceled",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			var requests atomic.Int32
			var userAgent atomic.Value
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				userAgent.Store(r.UserAgent())
				tc.handler(clock, int(requests.Add(1)), w, r)
			}))
			defer srv.Close()

			c := &Checker{
				Client:  srv.Client(),
				Now:     clock.Now,
				Sleep:   clock.Sleep,
				Version: "1.2.3",
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			target := tc.target
			target.URL = srv.URL + "/"
			start := clock.Now()

			got := c.Check(ctx, &pipeline.Run{ID: 42}, target, nil)

			if got.RunID != 42 || got.Success != tc.wantSuccess || got.Attempts != tc.wantAttempts {
				t.Errorf("got run %d success %v attempts %d, want 42 %v %d", got.RunID, got.Success, got.Attempts, tc.wantSuccess, tc.wantAttempts)
			}
			wantErr := tc.wantErr
			if strings.Contains(wantErr, "%s") {
				wantErr = fmt.Sprintf(wantErr, target.URL)
			}
			if got.Error != wantErr {
				t.Errorf("error %q, want %q", got.Error, wantErr)
			}
			if n := int(requests.Load()); n != tc.wantRequests {
				t.Errorf("server saw %d requests, want %d", n, tc.wantRequests)
			}
			if !slices.Equal(clock.sleeps, tc.wantSleeps) {
				t.Errorf("slept %v, want %v", clock.sleeps, tc.wantSleeps)
			}
			if !got.StartedAt.Equal(start) || !got.FinishedAt.Equal(clock.Now()) {
				t.Errorf("started %v finished %v, want %v and %v", got.StartedAt, got.FinishedAt, start, clock.Now())
			}
			if got.ResponseSeconds != tc.wantResponse {
				t.Errorf("response seconds %v, want the last answered attempt's %v", got.ResponseSeconds, tc.wantResponse)
			}
			if ua, _ := userAgent.Load().(string); tc.wantRequests > 0 && ua != "pipeline_exporter/1.2.3" {
				t.Errorf("User-Agent %q, want pipeline_exporter/1.2.3", ua)
			}
		})
	}
}

// countingTransport counts the body bytes the client consumed.
type countingTransport struct {
	next http.RoundTripper
	read atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &t.read}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func TestCheckReadsAtMostOneMiB(t *testing.T) {
	// The server streams without end, with the wanted text just past the
	// first MiB: an unbounded read would never return.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		filler := []byte(strings.Repeat("x", 64<<10))
		for i := 0; i < 16; i++ {
			if _, err := w.Write(filler); err != nil {
				return
			}
		}
		if _, err := io.WriteString(w, "Welcome"); err != nil {
			return
		}
		for {
			if _, err := w.Write(filler); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	transport := &countingTransport{next: srv.Client().Transport}
	clock := newFakeClock()
	c := &Checker{Client: &http.Client{Transport: transport}, Now: clock.Now, Sleep: clock.Sleep}

	got := c.Check(context.Background(), &pipeline.Run{ID: 7}, Target{URL: srv.URL, BodyContains: "Welcome"}, nil)

	if got.Success || got.Error != `body does not contain "Welcome"` {
		t.Errorf("got success %v error %q, want a failed body match", got.Success, got.Error)
	}
	if n := transport.read.Load(); n != maxBodyBytes {
		t.Errorf("read %d body bytes, want exactly %d", n, maxBodyBytes)
	}
}
