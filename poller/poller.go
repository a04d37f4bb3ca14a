// Package poller polls GitHub Actions and Cloudflare Pages and feeds what it
// finds to the Tracker as the same pipeline.Events the webhooks produce.
// Webhooks are not enough on their own: GitHub never retries a failed
// delivery, and Cloudflare Pages sends no deployment payloads at all.
//
// Polling is cheap by construction: every poll asks the same URLs, with
// If-None-Match, so an unchanged repository answers 304 and costs no GitHub
// rate-limit points; jobs are fetched only for runs that are new or changed;
// only new or changed runs and deployments become events.
package poller

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// maxBackoff caps the wait after consecutive failures.
const maxBackoff = 5 * time.Minute

// Sink receives polled events. instance.Instance implements it: it hands
// them to the Applier of the current leadership term, and refuses them
// (ErrUnavailable) between terms.
type Sink interface {
	Apply(ctx context.Context, events []pipeline.Event) error
}

// Status is a poller's health, as shown by /api/status.
type Status struct {
	Source      string     `json:"source"` // "github" or "cloudflare"
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	NextPoll    *time.Time `json:"next_poll,omitempty"`
	RateLimit   *RateLimit `json:"rate_limit,omitempty"`
}

// schedule is the part both pollers share: it records the outcome of each
// poll for Status and the last-success metric, and decides how long to wait
// before the next one.
type schedule struct {
	source   string
	interval time.Duration
	now      func() time.Time
	sleep    func(context.Context, time.Duration) error
	// lastSuccess, when not nil, is set to the time of each successful pass.
	lastSuccess prometheus.Gauge
	logger      *slog.Logger

	mu            sync.Mutex
	failures      int
	lastSuccessAt time.Time
	lastError     string
	lastErrorAt   time.Time
	nextPoll      time.Time
}

// record notes the outcome of one poll and returns the wait before the next.
func (s *schedule) record(err error) time.Duration {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.failures = 0
		s.lastSuccessAt = now
		if s.lastSuccess != nil {
			s.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
		}
		return s.interval
	}
	s.lastError = err.Error()
	s.lastErrorAt = now
	var rl *rateLimitedError
	if errors.As(err, &rl) && rl.until.After(now) {
		s.logger.Info("Rate limited, pausing polls until the reset", "source", s.source, "until", rl.until)
		return rl.until.Sub(now)
	}
	s.failures++
	d := backoff(s.interval, s.failures)
	s.logger.Warn("Poll failed, backing off", "source", s.source, "err", err, "failures", s.failures, "retry_in", d)
	return d
}

// backoff is the wait after the n-th consecutive failure: a random duration
// in [b/2, b] with b = interval·2^n capped at max(5m, 2·interval). Failure 1
// so waits between one and two intervals, and no wait exceeds the cap; the
// jitter keeps several exporters from hammering a recovering API in step.
func backoff(interval time.Duration, failures int) time.Duration {
	limit := max(maxBackoff, 2*interval)
	b := interval
	for i := 0; i < failures && b < limit; i++ {
		b *= 2
	}
	b = min(b, limit)
	return b/2 + rand.N(b/2+1)
}

// poll makes one pass and, unless ctx ended it, records its outcome for
// Status and the metrics. It returns the pass's error and the wait before
// the next pass; run calls it once per turn.
func (s *schedule) poll(ctx context.Context, pass func(context.Context) error) (time.Duration, error) {
	err := pass(ctx)
	if ctx.Err() != nil {
		return 0, err
	}
	d := s.record(err)
	s.mu.Lock()
	s.nextPoll = s.now().Add(d)
	s.mu.Unlock()
	return d, err
}

// run polls immediately, then after each wait, until ctx is done. A value on
// trigger cuts the current wait short. Passes run one after another on the
// caller's goroutine, so a poller's state needs no lock.
func (s *schedule) run(ctx context.Context, pass func(context.Context) error, trigger <-chan struct{}) {
	for {
		d, _ := s.poll(ctx, pass)
		if ctx.Err() != nil {
			return
		}

		waitCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-trigger:
				cancel()
			case <-waitCtx.Done():
			}
		}()
		s.sleep(waitCtx, d)
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

// status returns the recorded health, without the rate limit.
func (s *schedule) status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{
		Source:      s.source,
		LastSuccess: timeOrNil(s.lastSuccessAt),
		LastError:   s.lastError,
		LastErrorAt: timeOrNil(s.lastErrorAt),
		NextPoll:    timeOrNil(s.nextPoll),
	}
}

// timeOrNil returns t for a status field that is left out while zero.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// pollLog decides how loudly a poll of one repository or project is logged:
// the first success, and the first after a failure, at info (so a person can
// see polling work, or work again), the others at debug. Only its poller's
// passes use it, one after another (see schedule.run).
type pollLog struct {
	ok map[string]bool
}

// succeeded notes a successful poll of item and returns its log level.
func (l *pollLog) succeeded(item string) slog.Level {
	if l.ok[item] {
		return slog.LevelDebug
	}
	if l.ok == nil {
		l.ok = make(map[string]bool)
	}
	l.ok[item] = true
	return slog.LevelInfo
}

// failed notes a failed poll of item: its next success is logged at info.
func (l *pollLog) failed(item string) {
	delete(l.ok, item)
}
