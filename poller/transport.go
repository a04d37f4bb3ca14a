package poller

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Endpoint label values of pipeline_exporter_poll_requests_total.
const (
	endpointRuns        = "runs"
	endpointJobs        = "jobs"
	endpointDeployments = "deployments"
)

// maxCachedBody bounds what the conditional cache keeps per URL; a larger
// answer is passed through uncached rather than held in memory.
const maxCachedBody = 16 << 20

type requestInfoKey struct{}

// requestInfo travels in the request context from the pollers down to the
// transports, which cannot tell from a URL alone which metric label applies or
// whether the URL is one that is asked again every poll.
type requestInfo struct {
	endpoint string
	// conditional marks URLs the poller requests on every poll (run lists,
	// deployment lists): only those are worth an ETag and a cached body.
	conditional bool
}

func withRequestInfo(ctx context.Context, endpoint string, conditional bool) context.Context {
	return context.WithValue(ctx, requestInfoKey{}, requestInfo{endpoint: endpoint, conditional: conditional})
}

func requestInfoFrom(ctx context.Context) requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(requestInfo)
	return info
}

// cacheEntry is the last full answer for one URL.
type cacheEntry struct {
	etag         string
	lastModified string
	status       int
	header       http.Header
	body         []byte
}

// conditionalTransport remembers the ETag and Last-Modified of each
// conditional URL, sends If-None-Match and If-Modified-Since, and answers a
// 304 with the remembered body as a 200, so the code above it decodes an
// unchanged answer exactly like a fresh one. GitHub does not count an
// authorised request answered 304 against the rate limit: a poll of an
// unchanged repository costs nothing.
type conditionalTransport struct {
	next http.RoundTripper

	mu    sync.Mutex
	cache map[string]*cacheEntry
}

func newConditionalTransport(next http.RoundTripper) *conditionalTransport {
	return &conditionalTransport{next: next, cache: make(map[string]*cacheEntry)}
}

// RoundTrip implements http.RoundTripper.
func (t *conditionalTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || !requestInfoFrom(req.Context()).conditional {
		return t.next.RoundTrip(req)
	}
	key := req.URL.String()
	t.mu.Lock()
	entry := t.cache[key]
	t.mu.Unlock()

	if entry != nil {
		req = req.Clone(req.Context())
		if entry.etag != "" {
			req.Header.Set("If-None-Match", entry.etag)
		}
		if entry.lastModified != "" {
			req.Header.Set("If-Modified-Since", entry.lastModified)
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}

	if resp.StatusCode == http.StatusNotModified && entry != nil {
		resp.Body.Close()
		return t.replay(entry, resp), nil
	}
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	etag, lastModified := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if etag == "" && lastModified == "" {
		t.forget(key)
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCachedBody+1))
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	if len(body) > maxCachedBody {
		t.forget(key)
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return resp, nil
	}
	resp.Body.Close()
	t.mu.Lock()
	t.cache[key] = &cacheEntry{
		etag:         etag,
		lastModified: lastModified,
		status:       resp.StatusCode,
		header:       resp.Header.Clone(),
		body:         body,
	}
	t.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// replay builds the answer to a 304 from the stored one. The 304's own
// headers replace the stored ones (RFC 9111 section 4.3.4), so the rate-limit
// headers read above this transport are the current ones; its
// Content-Length, if any, describes its own empty body and is not taken.
func (t *conditionalTransport) replay(entry *cacheEntry, notModified *http.Response) *http.Response {
	t.mu.Lock()
	for name, values := range notModified.Header {
		if name != "Content-Length" {
			entry.header[name] = values
		}
	}
	header := entry.header.Clone()
	t.mu.Unlock()
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", entry.status, http.StatusText(entry.status)),
		StatusCode:    entry.status,
		Proto:         notModified.Proto,
		ProtoMajor:    notModified.ProtoMajor,
		ProtoMinor:    notModified.ProtoMinor,
		Header:        header,
		Body:          io.NopCloser(bytes.NewReader(entry.body)),
		ContentLength: int64(len(entry.body)),
		Request:       notModified.Request,
	}
}

