// Package webhook serves the exporter's webhook endpoints: it authenticates
// deliveries from GitHub, Supabase, MailerLite and Cloudflare, turns their
// payloads into pipeline.Events and hands both the raw delivery and the events
// to an Ingester, answering the sender only once the Ingester has made them
// durable.
package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Ingester makes a delivery durable and applies its events. It is
// implemented by pipeline.Engine.
type Ingester interface {
	Ingest(ctx context.Context, d *pipeline.Delivery, events []pipeline.Event) (pipeline.Outcome, []int64, error)
}

// Settings is what the handlers need from the configuration. The Handler
// asks for it on every request, so a reloaded configuration (a rotated
// secret, say) applies to the next delivery.
type Settings struct {
	// GitHubSecret, SupabaseSecret, MailerLiteSecret and CloudflareSecret
	// authenticate their sources; an empty secret disables the source, whose
	// endpoint then answers 404.
	GitHubSecret, SupabaseSecret, MailerLiteSecret, CloudflareSecret string
	// SupabaseHeader names the header that carries the Supabase secret
	// verbatim; empty means "Authorization: Bearer <secret>".
	SupabaseHeader string
	// MaxBodyBytes caps request bodies; larger ones are answered 413.
	// Zero or less means 1 MiB, the configuration's default.
	MaxBodyBytes int64
}

// Options are the dependencies of a Handler.
type Options struct {
	// Settings is called on every request. Required.
	Settings func() Settings
	// Ingester receives every authenticated, well-formed delivery. Required.
	Ingester Ingester
	// Registerer receives the webhook metrics. Required.
	Registerer prometheus.Registerer
	// Logger defaults to a logger that discards everything.
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
	// OnCloudflare, when set, is called after a Cloudflare Pages notification
	// has been ingested, so that the Pages poller can poll at once instead of
	// waiting for its next interval.
	OnCloudflare func()
}

// defaultMaxBodyBytes applies when Settings.MaxBodyBytes is not positive, so
// that a zero Settings never rejects every body.
const defaultMaxBodyBytes = 1 << 20

// Outcome label values beyond the three pipeline.Outcomes.
const (
	outcomeUnauthorized = "unauthorized"
	outcomeInvalid      = "invalid"
	outcomeTooLarge     = "too_large"
	outcomeError        = "error"
)

// outcomes are the label values of webhook_requests_total, in a fixed order
// that indexes the per-source counters.
var outcomes = []string{
	string(pipeline.OutcomeAccepted),
	string(pipeline.OutcomeDuplicate),
	string(pipeline.OutcomeIgnored),
	outcomeUnauthorized,
	outcomeInvalid,
	outcomeTooLarge,
	outcomeError,
}

func outcomeIndex(o string) int {
	for i, v := range outcomes {
		if v == o {
			return i
		}
	}
	return -1
}

// parsed is what a source's parser found in an authenticated body.
type parsed struct {
	// id is the dedup key: the sender's delivery id or a body hash.
	id     string
	event  string
	events []pipeline.Event
}

// source describes one webhook endpoint.
type source struct {
	name   pipeline.Source
	secret func(Settings) string
	// authenticate runs on the raw body before any JSON is parsed, so that
	// unauthenticated input never reaches a parser.
	authenticate func(r *http.Request, s Settings, body []byte, now time.Time) error
	parse        func(r *http.Request, body []byte, received time.Time) (parsed, error)
}

// sources is indexed like pipeline.Sources, and so are the per-source arrays
// of Handler.
var sources = [...]source{
	{pipeline.SourceGitHub, func(s Settings) string { return s.GitHubSecret }, authGitHub, parseGitHub},
	{pipeline.SourceSupabase, func(s Settings) string { return s.SupabaseSecret }, authSupabase, parseSupabase},
	{pipeline.SourceMailerLite, func(s Settings) string { return s.MailerLiteSecret }, authMailerLite, parseMailerLite},
	{pipeline.SourceCloudflare, func(s Settings) string { return s.CloudflareSecret }, authCloudflare, parseCloudflare},
}

const cloudflareIndex = 3

