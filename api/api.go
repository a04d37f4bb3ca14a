// Package api serves the run history as JSON in the Prometheus API
// envelope: {"status":"success","data":...} or
// {"status":"error","errorType":"...","error":"..."}.
package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	defaultLimit = 20
	maxLimit     = 500
	// maxUnixSeconds is 9999-12-31T23:59:59Z.
	maxUnixSeconds = 253402300799
	// maxStatusValues bounds the status values of one query, repeats and
	// comma lists together.
	maxStatusValues = 100
	// maxCursorBytes bounds a cursor; ours are a dozen bytes.
	maxCursorBytes = 1024
	// maxEcho bounds how much of a bad parameter an error quotes.
	maxEcho = 64
	// maxMinDuration is the longest min_duration: no run lasts longer than
	// a year.
	maxMinDuration = 366 * 24 * time.Hour
)

// DefaultQueryTimeout is the default of Options.QueryTimeout.
const DefaultQueryTimeout = 5 * time.Second

// Reads share the CPUs with webhook intake, and decoding and encoding
// runs costs far more CPU than taking a delivery: 100 clients reading
// /api/pipeline-runs?limit=50 as fast as they could, sixteen served at a
// time, took both CPUs of a test machine and raised webhook p99 at 200/s
// from 63 ms to 1.45 s. So a slot of the cap rests after each request
// restFactor times as long as the request took (at most maxRest), and the
// default cap is half the CPUs: reads take at most about an eighth of the
// CPUs, and intake keeps its latency (e2e TestReadFloodDoesNotStallIntake).
const (
	restFactor = 3
	// maxRest bounds the rest after a request that mostly waited (on a
	// slow disk, or the query timeout) rather than used CPU.
	maxRest = time.Second
	// maxWait is how long a request past the cap waits for a slot before
	// it is refused: a burst of a few requests is served, a flood is
	// refused without a client that retries at once costing CPU each time.
	maxWait = 250 * time.Millisecond
)

// DefaultMaxRequests returns the default of Options.MaxRequests: half the
// CPUs Go uses, at least one.
func DefaultMaxRequests() int {
	return max(1, runtime.GOMAXPROCS(0)/2)
}

// minTime is the earliest since or until accepted: no run is older.
var minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Runs is the run history the API reads; pipeline.History implements it.
type Runs interface {
	// Run returns the run with the given id, or pipeline.ErrNotFound.
	Run(ctx context.Context, id int64) (*pipeline.Run, error)
	// ListRuns returns the runs q selects, newest first.
	ListRuns(ctx context.Context, q pipeline.RunQuery) ([]*pipeline.Run, error)
	// Summaries returns the summary of every pipeline that has runs.
	Summaries(ctx context.Context) ([]pipeline.PipelineSummary, error)
}

// Options tune the handler; the zero value takes the defaults.
type Options struct {
	// ExternalURL is where users reach the exporter (--web.external-url);
	// page_url is made absolute with it. Nil leaves page_url a path.
	ExternalURL *url.URL
	// MaxRequests caps the requests served at once; past it a request
	// waits a little for a slot, then is answered 503 with Retry-After, so
	// readers never queue up behind the store. Zero means
	// DefaultMaxRequests().
	MaxRequests int
	// QueryTimeout bounds each history query; zero means
	// DefaultQueryTimeout.
	QueryTimeout time.Duration
	// Specs returns the configured pipelines, which GET /api/pipelines
	// lists with those the history knows.
	Specs func() []pipeline.Spec
}

// Error types, as in the Prometheus HTTP API.
const (
	errBadData     = "bad_data"
	errNotFound    = "not_found"
	errUnavailable = "unavailable"
	errTimeout     = "timeout"
	errInternal    = "internal"
)

type apiError struct {
	typ string
	msg string
}

