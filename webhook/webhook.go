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
	"slices"
	"strings"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Ingester makes an entry durable in the delivery log and applies its
// events. instance.Instance implements it (through the leader's Applier,
// or the shared log of several replicas); pipeline.Applier does too, with
// one process. An error wrapping pipeline.ErrUnavailable means the entry
// could not be stored.
type Ingester interface {
	Ingest(ctx context.Context, e *pipeline.Entry) (pipeline.Result, error)
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

// Outcome label values beyond the pipeline.Outcomes.
const (
	outcomeUnauthorized = "unauthorized"
	outcomeInvalid      = "invalid"
	outcomeTooLarge     = "too_large"
	outcomeError        = "error"
)

// ingestOutcomes are the outcomes an Ingester may report.
var ingestOutcomes = []string{
	string(pipeline.OutcomeAccepted),
	string(pipeline.OutcomeDuplicate),
	string(pipeline.OutcomeIgnored),
	string(pipeline.OutcomeQueued),
}

// outcomes are the label values of webhook_requests_total.
var outcomes = append(slices.Clone(ingestOutcomes), outcomeUnauthorized, outcomeInvalid, outcomeTooLarge, outcomeError)

// parsed is what a source's parser found in an authenticated body.
type parsed struct {
	// id is the dedup key: the sender's delivery id or a body hash.
	id     string
	event  string
	events []pipeline.Event
}

// source describes one webhook endpoint.
type source struct {
	secret func(Settings) string
	// authenticate runs on the raw body before any JSON is parsed, so that
	// unauthenticated input never reaches a parser.
	authenticate func(r *http.Request, s Settings, body []byte, now time.Time) error
	// parse decodes an authenticated body; now is the handler's clock, which
	// bounds the payload's timestamps.
	parse func(r *http.Request, body []byte, now time.Time) (parsed, error)
}

var sources = map[pipeline.Source]source{
	pipeline.SourceGitHub:     {func(s Settings) string { return s.GitHubSecret }, authGitHub, parseGitHub},
	pipeline.SourceSupabase:   {func(s Settings) string { return s.SupabaseSecret }, authSupabase, parseSupabase},
	pipeline.SourceMailerLite: {func(s Settings) string { return s.MailerLiteSecret }, authMailerLite, parseMailerLite},
	pipeline.SourceCloudflare: {func(s Settings) string { return s.CloudflareSecret }, authCloudflare, parseCloudflare},
}

// Handler serves POST /webhooks/{source}. Mount it on "/webhooks/".
type Handler struct {
	mux          *http.ServeMux
	settings     func() Settings
	ingester     Ingester
	logger       *slog.Logger
	now          func() time.Time
	onCloudflare func()

	requests *prometheus.CounterVec
	last     *prometheus.GaugeVec
	// lastReceived holds, per source, the Unix nanoseconds of its last
	// authenticated delivery; /api/status shows them as times, which the
	// gauge's float seconds cannot give exactly.
	lastReceived map[pipeline.Source]*atomic.Int64
}

// New returns a Handler and registers its metrics on opts.Registerer. Every
// source and outcome series starts at 0, so that rate() alerts on
// unauthorized requests work from the first scrape.
func New(opts Options) *Handler {
	h := &Handler{
		mux:          http.NewServeMux(),
		settings:     opts.Settings,
		ingester:     opts.Ingester,
		logger:       opts.Logger,
		now:          opts.Now,
		onCloudflare: opts.OnCloudflare,
		lastReceived: map[pipeline.Source]*atomic.Int64{},
	}
	if h.logger == nil {
		h.logger = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pipeline_exporter_webhook_requests_total",
		Help: "Webhook requests answered, by source and outcome.",
	}, []string{"source", "outcome"})
	h.last = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pipeline_exporter_webhook_last_received_timestamp_seconds",
		Help: "Unix time in seconds of the last authenticated webhook delivery, by source.",
	}, []string{"source"})
	opts.Registerer.MustRegister(h.requests, h.last)
	for _, src := range pipeline.Sources {
		for _, o := range outcomes {
			h.requests.WithLabelValues(string(src), o)
		}
		h.last.WithLabelValues(string(src))
		h.lastReceived[src] = new(atomic.Int64)
	}
	h.mux.HandleFunc("POST /webhooks/{source}", h.receive)
	h.mux.HandleFunc("/webhooks/{source}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := sources[pipeline.Source(r.PathValue("source"))]; !ok {
			notFound(w, r)
			return
		}
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "webhooks accept only POST")
	})
	h.mux.HandleFunc("/webhooks/", notFound)
	return h
}

// LastReceived returns, for each source that has had an authenticated
// delivery, when the last one arrived.
func (h *Handler) LastReceived() map[pipeline.Source]time.Time {
	m := make(map[pipeline.Source]time.Time, len(h.lastReceived))
	for src, ns := range h.lastReceived {
		if ns := ns.Load(); ns != 0 {
			m[src] = time.Unix(0, ns)
		}
	}
	return m
}

// Counts returns the number of requests answered per source and outcome
// since start, with every outcome present. It reads the request counters
// themselves.
func (h *Handler) Counts() map[pipeline.Source]map[string]float64 {
	m := make(map[pipeline.Source]map[string]float64, len(pipeline.Sources))
	for _, src := range pipeline.Sources {
		c := make(map[string]float64, len(outcomes))
		for _, o := range outcomes {
			var metric dto.Metric
			// Write fails only for invalid metrics; a counter is not one.
			_ = h.requests.WithLabelValues(string(src), o).Write(&metric)
			c[o] = metric.GetCounter().GetValue()
		}
		m[src] = c
	}
	return m
}

