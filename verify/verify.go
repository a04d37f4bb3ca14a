// Package verify checks the live site after a deploy: the last stage of a
// pipeline run. It retries with exponential backoff until a deadline, because
// a CDN may take a while to serve what was just deployed.
package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pause"
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
	// Build, when set, is how the site shows which build it serves: the
	// check then also needs the site to show the run's build.
	Build *Build
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

func (c *Checker) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// Check tries t for run until an attempt succeeds, t.Deadline has passed
// since the first attempt, or ctx is done; a failure no retry can mend
// (a template naming what the run lacks) ends it at once. others are
// other runs of the pipeline, newest first: when the site shows the build
// of one of them, the error names it. The result names the last error;
// when ctx ended the check it says so, and a caller shutting down should
// not apply such a result. The response time is measured from sending the
// request to reading the body.
func (c *Checker) Check(ctx context.Context, run *pipeline.Run, t Target, others []*pipeline.Run) pipeline.VerifyResultEvent {
	sleep := c.Sleep
	if sleep == nil {
		sleep = pause.For
	}
	client := c.client()
	f := FieldsOf(run)

	res := pipeline.VerifyResultEvent{RunID: run.ID, StartedAt: c.now(), URL: t.URL}
	if t.Build != nil {
		res.Build = f.commit
	}
	backoff := firstBackoff
	for {
		res.Attempts++
		o := c.attempt(ctx, client, t, f, others)
		res.ResponseSeconds, res.StatusCode, res.Served, res.ServedRunID = o.seconds, o.status, o.served, o.servedRun
		if o.err == nil {
			res.Success = true
			res.Error = ""
			break
		}
		res.Error = o.err.Error()
		if o.permanent || ctx.Err() != nil || c.now().Add(backoff).Sub(res.StartedAt) > t.Deadline {
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
	res.FinishedAt = c.now()
	return res
}

// Recheck makes one attempt of t for run, the pipeline's live build: a
// hung site costs one timeout, never a retry loop.
func (c *Checker) Recheck(ctx context.Context, run *pipeline.Run, t Target, others []*pipeline.Run) pipeline.RecheckResultEvent {
	o := c.attempt(ctx, c.client(), t, FieldsOf(run), others)
	res := pipeline.RecheckResultEvent{
		RunID: run.ID, Success: o.err == nil, CheckedAt: c.now(), URL: t.URL,
		StatusCode: o.status, ResponseSeconds: o.seconds, Served: o.served, ServedRunID: o.servedRun,
	}
	if o.err != nil {
		res.Error = o.err.Error()
	}
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

// observation is what one attempt saw.
type observation struct {
	// seconds is the response time, zero when no response came.
	seconds float64
	status  int
	// served is the commit the site showed, when it could be read, and
	// servedRun the run of the pipeline that built it, when known.
	served    string
	servedRun int64
	// err says why the attempt failed, nil when it succeeded; permanent
	// marks a failure that another attempt cannot mend.
	err       error
	permanent bool
}

// attempt performs one GET of the site, and the requests the build check
// needs, all within one timeout.
func (c *Checker) attempt(ctx context.Context, client *http.Client, t Target, f Fields, others []*pipeline.Run) observation {
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
	fail := func(o observation, err error) observation {
		o.err = err
		if !errors.Is(err, errPermanent) {
			o.err = transportError(ctx, actx, timeout, err)
		}
		o.permanent = errors.Is(err, errPermanent)
		return o
	}

	start := c.now()
	resp, body, err := c.get(actx, client, t.URL)
	if err != nil {
		return fail(observation{}, err)
	}
	o := observation{seconds: c.now().Sub(start).Seconds(), status: resp.StatusCode}
	switch {
	case resp.StatusCode != want:
		return fail(o, fmt.Errorf("GET %s: status %d, want %d", t.URL, resp.StatusCode, want))
	case t.BodyContains != "" && !bytes.Contains(body, []byte(t.BodyContains)):
		return fail(o, fmt.Errorf("body does not contain %q", t.BodyContains))
	case t.BodyRegexp != nil && !t.BodyRegexp.Match(body):
		return fail(o, fmt.Errorf("body does not match %q", t.BodyRegexp.String()))
	}
	if t.Build == nil {
		return o
	}
	o.served, o.servedRun, err = c.build(actx, client, t.Build, page{header: resp.Header, body: body}, f, others)
	if err != nil {
		return fail(o, err)
	}
	return o
}

// get performs one GET and reads at most the first MiB of the body.
func (c *Checker) get(ctx context.Context, client *http.Client, target string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, nil, err
	}
	if c.Version != "" {
		req.Header.Set("User-Agent", "pipeline_exporter/"+c.Version)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, requestError(target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return nil, nil, requestError(target, err)
	}
	return resp, body, nil
}

// requestError names a transport failure by the URL it concerns.
func requestError(target string, err error) error {
	// url.Error repeats the method and URL in its own quoting; drop it
	// so every message starts the same way.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return &getError{url: target, err: err}
}

type getError struct {
	url string
	err error
}

func (e *getError) Error() string { return fmt.Sprintf("GET %s: %v", e.url, e.err) }
func (e *getError) Unwrap() error { return e.err }

// transportError reports the attempt's own timeout as such, not as
// net/http's longer "context deadline exceeded".
func transportError(parent, actx context.Context, timeout time.Duration, err error) error {
	var gerr *getError
	if errors.As(err, &gerr) && parent.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timeout after %s", timeout)
	}
	return err
}
