package poller

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		failures int
		lo, hi   time.Duration
	}{
		{time.Minute, 1, time.Minute, 2 * time.Minute},
		{time.Minute, 2, 2 * time.Minute, 4 * time.Minute},
		{time.Minute, 3, 2*time.Minute + 30*time.Second, 5 * time.Minute},
		{time.Minute, 50, 2*time.Minute + 30*time.Second, 5 * time.Minute},
		{time.Second, 1, time.Second, 2 * time.Second},
		{10 * time.Minute, 1, 10 * time.Minute, 20 * time.Minute},
		{10 * time.Minute, 5, 10 * time.Minute, 20 * time.Minute},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := backoff(tc.interval, tc.failures)
			if d < tc.lo || d > tc.hi {
				t.Fatalf("backoff(%v, %d) = %v, want within [%v, %v]", tc.interval, tc.failures, d, tc.lo, tc.hi)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("backoff(%v, %d) always %v: no jitter", tc.interval, tc.failures, seen)
		}
	}
}

func TestScheduleRecord(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := &schedule{source: sourceGitHub, interval: time.Minute, now: clock.Now, lastSuccess: newMetrics(prometheus.NewRegistry()).lastSuccess.WithLabelValues(sourceGitHub), logger: slog.New(slog.DiscardHandler)}
	failed := errors.New("500 Internal Server Error")
	for i, step := range []struct {
		err    error
		lo, hi time.Duration
	}{
		{failed, time.Minute, 2 * time.Minute},
		{failed, 2 * time.Minute, 4 * time.Minute},
		// A rate limit waits for its reset and leaves the backoff alone.
		{&rateLimitedError{until: clock.Now().Add(10 * time.Minute)}, 10 * time.Minute, 10 * time.Minute},
		{failed, 2*time.Minute + 30*time.Second, 5 * time.Minute},
		{nil, time.Minute, time.Minute},
		// One success resets the backoff.
		{failed, time.Minute, 2 * time.Minute},
		// A reset already past (clock skew) must not make a tight loop.
		{&rateLimitedError{until: clock.Now().Add(-time.Second)}, 2 * time.Minute, 4 * time.Minute},
	} {
		if d := s.record(step.err); d < step.lo || d > step.hi {
			t.Errorf("step %d (%v): wait %v, want within [%v, %v]", i+1, step.err, d, step.lo, step.hi)
		}
	}
}
