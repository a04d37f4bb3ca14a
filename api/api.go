// Package api serves the run history as JSON in the Prometheus API
// envelope: {"status":"success","data":...} or
// {"status":"error","errorType":"...","error":"..."}.
package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	defaultLimit = 20
	maxLimit     = 500
	// maxUnixSeconds is 9999-12-31T23:59:59Z.
	maxUnixSeconds = 253402300799
)

// Runs is the run history the API reads; store.Store implements it.
type Runs interface {
	// Run returns the run with the given id, or pipeline.ErrNotFound.
	Run(id int64) (*pipeline.Run, error)
	// ListRuns returns the runs q selects, newest first.
	ListRuns(q pipeline.RunQuery) ([]*pipeline.Run, error)
}

// Error types, as in the Prometheus HTTP API.
const (
	errBadData     = "bad_data"
	errNotFound    = "not_found"
	errUnavailable = "unavailable"
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
	case errUnavailable:
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

// runList is the data of a list answer.
type runList struct {
	Runs []*pipeline.Run `json:"runs"`
	// NextCursor is set only when more runs may follow.
	NextCursor string `json:"next_cursor,omitempty"`
}

type handler struct {
	runs   Runs
	status func() any
	logger *slog.Logger
}

// New returns the handler of GET /api/pipeline-runs,
// GET /api/pipeline-runs/{id} and GET /api/status, whose data is what
// status returns. Unknown query parameters are ignored, as Prometheus does.
func New(runs Runs, status func() any, logger *slog.Logger) http.Handler {
	h := &handler{runs: runs, status: status, logger: logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/pipeline-runs", h.listRuns)
	mux.HandleFunc("GET /api/pipeline-runs/{id}", h.getRun)
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, _ *http.Request) {
		h.respond(w, h.status())
	})
	return mux
}

func (h *handler) listRuns(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		h.respondError(w, err)
		return
	}
	limit := q.Limit
	// One run more than asked tells whether another page exists.
	q.Limit++
	runs, lerr := h.runs.ListRuns(q)
	if lerr != nil {
		h.logger.Error("Listing runs failed", "err", lerr)
		h.respondError(w, &apiError{typ: errUnavailable, msg: "run history unavailable"})
		return
	}
	data := runList{Runs: runs}
	if len(runs) > limit {
		data.Runs = runs[:limit]
		data.NextCursor = encodeCursor(data.Runs[limit-1].ID)
	}
	if data.Runs == nil {
		data.Runs = []*pipeline.Run{}
	}
	h.respond(w, data)
}

func (h *handler) getRun(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		h.respondError(w, badData("invalid run id %q", raw))
		return
	}
	run, err := h.runs.Run(id)
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		h.respondError(w, &apiError{typ: errNotFound, msg: fmt.Sprintf("run %d not found", id)})
		return
	case err != nil:
		h.logger.Error("Reading run failed", "id", id, "err", err)
		h.respondError(w, &apiError{typ: errUnavailable, msg: "run history unavailable"})
		return
	}
	h.respond(w, run)
}

// parseQuery validates every parameter before the store is asked.
func parseQuery(r *http.Request) (pipeline.RunQuery, *apiError) {
	v := r.URL.Query()
	q := pipeline.RunQuery{Pipeline: v.Get("pipeline"), Limit: defaultLimit}

	// status may be repeated as well as comma-separated.
	for _, list := range v["status"] {
		if list == "" {
			continue
		}
		for s := range strings.SplitSeq(list, ",") {
			st := pipeline.Status(strings.TrimSpace(s))
			if !slices.Contains(pipeline.RunStatuses, st) {
				return q, badData("unknown status %q: want one of %s", st, join(pipeline.RunStatuses))
			}
			q.Statuses = append(q.Statuses, st)
		}
	}
	if s := v.Get("trigger"); s != "" {
		q.Trigger = pipeline.Source(s)
		if !slices.Contains(pipeline.Sources, q.Trigger) {
			return q, badData("unknown trigger %q: want one of %s", s, join(pipeline.Sources))
		}
	}
	var err *apiError
	if q.Since, err = parseTime(v, "since"); err != nil {
		return q, err
	}
	if q.Until, err = parseTime(v, "until"); err != nil {
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
		id, ok := decodeCursor(s)
		if !ok {
			return q, badData("invalid cursor %q", s)
		}
		q.BeforeID = id
	}
	return q, nil
}

// parseTime accepts what the Prometheus API accepts for times: RFC3339
// or unix seconds with an optional fraction.
func parseTime(v url.Values, name string) (time.Time, *apiError) {
	s := v.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		// The bound keeps the conversion to int64 defined and the time
		// within what RFC3339 can express.
		if math.IsNaN(f) || math.Abs(f) > maxUnixSeconds {
			return time.Time{}, badData("invalid %s %q: want RFC3339 or unix seconds", name, s)
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badData("invalid %s %q: want RFC3339 or unix seconds", name, s)
	}
	return t.UTC(), nil
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