func (e *apiError) code() int {
	switch e.typ {
	case errBadData:
		return http.StatusBadRequest
	case errNotFound:
		return http.StatusNotFound
	case errUnavailable, errTimeout:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func badData(format string, args ...any) *apiError {
	return &apiError{typ: errBadData, msg: fmt.Sprintf(format, args...)}
}

type response struct {
	Status    string `json:"status"`
	Data      any    `json:"data,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Run is a run as the API shows it: the stored run and the address of its
// page. /api/events sends the same object.
type Run struct {
	*pipeline.Run
	// PageURL is the run's page, made absolute with the external URL.
	PageURL string `json:"page_url"`
}

// NewRun returns r as the API shows it.
func NewRun(r *pipeline.Run, externalURL *url.URL) Run {
	return Run{Run: r, PageURL: PageURL(externalURL, r.ID)}
}

// PageURL is the address of a run's page, /runs/{id}, under externalURL
// (with its path prefix), or the bare path when externalURL is nil.
func PageURL(externalURL *url.URL, id int64) string {
	p := "runs/" + strconv.FormatInt(id, 10)
	if externalURL == nil {
		return "/" + p
	}
	return externalURL.JoinPath(p).String()
}

// runList is the data of a list answer.
type runList struct {
	Runs []Run `json:"runs"`
	// NextCursor is set only when more runs may follow.
	NextCursor string `json:"next_cursor,omitempty"`
}

// StatusReporter reports the running exporter for GET /api/status
// (instance.Instance implements it). Status is read with the request's
// context, and its value is the answer's data, as encoding/json marshals
// it: its parts (pollers, webhook sources, the store) belong to packages
// this one does not import.
type StatusReporter interface {
	Status(ctx context.Context) any
}

type handler struct {
	runs         Runs
	status       StatusReporter
	logger       *slog.Logger
	externalURL  *url.URL
	queryTimeout time.Duration
	specs        func() []pipeline.Spec
	// slots holds a token per request being served.
	slots chan struct{}
}

// New returns the handler of GET /api/pipeline-runs,
// GET /api/pipeline-runs/{id}, GET /api/pipelines and GET /api/status, whose data is what
// status returns. Unknown query parameters are ignored, as Prometheus does.
func New(runs Runs, status StatusReporter, logger *slog.Logger, opts Options) http.Handler {
	if opts.MaxRequests <= 0 {
		opts.MaxRequests = DefaultMaxRequests()
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = DefaultQueryTimeout
	}
	h := &handler{
		runs: runs, status: status, logger: logger,
		externalURL: opts.ExternalURL, queryTimeout: opts.QueryTimeout, specs: opts.Specs,
		slots: make(chan struct{}, opts.MaxRequests),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/pipeline-runs", h.listRuns)
	mux.HandleFunc("GET /api/pipeline-runs/{id}", h.getRun)
	mux.HandleFunc("GET /api/pipelines", h.listPipelines)
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		h.respond(w, h.status.Status(r.Context()))
	})
	return h.limit(mux)
}

// limit serves at most cap(h.slots) requests at once, each slot resting
// after its request, and refuses requests that found no slot within
// maxWait: a reader queued longer would hold a connection and add to the
// store's load when it finally ran.
func (h *handler) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait := time.NewTimer(maxWait)
		defer wait.Stop()
		select {
		case h.slots <- struct{}{}:
		case <-r.Context().Done():
			return
		case <-wait.C:
			w.Header().Set("Retry-After", "1")
			h.respondError(w, &apiError{typ: errUnavailable, msg: "too many concurrent API requests"})
			return
		}
		start := time.Now()
		next.ServeHTTP(w, r)
		time.AfterFunc(min(restFactor*time.Since(start), maxRest), func() { <-h.slots })
	})
}

// historyError answers a failed history query.
func (h *handler) historyError(w http.ResponseWriter, r *http.Request, err error, what string, args ...any) {
	switch {
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		h.logger.Warn(what+" timed out", append(args, "timeout", h.queryTimeout)...)
		h.respondError(w, &apiError{typ: errTimeout, msg: fmt.Sprintf("run history query took longer than %s", h.queryTimeout)})
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		h.logger.Debug(what+" abandoned by the client", args...)
		h.respondError(w, &apiError{typ: errUnavailable, msg: "request cancelled"})
	default:
		h.logger.Error(what+" failed", append(args, "err", err)...)
		h.respondError(w, &apiError{typ: errUnavailable, msg: "run history unavailable"})
	}
}

func (h *handler) listRuns(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r, time.Now())
	if err != nil {
		h.respondError(w, err)
		return
	}
	limit := q.Limit
	// One run more than asked tells whether another page exists.
	q.Limit++
	ctx, cancel := context.WithTimeout(r.Context(), h.queryTimeout)
	defer cancel()
	runs, lerr := h.runs.ListRuns(ctx, q)
	if lerr != nil {
		h.historyError(w, r, lerr, "Listing runs")
		return
	}
	var next string
	if len(runs) > limit {
		runs = runs[:limit]
		next = encodeCursor(runs[limit-1].ID)
	}
	data := runList{Runs: make([]Run, len(runs)), NextCursor: next}
	for i, run := range runs {
		data.Runs[i] = NewRun(run, h.externalURL)
	}
	h.respond(w, data)
}

func (h *handler) getRun(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		h.respondError(w, badData("invalid run id %s", echo(raw)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.queryTimeout)
	defer cancel()
	run, err := h.runs.Run(ctx, id)
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		h.respondError(w, &apiError{typ: errNotFound, msg: fmt.Sprintf("run %d not found", id)})
		return
	case err != nil:
		h.historyError(w, r, err, "Reading run", "id", id)
		return
	}
	h.respond(w, NewRun(run, h.externalURL))
}

// parseQuery validates every parameter before the store is asked; now
// bounds since and until.
func parseQuery(r *http.Request, now time.Time) (pipeline.RunQuery, *apiError) {
	q := pipeline.RunQuery{Limit: defaultLimit}
	v, err := queryValues(r.URL.RawQuery)
	if err != nil {
		return q, err
	}
	q.Pipeline = v.Get("pipeline")

	// status may be repeated as well as comma-separated. Counted first, so
	// that a flood of values costs no more than counting them.
	n := 0
	for _, list := range v["status"] {
		if list != "" {
			n += strings.Count(list, ",") + 1
		}
	}
	if n > maxStatusValues {
		return q, badData("too many status values: at most %d", maxStatusValues)
	}
	for _, list := range v["status"] {
		if list == "" {
			continue
		}
		for s := range strings.SplitSeq(list, ",") {
			st := pipeline.Status(strings.TrimSpace(s))
			if !slices.Contains(pipeline.RunStatuses, st) {
				return q, badData("unknown status %s: want one of %s", echo(string(st)), join(pipeline.RunStatuses))
			}
			q.Statuses = append(q.Statuses, st)
		}
	}
	if s := v.Get("trigger"); s != "" {
		q.Trigger = pipeline.Source(s)
		if !slices.Contains(pipeline.Sources, q.Trigger) {
			return q, badData("unknown trigger %s: want one of %s", echo(s), join(pipeline.Sources))
		}
	}
	if q.Since, err = parseTime(v, "since", now); err != nil {
		return q, err
	}
	if q.Until, err = parseTime(v, "until", now); err != nil {
		return q, err
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Since.After(q.Until) {
		return q, badData("since must not be after until")
	}
	if s := v.Get("limit"); s != "" {
		n, perr := strconv.Atoi(s)
		if perr != nil || n < 1 || n > maxLimit {
			return q, badData("limit must be between 1 and %d", maxLimit)
		}
		q.Limit = n
	}
	if s := v.Get("cursor"); s != "" {
		if len(s) > maxCursorBytes {
			return q, badData("cursor longer than %d bytes", maxCursorBytes)
		}
		id, ok := decodeCursor(s)
		if !ok {
			return q, badData("invalid cursor %s", echo(s))
		}
		q.BeforeID = id
	}
	if s := v.Get("min_duration"); s != "" {
		d, ok := parseDuration(s)
		if !ok {
			return q, badData("invalid min_duration %s: want a duration (15m, 90s) or seconds, at most a year", echo(s))
		}
		q.MinDuration = d
	}
	return q, nil
}

// queryValues parses a raw query as url.ParseQuery does, but refuses what
// ParseQuery would drop or pass on: a pair with a bad %-escape, which
// ParseQuery leaves out (pipeline=other%ZZ would list every pipeline's
// runs), and a NUL or invalid UTF-8, which no run holds and PostgreSQL
// refuses as a query argument. Every parameter is checked, known or not: a
// malformed name may be a filter's. Unlike ParseQuery, a ";" is part of
// the value, not a separator that drops the pair.
func queryValues(raw string) (url.Values, *apiError) {
	v := url.Values{}
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil || !wellFormed(key) {
			return nil, badData("invalid query parameter name %s", echo(rawKey))
		}
		name := key
		if len(name) > maxEcho {
			name = echo(name)
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return nil, badData("invalid %s %s: bad %%-escape", name, echo(rawValue))
		}
		if !wellFormed(value) {
			return nil, badData("invalid %s %s: holds a NUL or invalid UTF-8", name, echo(rawValue))
		}
		v[key] = append(v[key], value)
	}
	return v, nil
}

// wellFormed reports whether s is UTF-8 without a NUL.
func wellFormed(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// parseDuration accepts a Go duration ("15m") or seconds ("900", "0.5"),
// from 0 to a year.
func parseDuration(s string) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(f) || f < 0 || f > maxMinDuration.Seconds() {
			return 0, false
		}
		d = time.Duration(f * float64(time.Second))
	}
	return d, d >= 0 && d <= maxMinDuration
}

// parseTime accepts what the Prometheus API accepts for times: RFC3339
// or unix seconds with an optional fraction, from 2000-01-01 to a year
// past now, the range a run's times can have.
func parseTime(v url.Values, name string, now time.Time) (time.Time, *apiError) {
	s := v.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	var t time.Time
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		// The bound keeps the conversion to int64 defined and the time
		// within what RFC3339 can express.
		if math.IsNaN(f) || math.Abs(f) > maxUnixSeconds {
			return time.Time{}, badData("invalid %s %s: want RFC3339 or unix seconds", name, echo(s))
		}
		sec, frac := math.Modf(f)
		t = time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC()
	} else {
		p, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, badData("invalid %s %s: want RFC3339 or unix seconds", name, echo(s))
		}
		t = p.UTC()
	}
	if t.Before(minTime) || t.After(now.AddDate(1, 0, 0)) {
		return time.Time{}, badData("%s must be between 2000-01-01 and a year from now", name)
	}
	return t, nil
}

// echo quotes a bad parameter for an error message, cut short: an error
// must not grow with what a client sends.
func echo(s string) string {
	if len(s) > maxEcho {
		return strconv.Quote(s[:maxEcho]) + "..."
	}
	return strconv.Quote(s)
}

// encodeCursor makes the cursor opaque so clients do not build their own;
// it is the id of the page's last run.
func encodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(id, 10)))
}

func decodeCursor(s string) (int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, false
	}
	id, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}

func join[T ~string](vals []T) string {
	s := make([]string, len(vals))
	for i, v := range vals {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

func (h *handler) respond(w http.ResponseWriter, data any) {
	h.write(w, http.StatusOK, response{Status: "success", Data: data})
}

func (h *handler) respondError(w http.ResponseWriter, err *apiError) {
	h.write(w, err.code(), response{Status: "error", ErrorType: err.typ, Error: err.msg})
}

// write encodes before writing the header, so an encoding failure can
// still be answered with a 500.
func (h *handler) write(w http.ResponseWriter, code int, resp response) {
	b, err := json.Marshal(resp)
	if err != nil {
		h.logger.Error("Encoding API response failed", "err", err)
		code = http.StatusInternalServerError
		b, _ = json.Marshal(response{Status: "error", ErrorType: errInternal, Error: "cannot encode response"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if _, err := w.Write(b); err != nil {
		h.logger.Debug("Writing API response failed", "err", err)
	}
}
