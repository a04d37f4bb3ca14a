// Package pause is the exporter's one sleep that a context cuts short: the
// pollers' intervals, the verify checks' backoff and the leadership's
// retries all wait with For (the pollers and verify take it as their
// default Sleep, which tests replace).
package pause

import (
	"context"
	"time"
)

// For waits for d, or until ctx is done, whichever comes first; it returns
// ctx.Err() when ctx ended the wait.
func For(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