// Handler serves POST /webhooks/{github,supabase,mailerlite,cloudflare}.
type Handler struct {
	settings     func() Settings
	ingester     Ingester
	logger       *slog.Logger
	now          func() time.Time
	onCloudflare func()

	// The metric children are resolved once so the hot path does no label
	// lookups; counts mirrors the counters for Counts.
	requests     [len(sources)][]prometheus.Counter
	counts       [len(sources)][]atomic.Uint64
	lastGauge    [len(sources)]prometheus.Gauge
	lastReceived [len(sources)]atomic.Int64 // Unix nanoseconds, 0 until the first delivery
}

// New returns a Handler and registers its metrics on opts.Registerer. Every
// source and outcome series starts at 0, so that rate() alerts on
// unauthorized requests work from the first scrape.
func New(opts Options) *Handler {
	h := &Handler{
		settings:     opts.Settings,
		ingester:     opts.Ingester,
		logger:       opts.Logger,
		now:          opts.Now,
		onCloudflare: opts.OnCloudflare,
	}
	if h.logger == nil {
		h.logger = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pipeline_exporter_webhook_requests_total",
		Help: "Webhook requests answered, by source and outcome.",
	}, []string{"source", "outcome"})
	last := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pipeline_exporter_webhook_last_received_timestamp_seconds",
		Help: "Unix time in seconds of the last authenticated webhook delivery, by source.",
	}, []string{"source"})
	opts.Registerer.MustRegister(requests, last)
	for i, src := range sources {
		h.requests[i] = make([]prometheus.Counter, len(outcomes))
		h.counts[i] = make([]atomic.Uint64, len(outcomes))
		for j, o := range outcomes {
			h.requests[i][j] = requests.WithLabelValues(string(src.name), o)
		}
		h.lastGauge[i] = last.WithLabelValues(string(src.name))
	}
	return h
}

// LastReceived returns, for each source that has had an authenticated
// delivery, when the last one arrived.
func (h *Handler) LastReceived() map[pipeline.Source]time.Time {
	m := make(map[pipeline.Source]time.Time, len(sources))
	for i, src := range sources {
		if ns := h.lastReceived[i].Load(); ns != 0 {
			m[src.name] = time.Unix(0, ns)
		}
	}
	return m
}

// Counts returns the number of requests answered per source and outcome
// since start, with every outcome present.
func (h *Handler) Counts() map[pipeline.Source]map[string]float64 {
	m := make(map[pipeline.Source]map[string]float64, len(sources))
	for i, src := range sources {
		c := make(map[string]float64, len(outcomes))
		for j, o := range outcomes {
			c[o] = float64(h.counts[i][j].Load())
		}
		m[src.name] = c
	}
	return m
}

// ServeHTTP authenticates, parses and ingests one delivery. The order of the
// checks decides the answer: unknown path or disabled source 404, wrong
// method 405, oversized body 413, bad signature 401, malformed payload 400,
// store failure 503.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, _ := strings.CutPrefix(r.URL.Path, "/webhooks/")
	i := -1
	for j, src := range sources {
		if string(src.name) == name {
			i = j
		}
	}
	if i < 0 {
		writeError(w, http.StatusNotFound, "not_found", "no webhook endpoint at "+r.URL.Path)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "webhooks accept only POST")
		return
	}
	src := &sources[i]
	s := h.settings()
	if src.secret(s) == "" {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("webhook source %s has no secret configured", src.name))
		return
	}
	received := h.now()

	limit := s.MaxBodyBytes
	if limit <= 0 {
		limit = defaultMaxBodyBytes
	}
	body, err := readBody(w, r, limit)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.reject(w, i, http.StatusRequestEntityTooLarge, "too_large", outcomeTooLarge, fmt.Sprintf("body exceeds %d bytes", limit))
			return
		}
		h.reject(w, i, http.StatusBadRequest, "bad_data", outcomeInvalid, "reading body: "+err.Error())
		return
	}
	if err := src.authenticate(r, s, body, received); err != nil {
		h.reject(w, i, http.StatusUnauthorized, "unauthorized", outcomeUnauthorized, err.Error())
		return
	}
	h.lastReceived[i].Store(received.UnixNano())
	h.lastGauge[i].Set(float64(received.UnixNano()) / 1e9)

	p, err := src.parse(r, body, received)
	if err != nil {
		h.reject(w, i, http.StatusBadRequest, "bad_data", outcomeInvalid, err.Error())
		return
	}
	d := &pipeline.Delivery{Source: src.name, ID: p.id, Event: p.event, ReceivedAt: received, Body: body}
	outcome, runIDs, err := h.ingester.Ingest(r.Context(), d, p.events)
	if err == nil && outcome != pipeline.OutcomeAccepted && outcome != pipeline.OutcomeIgnored && outcome != pipeline.OutcomeDuplicate {
		err = fmt.Errorf("ingester returned unknown outcome %q", outcome)
	}
	if err != nil {
		// Any failure to ingest is 503, never 500: the delivery was valid
		// and the sender should retry it.
		h.logger.Error("Webhook delivery not ingested", "source", src.name, "delivery", d.ID, "err", err)
		msg := "delivery could not be processed"
		if errors.Is(err, pipeline.ErrUnavailable) {
			msg = "delivery could not be stored"
		}
		h.reject(w, i, http.StatusServiceUnavailable, "unavailable", outcomeError, msg)
		return
	}
	h.count(i, outcomeIndex(string(outcome)))
	if i == cloudflareIndex && len(p.events) > 0 && outcome != pipeline.OutcomeDuplicate && h.onCloudflare != nil {
		h.onCloudflare()
	}
	// The guard saves boxing the arguments of a message that is usually
	// dropped.
	if h.logger.Enabled(r.Context(), slog.LevelDebug) {
		h.logger.Debug("Webhook delivery ingested", "source", src.name, "delivery", d.ID, "event", d.Event, "outcome", outcome, "runs", runIDs)
	}
	status := http.StatusAccepted
	if outcome == pipeline.OutcomeDuplicate {
		status = http.StatusOK
	}
	if runIDs == nil {
		runIDs = []int64{}
	}
	writeJSON(w, status, successBody{Status: "success", Data: successData{Outcome: outcome, RunIDs: runIDs}})
}