// forget drops what is cached for a URL, so that a body the poller could not
// use (malformed JSON) is fetched afresh instead of replayed on every 304.
func (t *conditionalTransport) forget(key string) {
	t.mu.Lock()
	delete(t.cache, key)
	t.mu.Unlock()
}

type readCloser struct {
	io.Reader
	io.Closer
}

// RateLimit is the GitHub rate limit as last read from x-ratelimit-* headers.
type RateLimit struct {
	Limit     int       `json:"limit"`
	Remaining int       `json:"remaining"`
	Used      int       `json:"used"`
	Reset     time.Time `json:"reset"`
}

// rateLimitedError says the service refused (or would refuse) requests until
// a given time. It is returned by the transport instead of the 403/429 answer.
type rateLimitedError struct {
	until time.Time
}

func (e *rateLimitedError) Error() string {
	return "rate limited until " + e.until.UTC().Format(time.RFC3339)
}

// apiTransport is the transport nearest the network: it adds the
// Authorization header (the token is read per request so a rotated token file
// applies at once), counts every answer, reads the rate-limit headers, and
// enforces rate-limit waits on the poller's clock.
//
// It turns 403/429 rate-limit answers into a rateLimitedError rather than
// handing them up: go-github keeps its own memory of secondary limits on the
// wall clock and would refuse requests the poller's clock allows.
type apiTransport struct {
	next      http.RoundTripper
	source    string
	token     func() string
	now       func() time.Time
	metrics   *metrics
	trackRate bool // GitHub's x-ratelimit-* become gauges and Status

	mu           sync.Mutex
	rate         *RateLimit
	blockedUntil time.Time
}

// RoundTrip implements http.RoundTripper.
func (t *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	blocked := t.blockedUntil
	t.mu.Unlock()
	if t.now().Before(blocked) {
		return nil, &rateLimitedError{until: blocked}
	}

	req = req.Clone(req.Context())
	if tok := t.token(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	endpoint := requestInfoFrom(req.Context()).endpoint
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		t.metrics.requests.WithLabelValues(t.source, endpoint, "error").Inc()
		return nil, err
	}
	t.metrics.requests.WithLabelValues(t.source, endpoint, strconv.Itoa(resp.StatusCode)).Inc()

	now := t.now()
	rate := parseRate(resp.Header)
	until := time.Time{}
	if rate != nil && rate.Remaining == 0 {
		until = rate.Reset
	}
	if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests {
		// Retry-After is how GitHub's secondary limits and Cloudflare say
		// how long to wait; it wins over a primary reset.
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			until = now.Add(time.Duration(secs) * time.Second)
		}
	}

	t.mu.Lock()
	if rate != nil && t.trackRate {
		t.rate = rate
		t.metrics.rateRemaining.WithLabelValues().Set(float64(rate.Remaining))
		t.metrics.rateReset.WithLabelValues().Set(float64(rate.Reset.Unix()))
	}
	if until.After(now) {
		t.blockedUntil = until
	}
	t.mu.Unlock()

	if (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests) && !until.IsZero() {
		resp.Body.Close()
		return nil, &rateLimitedError{until: until}
	}
	return resp, nil
}

// rateLimit returns a copy of the last rate limit read, or nil.
func (t *apiTransport) rateLimit() *RateLimit {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rate == nil {
		return nil
	}
	r := *t.rate
	return &r
}

// parseRate reads GitHub's x-ratelimit-* headers; nil when absent.
func parseRate(h http.Header) *RateLimit {
	remaining, err := strconv.Atoi(h.Get("X-RateLimit-Remaining"))
	if err != nil {
		return nil
	}
	reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
	if err != nil {
		return nil
	}
	limit, _ := strconv.Atoi(h.Get("X-RateLimit-Limit"))
	used, _ := strconv.Atoi(h.Get("X-RateLimit-Used"))
	return &RateLimit{Limit: limit, Remaining: remaining, Used: used, Reset: time.Unix(reset, 0).UTC()}
}