// ServeHTTP routes /webhooks/{source}: an unknown source, or one with no
// secret, is 404, another method than POST 405.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// receive authenticates, parses and ingests one delivery. The order of the
// checks decides the answer: oversized body 413, bad signature 401,
// malformed payload 400, store failure 503.
func (h *Handler) receive(w http.ResponseWriter, r *http.Request) {
	name := pipeline.Source(r.PathValue("source"))
	src, ok := sources[name]
	if !ok {
		notFound(w, r)
		return
	}
	s := h.settings()
	if src.secret(s) == "" {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("webhook source %s has no secret configured", name))
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
			h.reject(w, name, http.StatusRequestEntityTooLarge, "too_large", outcomeTooLarge, fmt.Sprintf("body exceeds %d bytes", limit))
			return
		}
		h.reject(w, name, http.StatusBadRequest, "bad_data", outcomeInvalid, "reading body: "+err.Error())
		return
	}
	if err := src.authenticate(r, s, body, received); err != nil {
		h.reject(w, name, http.StatusUnauthorized, "unauthorized", outcomeUnauthorized, err.Error())
		return
	}
	h.lastReceived[name].Store(received.UnixNano())
	h.last.WithLabelValues(string(name)).Set(float64(received.UnixNano()) / 1e9)

	p, err := src.parse(r, body, received)
	if err != nil {
		h.reject(w, name, http.StatusBadRequest, "bad_data", outcomeInvalid, err.Error())
		return
	}
	entry := &pipeline.Entry{
		Source:     name,
		DeliveryID: p.id,
		Kind:       p.event,
		ReceivedAt: received,
		Body:       body,
		Events:     p.events,
	}
	res, err := h.ingester.Ingest(r.Context(), entry)
	if err == nil && !slices.Contains(ingestOutcomes, string(res.Outcome)) {
		err = fmt.Errorf("ingester returned unknown outcome %q", res.Outcome)
	}
	if err != nil {
		// Any failure to ingest is 503, never 500: the delivery was valid
		// and the sender should retry it.
		msg := "delivery could not be processed"
		if errors.Is(err, pipeline.ErrUnavailable) {
			// The store and the Applier log when it stops and starts
			// working, once each; not once per delivery.
			h.logger.Debug("Webhook delivery not ingested", "source", name, "delivery", p.id, "err", err)
			msg = "delivery could not be stored"
		} else {
			h.logger.Error("Webhook delivery not ingested", "source", name, "delivery", p.id, "err", err)
		}
		h.reject(w, name, http.StatusServiceUnavailable, "unavailable", outcomeError, msg)
		return
	}
	h.requests.WithLabelValues(string(name), string(res.Outcome)).Inc()
	if name == pipeline.SourceCloudflare && len(p.events) > 0 && res.Outcome != pipeline.OutcomeDuplicate && h.onCloudflare != nil {
		h.onCloudflare()
	}
	h.logger.Debug("Webhook delivery ingested", "source", name, "delivery", p.id, "event", p.event, "outcome", res.Outcome, "runs", res.RunIDs, "reason", res.Reason)
	status := http.StatusAccepted
	if res.Outcome == pipeline.OutcomeDuplicate {
		status = http.StatusOK
	}
	data := successData{Outcome: res.Outcome, RunIDs: res.RunIDs, Reason: res.Reason}
	if data.RunIDs == nil {
		data.RunIDs = []int64{}
	}
	writeJSON(w, status, successBody{Status: "success", Data: data})
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "not_found", "no webhook endpoint at "+r.URL.Path)
}

// reject counts and answers a request that was not ingested. The message
// goes to the sender, so it never contains a secret.
func (h *Handler) reject(w http.ResponseWriter, name pipeline.Source, status int, errorType, outcome, msg string) {
	h.requests.WithLabelValues(string(name), outcome).Inc()
	h.logger.Debug("Webhook request rejected", "source", name, "outcome", outcome, "status", status, "reason", msg)
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
// wrong in terms a sender can act on. It decodes with encoding/json's v2
// upstream: BenchmarkDecodeWorkflowJob/handler went from 47 µs with
// encoding/json to 20 µs a delivery, which the handler spends on every
// webhook.
func decodeObject(body []byte, v any) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errNotObject
	}
	// Read as encoding/json reads them (and so GitHub's own Go clients):
	// names match without regard to case, and a repeated name is not an
	// error, the last one counts. Not keeping every object's names to
	// refuse repeats halves the time again (20.6 → 11.2 µs).
	err := jsonv2.Unmarshal(body, v, jsonv2.MatchCaseInsensitiveNames(true), jsontext.AllowDuplicateNames(true))
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		return fmt.Errorf("malformed JSON at byte %d: %w", e.ByteOffset, e.Err)
	}
	if e, ok := errors.AsType[*jsonv2.SemanticError](err); ok && e.JSONPointer != "" && e.GoType != nil {
		field := strings.ReplaceAll(strings.TrimPrefix(string(e.JSONPointer), "/"), "/", ".")
		return fmt.Errorf("field %s: JSON %s where %s was expected", field, jsonKind(e.JSONKind), e.GoType)
	}
	return fmt.Errorf("malformed JSON: %w", err)
}

// jsonKind names a JSON kind as a sender would.
func jsonKind(k jsontext.Kind) string {
	switch k {
	case '"':
		return "string"
	case '0':
		return "number"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return "value"
}

type successData struct {
	Outcome pipeline.Outcome `json:"outcome"`
	RunIDs  []int64          `json:"run_ids"`
	Reason  string           `json:"reason,omitempty"`
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