func (h *Handler) count(source, outcome int) {
	h.requests[source][outcome].Inc()
	h.counts[source][outcome].Add(1)
}

// reject counts and answers a request that was not ingested. The message
// goes to the sender, so it never contains a secret.
func (h *Handler) reject(w http.ResponseWriter, source, status int, errorType, outcome, msg string) {
	h.count(source, outcomeIndex(outcome))
	if h.logger.Enabled(context.Background(), slog.LevelDebug) {
		h.logger.Debug("Webhook request rejected", "source", sources[source].name, "outcome", outcome, "status", status, "reason", msg)
	}
	writeError(w, status, errorType, msg)
}

// readBody reads the whole body, at most limit bytes, once. The returned
// slice is the caller's: the Ingester may keep it. A declared Content-Length
// sizes the buffer, so that the usual body costs one allocation and no copy
// beyond the read itself.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	size := bytes.MinRead
	if r.ContentLength > 0 {
		// One byte more, or the read that sees EOF would grow the buffer.
		size = int(r.ContentLength) + 1
	}
	body := make([]byte, 0, size)
	rd := http.MaxBytesReader(w, r.Body, limit)
	for {
		n, err := rd.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF {
			return body, nil
		}
		if err != nil {
			return nil, err
		}
		if len(body) == cap(body) {
			body = append(body, 0)[:len(body)]
		}
	}
}

// bodyID is the dedup key of senders that give no delivery id.
func bodyID(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// secretEqual compares in constant time. Hashing first keeps the time
// independent of the lengths too.
func secretEqual(got, want string) bool {
	a := sha256.Sum256([]byte(got))
	b := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

var errNotObject = errors.New("body is not a JSON object")

// decodeObject decodes a JSON object into v, with errors that say what is
// wrong in terms a sender can act on.
func decodeObject(body []byte, v any) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errNotObject
	}
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Errorf("malformed JSON at byte %d: %w", e.Offset, e)
	}
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && e.Field != "" {
		return fmt.Errorf("field %s: JSON %s where %s was expected", e.Field, e.Value, e.Type)
	}
	return fmt.Errorf("malformed JSON: %w", err)
}

type successData struct {
	Outcome pipeline.Outcome `json:"outcome"`
	RunIDs  []int64          `json:"run_ids"`
}

type successBody struct {
	Status string      `json:"status"`
	Data   successData `json:"data"`
}

type errorBody struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, errorType, msg string) {
	writeJSON(w, status, errorBody{Status: "error", ErrorType: errorType, Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// An error here means the sender has gone; there is no one to tell.
	_ = json.NewEncoder(w).Encode(v)
}
