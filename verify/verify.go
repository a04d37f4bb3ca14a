// Package verify checks the live site after a deploy: the last stage of a
// pipeline run. It retries with exponential backoff until a deadline, because
// a CDN may take a while to serve what was just deployed.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	// maxBodyBytes bounds what one attempt reads of a response body, so a
	// huge or endless page cannot exhaust memory; body matches only see
	// this prefix.
	maxBodyBytes = 1 << 20
	// maxRedirects is how many redirects an attempt follows, half of
	// net/http's default: more hops mean a misconfigured site, and they
	// all share one attempt's timeout.
	maxRedirects = 5
	firstBackoff = time.Second
	maxBackoff   = 30 * time.Second
	// defaultTimeout applies when Target.Timeout is zero; an attempt with
	// no bound could hang until the whole deadline is spent.
	defaultTimeout = 10 * time.Second
)

// Target is what to check on the live site and how long to keep trying.
type Target struct {
	URL string
	// ExpectStatus is the wanted HTTP status; zero means 200.
	ExpectStatus int
	// Timeout bounds each attempt, body read included; zero means 10s.
	Timeout time.Duration
	// BodyContains, when not empty, must occur in the first MiB of the body.
	BodyContains string
	// BodyRegexp, when set, must match the first MiB of the body.
	BodyRegexp *regexp.Regexp
	// Deadline is how long after the first attempt a new attempt may
	// still start; zero means a single attempt.
	Deadline time.Duration
}

// Checker performs verify checks. Its zero value works: nil fields fall
// back to net/http's default transport, the wall clock and real sleeps.
type Checker struct {
	// Client sends the requests. Check uses a copy of it whose redirect
	// policy follows at most 5 redirects.
	Client *http.Client
	// Now is the clock of the deadline, the result's times and the
	// response times.
	Now func() time.Time
	// Sleep waits between attempts; it returns early with ctx's error.
	Sleep func(ctx context.Context, d time.Duration) error
	// Version, when set, makes the User-Agent "pipeline_exporter/<Version>"
	// so site owners can tell the checks from visitors in their logs.
	Version string
}

// Check tries t until an attempt succeeds, t.Deadline has passed since
// the first attempt, or ctx is done. The result names the last error; when
// ctx ended the check it says so, and a caller shutting down should not
// apply such a result. The response time is measured from sending the
// request to reading the body.
func (c *Checker) Check(ctx context.Context, runID int64, t Target) pipeline.VerifyResultEvent {
	now := c.Now
	if now == nil {
		now = time.Now
	}
	sleep := c.Sleep
	if sleep == nil {
		sleep = sleepContext
	}
	client := c.client()

	res := pipeline.VerifyResultEvent{RunID: runID, StartedAt: now()}
	backoff := firstBackoff
	for {
		res.Attempts++
		seconds, err := c.attempt(ctx, client, now, t)
		res.ResponseSeconds = seconds
		if err == nil {
			res.Success = true
			res.Error = ""
			break
		}
		res.Error = err.Error()
		if ctx.Err() != nil || now().Add(backoff).Sub(res.StartedAt) > t.Deadline {
			break
		}
		if sleep(ctx, backoff) != nil {
			break
		}
		backoff = min(2*backoff, maxBackoff)
	}
	if !res.Success && ctx.Err() != nil {
		res.Error = fmt.Sprintf("check interrupted (%v); last error: %s", ctx.Err(), res.Error)
	}
	res.FinishedAt = now()
	return res
}

func (c *Checker) client() *http.Client {
	var cl http.Client
	if c.Client != nil {
		cl = *c.Client
	}
	cl.CheckRedirect = func(_ *http.Request, via []*http.Request) error {
		if len(via) > maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	return &cl
}

// attempt performs one GET. It returns the response time (zero when no
// response came) and why the attempt failed, or nil.
func (c *Checker) attempt(ctx context.Context, client *http.Client, now func() time.Time, t Target) (float64, error) {
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	want := t.ExpectStatus
	if want == 0 {
		want = http.StatusOK
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, t.URL, nil)
	if err != nil {
		return 0, err
	}
	if c.Version != "" {
		req.Header.Set("User-Agent", "pipeline_exporter/"+c.Version)
	}

	start := now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, attemptError(ctx, actx, timeout, t.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	seconds := now().Sub(start).Seconds()
	if err != nil {
		return seconds, attemptError(ctx, actx, timeout, t.URL, err)
	}

	switch {
	case resp.StatusCode != want:
		return seconds, fmt.Errorf("GET %s: status %d, want %d", t.URL, resp.StatusCode, want)
	case t.BodyContains != "" && !strings.Contains(string(body), t.BodyContains):
		return seconds, fmt.Errorf("body does not contain %q", t.BodyContains)
	case t.BodyRegexp != nil && !t.BodyRegexp.Match(body):
		return seconds, fmt.Errorf("body does not match %q", t.BodyRegexp.String())
	}
	return seconds, nil
}

// attemptError names a transport failure: the attempt's own timeout is
// reported as such, not as net/http's longer "context deadline exceeded".
func attemptError(parent, actx context.Context, timeout time.Duration, target string, err error) error {
	if parent.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timeout after %s", timeout)
	}
	// url.Error repeats the method and URL in its own quoting; drop it
	// so every message starts the same way.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("GET %s: %w", target, err)
}

func sleepContext(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
