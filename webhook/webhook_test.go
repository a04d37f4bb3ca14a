package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// testNow is the fake clock of every test.
var testNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

var testSettings = Settings{
	GitHubSecret:     "gh-secret",
	SupabaseSecret:   "sb-secret",
	MailerLiteSecret: "ml-secret",
	CloudflareSecret: "cf-secret",
	MaxBodyBytes:     1 << 20,
}

// fakeIngester records the entries it is given. Without a configured
// result it answers like the Applier: accepted when there are events,
// ignored (with a reason) when not.
type fakeIngester struct {
	mu      sync.Mutex
	entries []pipeline.Entry
	result  pipeline.Result
	err     error
}

func (f *fakeIngester) Ingest(_ context.Context, e *pipeline.Entry) (pipeline.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, *e)
	switch {
	case f.err != nil:
		return pipeline.Result{}, f.err
	case f.result.Outcome != "":
		return f.result, nil
	case len(e.Events) == 0:
		return pipeline.Result{Outcome: pipeline.OutcomeIgnored, Reason: "no events"}, nil
	}
	return pipeline.Result{Outcome: pipeline.OutcomeAccepted}, nil
}

type testEnv struct {
	h          *Handler
	ing        *fakeIngester
	reg        *prometheus.Registry
	settings   Settings
	cloudflare int
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	e := &testEnv{ing: &fakeIngester{}, reg: prometheus.NewRegistry(), settings: testSettings}
	e.h = New(Options{
		Settings:     func() Settings { return e.settings },
		Ingester:     e.ing,
		Registerer:   e.reg,
		Now:          func() time.Time { return testNow },
		OnCloudflare: func() { e.cloudflare++ },
	})
	return e
}

func (e *testEnv) post(source pipeline.Source, header http.Header, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/webhooks/"+string(source), bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

type answer struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		Outcome pipeline.Outcome `json:"outcome"`
		RunIDs  []int64          `json:"run_ids"`
		Reason  string           `json:"reason"`
	} `json:"data"`
}

func decodeAnswer(t *testing.T, rec *httptest.ResponseRecorder) answer {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var a answer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("answer %q is not JSON: %v", rec.Body.String(), err)
	}
	return a
}

// editJSON decodes body, lets edit change it and encodes it again.
func editJSON(t testing.TB, body []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func merge(hs ...http.Header) http.Header {
	out := http.Header{}
	for _, h := range hs {
		for k, v := range h {
			out[k] = v
		}
	}
	return out
}

// auth returns headers that authenticate body for the source under s, plus
// the GitHub event headers a GitHub delivery needs.
func auth(source pipeline.Source, s Settings, body []byte) http.Header {
	switch source {
	case pipeline.SourceGitHub:
		return hdr("X-Hub-Signature-256", fixtures.SignGitHub(s.GitHubSecret, body), "X-GitHub-Event", "workflow_job", "X-GitHub-Delivery", "d-1")
	case pipeline.SourceSupabase:
		return hdr("Authorization", "Bearer "+s.SupabaseSecret)
	case pipeline.SourceMailerLite:
		return hdr("Signature", fixtures.SignMailerLite(s.MailerLiteSecret, body))
	case pipeline.SourceCloudflare:
		return hdr("cf-webhook-auth", s.CloudflareSecret)
	}
	panic("unknown source " + source)
}

const supabaseInsert = `{"type":"INSERT","table":"posts","schema":"public","record":{"id":1,"title":"Hello"},"old_record":null}`

// validBody is a well-formed delivery of each source.
func validBody(source pipeline.Source) []byte {
	switch source {
	case pipeline.SourceGitHub:
		return fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	case pipeline.SourceSupabase:
		return []byte(supabaseInsert)
	case pipeline.SourceMailerLite:
		return fixtures.MustLoad("mailerlite/classic-v2.subscriber.create.json")
	case pipeline.SourceCloudflare:
		return fixtures.MustLoad("cloudflare/test-message.json")
	}
	panic("unknown source " + source)
}

func requestsTotal(e *testEnv, source pipeline.Source, outcome string) float64 {
	return testutil.ToFloat64(e.h.requests.WithLabelValues(string(source), outcome))
}

func totalRequests(e *testEnv) float64 {
	var n float64
	for _, m := range e.h.Counts() {
		for _, v := range m {
			n += v
		}
	}
	return n
}

func TestRejections(t *testing.T) {
	type tc struct {
		name     string
		source   pipeline.Source
		settings func(*Settings)
		header   func(s Settings, body []byte) http.Header
		body     []byte
		chunked  bool
		ingErr   error
		status   int
		errType  string
		errSub   string
		outcome  string // "" when the request is not counted
	}
	ghJob := fixtures.MustLoad("github/workflow_job/completed.success.with-organization.json")
	ghRunAt := func(field, at string) []byte {
		return fixtures.MustEdit(fixtures.MustLoad("github/workflow_run/completed.json"), map[string]any{field: at})
	}
	ghSigned := func(event, delivery string) func(Settings, []byte) http.Header {
		return func(s Settings, body []byte) http.Header {
			return hdr("X-Hub-Signature-256", fixtures.SignGitHub(s.GitHubSecret, body), "X-GitHub-Event", event, "X-GitHub-Delivery", delivery)
		}
	}
	valid := func(src pipeline.Source) func(Settings, []byte) http.Header {
		return func(s Settings, body []byte) http.Header { return auth(src, s, body) }
	}
	none := func(Settings, []byte) http.Header { return http.Header{} }
	small := func(s *Settings) { s.MaxBodyBytes = 64 }
	stale := func(delta time.Duration) func(s Settings, body []byte) http.Header {
		return func(s Settings, body []byte) http.Header {
			ts := fmt.Sprint(testNow.Add(delta).Unix())
			return hdr("webhook-id", "msg_1", "webhook-timestamp", ts, "webhook-signature", fixtures.SignStandardWebhook([]byte(s.SupabaseSecret), "msg_1", ts, body))
		}
	}
	cases := []tc{
		// GitHub
		{name: "github wrong secret", source: "github", body: ghJob, header: func(_ Settings, b []byte) http.Header {
			return hdr("X-Hub-Signature-256", fixtures.SignGitHub("other", b), "X-GitHub-Event", "workflow_job", "X-GitHub-Delivery", "d")
		}, status: 401, errType: "unauthorized", errSub: "does not match", outcome: "unauthorized"},
		{name: "github missing signature", source: "github", body: ghJob, header: func(Settings, []byte) http.Header {
			return hdr("X-GitHub-Event", "workflow_job", "X-GitHub-Delivery", "d")
		}, status: 401, errType: "unauthorized", errSub: "missing X-Hub-Signature-256", outcome: "unauthorized"},
		{name: "github SHA-1 only", source: "github", body: ghJob, header: func(s Settings, b []byte) http.Header {
			return hdr("X-Hub-Signature", "sha1="+hex.EncodeToString(hmacSHA1([]byte(s.GitHubSecret), b)), "X-GitHub-Event", "workflow_job", "X-GitHub-Delivery", "d")
		}, status: 401, errType: "unauthorized", errSub: "SHA-1", outcome: "unauthorized"},
		{name: "github sha512 tag in the sha256 header", source: "github", body: ghJob, header: func(s Settings, b []byte) http.Header {
			m := hmac.New(sha512.New, []byte(s.GitHubSecret))
			m.Write(b)
			return hdr("X-Hub-Signature-256", "sha512="+hex.EncodeToString(m.Sum(nil)), "X-GitHub-Event", "workflow_job", "X-GitHub-Delivery", "d")
		}, status: 401, errType: "unauthorized", errSub: "sha256=", outcome: "unauthorized"},
		{name: "github missing event header", source: "github", body: ghJob, header: func(s Settings, b []byte) http.Header {
			return hdr("X-Hub-Signature-256", fixtures.SignGitHub(s.GitHubSecret, b), "X-GitHub-Delivery", "d")
		}, status: 400, errType: "bad_data", errSub: "missing X-GitHub-Event", outcome: "invalid"},
		{name: "github missing delivery header", source: "github", body: ghJob, header: func(s Settings, b []byte) http.Header {
			return hdr("X-Hub-Signature-256", fixtures.SignGitHub(s.GitHubSecret, b), "X-GitHub-Event", "workflow_job")
		}, status: 400, errType: "bad_data", errSub: "missing X-GitHub-Delivery", outcome: "invalid"},
		{name: "github truncated JSON", source: "github", body: ghJob[:200], header: ghSigned("workflow_job", "d"),
			status: 400, errType: "bad_data", errSub: "workflow_job payload: malformed JSON", outcome: "invalid"},
		{name: "github wrong field type", source: "github", body: []byte(`{"workflow_job":{"id":"7"}}`), header: ghSigned("workflow_job", "d"),
			status: 400, errType: "bad_data", errSub: "field workflow_job.id", outcome: "invalid"},
		{name: "github workflow_run without run", source: "github", body: []byte(`{"action":"completed"}`), header: ghSigned("workflow_run", "d"),
			status: 400, errType: "bad_data", errSub: "missing workflow_run object", outcome: "invalid"},
		{name: "github unknown event not JSON", source: "github", body: []byte(`hello`), header: ghSigned("star", "d"),
			status: 400, errType: "bad_data", errSub: "star payload: body is not a JSON object", outcome: "invalid"},
		{name: "github form-encoded", source: "github", body: []byte(`payload=%7B%7D`), header: func(s Settings, b []byte) http.Header {
			return merge(ghSigned("ping", "d")(s, b), hdr("Content-Type", "application/x-www-form-urlencoded"))
		}, status: 400, errType: "bad_data", errSub: "application/json", outcome: "invalid"},
		{name: "github oversized", source: "github", settings: small, body: ghJob, header: ghSigned("workflow_job", "d"),
			status: 413, errType: "too_large", errSub: "64 bytes", outcome: "too_large"},
		{name: "github oversized without Content-Length", source: "github", settings: small, chunked: true, body: ghJob, header: ghSigned("workflow_job", "d"),
			status: 413, errType: "too_large", errSub: "64 bytes", outcome: "too_large"},
		{name: "github disabled", source: "github", settings: func(s *Settings) { s.GitHubSecret = "" }, body: ghJob, header: ghSigned("workflow_job", "d"),
			status: 404, errType: "not_found", errSub: "github"},
		{name: "github store unavailable", source: "github", body: ghJob, header: ghSigned("workflow_job", "d"),
			ingErr: fmt.Errorf("insert delivery: %w", pipeline.ErrUnavailable), status: 503, errType: "unavailable", errSub: "could not be stored", outcome: "error"},
		{name: "github run in year 9999", source: "github", body: ghRunAt("workflow_run.updated_at", "9999-12-31T23:59:59Z"), header: ghSigned("workflow_run", "d"),
			status: 400, errType: "bad_data", errSub: "field workflow_run.updated_at: time 9999-12-31T23:59:59Z is before 2000-01-01 or more than a year ahead", outcome: "invalid"},
		{name: "github run in year 1", source: "github", body: ghRunAt("workflow_run.created_at", "0001-01-01T00:00:00Z"), header: ghSigned("workflow_run", "d"),
			status: 400, errType: "bad_data", errSub: "field workflow_run.created_at", outcome: "invalid"},
		{name: "github job completed in 1999", source: "github", body: fixtures.MustEdit(ghJob, map[string]any{"workflow_job.completed_at": "1999-12-31T23:59:59Z"}), header: ghSigned("workflow_job", "d"),
			status: 400, errType: "bad_data", errSub: "field workflow_job.completed_at", outcome: "invalid"},
		{name: "github other ingest error", source: "github", body: ghJob, header: ghSigned("workflow_job", "d"),
			ingErr: errors.New("boom"), status: 503, errType: "unavailable", errSub: "could not be processed", outcome: "error"},

		// Supabase
		{name: "supabase wrong bearer", source: "supabase", body: []byte(supabaseInsert), header: func(Settings, []byte) http.Header {
			return hdr("Authorization", "Bearer nope")
		}, status: 401, errType: "unauthorized", errSub: "wrong Bearer token", outcome: "unauthorized"},
		{name: "supabase missing auth", source: "supabase", body: []byte(supabaseInsert), header: none,
			status: 401, errType: "unauthorized", errSub: "missing Authorization", outcome: "unauthorized"},
		{name: "supabase basic auth", source: "supabase", body: []byte(supabaseInsert), header: func(s Settings, _ []byte) http.Header {
			return hdr("Authorization", "Basic "+s.SupabaseSecret)
		}, status: 401, errType: "unauthorized", errSub: "not a Bearer token", outcome: "unauthorized"},
		{name: "supabase bearer when a header is configured", source: "supabase", settings: func(s *Settings) { s.SupabaseHeader = "X-Webhook-Secret" },
			body: []byte(supabaseInsert), header: valid("supabase"),
			status: 401, errType: "unauthorized", errSub: "missing X-Webhook-Secret", outcome: "unauthorized"},
		{name: "supabase stale standard webhook", source: "supabase", body: []byte(supabaseInsert), header: stale(-5*time.Minute - time.Second),
			status: 401, errType: "unauthorized", errSub: "timestamp outside tolerance", outcome: "unauthorized"},
		{name: "supabase future standard webhook", source: "supabase", body: []byte(supabaseInsert), header: stale(5*time.Minute + time.Second),
			status: 401, errType: "unauthorized", errSub: "timestamp outside tolerance", outcome: "unauthorized"},
		{name: "supabase wrong standard signature", source: "supabase", body: []byte(supabaseInsert), header: func(s Settings, b []byte) http.Header {
			ts := fmt.Sprint(testNow.Unix())
			return hdr("webhook-id", "msg_1", "webhook-timestamp", ts, "webhook-signature", fixtures.SignStandardWebhook([]byte("other"), "msg_1", ts, b))
		}, status: 401, errType: "unauthorized", errSub: "no webhook-signature entry matches", outcome: "unauthorized"},
		{name: "supabase unknown type", source: "supabase", body: []byte(`{"type":"TRUNCATE","table":"posts","schema":"public","record":null,"old_record":null}`), header: valid("supabase"),
			status: 400, errType: "bad_data", errSub: `type "TRUNCATE"`, outcome: "invalid"},
		{name: "supabase missing table", source: "supabase", body: []byte(`{"type":"INSERT","schema":"public","record":{},"old_record":null}`), header: valid("supabase"),
			status: 400, errType: "bad_data", errSub: "missing table", outcome: "invalid"},
		{name: "supabase table not a string", source: "supabase", body: []byte(`{"type":"INSERT","table":7}`), header: valid("supabase"),
			status: 400, errType: "bad_data", errSub: "field table", outcome: "invalid"},
		{name: "supabase oversized", source: "supabase", settings: small, body: bytes.Repeat([]byte(" "), 65), header: valid("supabase"),
			status: 413, errType: "too_large", outcome: "too_large"},
		{name: "supabase disabled", source: "supabase", settings: func(s *Settings) { s.SupabaseSecret = "" }, body: []byte(supabaseInsert), header: valid("supabase"),
			status: 404, errType: "not_found"},
		{name: "supabase store unavailable", source: "supabase", body: []byte(supabaseInsert), header: valid("supabase"),
			ingErr: pipeline.ErrUnavailable, status: 503, errType: "unavailable", outcome: "error"},

		// MailerLite
		{name: "mailerlite wrong signature", source: "mailerlite", body: validBody("mailerlite"), header: func(_ Settings, b []byte) http.Header {
			return hdr("Signature", fixtures.SignMailerLite("other", b))
		}, status: 401, errType: "unauthorized", errSub: "does not match", outcome: "unauthorized"},
		{name: "mailerlite missing signature", source: "mailerlite", body: validBody("mailerlite"), header: none,
			status: 401, errType: "unauthorized", errSub: "missing Signature", outcome: "unauthorized"},
		{name: "mailerlite classic base64 signature", source: "mailerlite", body: validBody("mailerlite"), header: func(s Settings, b []byte) http.Header {
			raw, _ := hex.DecodeString(fixtures.SignMailerLite(s.MailerLiteSecret, b))
			return hdr("Signature", base64.StdEncoding.EncodeToString(raw))
		}, status: 401, errType: "unauthorized", errSub: "not hex", outcome: "unauthorized"},
		{name: "mailerlite malformed", source: "mailerlite", body: []byte(`{"events": [`), header: valid("mailerlite"),
			status: 400, errType: "bad_data", errSub: "malformed JSON", outcome: "invalid"},
		{name: "mailerlite empty batch", source: "mailerlite", body: []byte(`{"events": []}`), header: valid("mailerlite"),
			status: 400, errType: "bad_data", errSub: "empty batch", outcome: "invalid"},
		{name: "mailerlite event without type", source: "mailerlite", body: []byte(`{"events": [{"type":"subscriber.create"},{"account_id":1}]}`), header: valid("mailerlite"),
			status: 400, errType: "bad_data", errSub: "events[1]: missing type", outcome: "invalid"},
		{name: "mailerlite object without type", source: "mailerlite", body: []byte(`{"data":{}}`), header: valid("mailerlite"),
			status: 400, errType: "bad_data", errSub: "missing type", outcome: "invalid"},
		{name: "mailerlite oversized", source: "mailerlite", settings: small, body: validBody("mailerlite"), header: valid("mailerlite"),
			status: 413, errType: "too_large", outcome: "too_large"},
		{name: "mailerlite disabled", source: "mailerlite", settings: func(s *Settings) { s.MailerLiteSecret = "" }, body: validBody("mailerlite"), header: valid("mailerlite"),
			status: 404, errType: "not_found"},
		{name: "mailerlite store unavailable", source: "mailerlite", body: validBody("mailerlite"), header: valid("mailerlite"),
			ingErr: pipeline.ErrUnavailable, status: 503, errType: "unavailable", outcome: "error"},

		// Cloudflare
		{name: "cloudflare wrong secret", source: "cloudflare", body: validBody("cloudflare"), header: func(Settings, []byte) http.Header {
			return hdr("cf-webhook-auth", "cf-secreT")
		}, status: 401, errType: "unauthorized", errSub: "wrong secret", outcome: "unauthorized"},
		{name: "cloudflare missing secret", source: "cloudflare", body: validBody("cloudflare"), header: none,
			status: 401, errType: "unauthorized", errSub: "missing cf-webhook-auth", outcome: "unauthorized"},
		{name: "cloudflare not an object", source: "cloudflare", body: []byte(`["text"]`), header: valid("cloudflare"),
			status: 400, errType: "bad_data", errSub: "not a JSON object", outcome: "invalid"},
		{name: "cloudflare oversized", source: "cloudflare", settings: small, body: validBody("cloudflare"), header: valid("cloudflare"),
			status: 413, errType: "too_large", outcome: "too_large"},
		{name: "cloudflare disabled", source: "cloudflare", settings: func(s *Settings) { s.CloudflareSecret = "" }, body: validBody("cloudflare"), header: valid("cloudflare"),
			status: 404, errType: "not_found"},
		{name: "cloudflare store unavailable", source: "cloudflare", body: validBody("cloudflare"), header: valid("cloudflare"),
			ingErr: pipeline.ErrUnavailable, status: 503, errType: "unavailable", outcome: "error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if c.settings != nil {
				c.settings(&e.settings)
			}
			e.ing.err = c.ingErr
			req := httptest.NewRequest(http.MethodPost, "/webhooks/"+string(c.source), bytes.NewReader(c.body))
			if c.chunked {
				req.ContentLength = -1
			}
			for k, v := range c.header(e.settings, c.body) {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)

			if rec.Code != c.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, c.status, rec.Body)
			}
			a := decodeAnswer(t, rec)
			if a.Status != "error" || a.ErrorType != c.errType || !strings.Contains(a.Error, c.errSub) {
				t.Errorf("answer = %+v, want errorType %q and error containing %q", a, c.errType, c.errSub)
			}
			for _, secret := range []string{testSettings.GitHubSecret, testSettings.SupabaseSecret, testSettings.MailerLiteSecret, testSettings.CloudflareSecret} {
				if strings.Contains(rec.Body.String(), secret) {
					t.Errorf("answer %s reveals a secret", rec.Body)
				}
			}
			wantIngest := 0
			if c.ingErr != nil {
				wantIngest = 1
			}
			if len(e.ing.entries) != wantIngest {
				t.Errorf("Ingest called %d times, want %d", len(e.ing.entries), wantIngest)
			}
			wantTotal := 0.0
			if c.outcome != "" {
				wantTotal = 1
				if got := requestsTotal(e, c.source, c.outcome); got != 1 {
					t.Errorf("requests_total{source=%q,outcome=%q} = %v, want 1", c.source, c.outcome, got)
				}
			}
			if got := totalRequests(e); got != wantTotal {
				t.Errorf("requests counted = %v, want %v", got, wantTotal)
			}
		})
	}
}

func hmacSHA1(key, msg []byte) []byte {
	m := hmac.New(sha1.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

func TestRouting(t *testing.T) {
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/webhooks/github", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPut, "/webhooks/cloudflare", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPost, "/webhooks/gitlab", http.StatusNotFound, ""},
		{http.MethodGet, "/webhooks/gitlab", http.StatusNotFound, ""},
		{http.MethodPost, "/webhooks/", http.StatusNotFound, ""},
		{http.MethodPost, "/webhooks/github/extra", http.StatusNotFound, ""},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			e := newEnv(t)
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
			if rec.Code != c.status {
				t.Errorf("status = %d, want %d", rec.Code, c.status)
			}
			if got := rec.Header().Get("Allow"); got != c.allow {
				t.Errorf("Allow = %q, want %q", got, c.allow)
			}
			if decodeAnswer(t, rec).Status != "error" {
				t.Errorf("answer %s is not an error", rec.Body)
			}
			if totalRequests(e) != 0 {
				t.Errorf("a routing error was counted as a webhook request")
			}
		})
	}
}

// TestOutcomes checks the 2xx answers of every source for each result the
// Ingester may report, and the entry it is given.
func TestOutcomes(t *testing.T) {
	cases := []struct {
		result pipeline.Result
		status int
		raw    string // the answer's data, exactly
	}{
		{pipeline.Result{Outcome: pipeline.OutcomeAccepted, RunIDs: []int64{7, 9}}, http.StatusAccepted, `{"outcome":"accepted","run_ids":[7,9]}`},
		{pipeline.Result{Outcome: pipeline.OutcomeIgnored, Reason: "no pipeline for workflow test.yml in repository octo-org/octo-repo"}, http.StatusAccepted,
			`{"outcome":"ignored","run_ids":[],"reason":"no pipeline for workflow test.yml in repository octo-org/octo-repo"}`},
		{pipeline.Result{Outcome: pipeline.OutcomeQueued}, http.StatusAccepted, `{"outcome":"queued","run_ids":[]}`},
		{pipeline.Result{Outcome: pipeline.OutcomeDuplicate, RunIDs: []int64{3}}, http.StatusOK, `{"outcome":"duplicate","run_ids":[3]}`},
	}
	for _, src := range pipeline.Sources {
		for _, c := range cases {
			t.Run(string(src)+"/"+string(c.result.Outcome), func(t *testing.T) {
				e := newEnv(t)
				e.ing.result = c.result
				body := validBody(src)
				rec := e.post(src, auth(src, e.settings, body), body)
				if rec.Code != c.status {
					t.Fatalf("status = %d, want %d; body %s", rec.Code, c.status, rec.Body)
				}
				if want := `{"status":"success","data":` + c.raw + "}\n"; rec.Body.String() != want {
					t.Errorf("answer:\n got %s\nwant %s", rec.Body, want)
				}
				if got := requestsTotal(e, src, string(c.result.Outcome)); got != 1 {
					t.Errorf("requests_total{outcome=%q} = %v, want 1", c.result.Outcome, got)
				}
				if len(e.ing.entries) != 1 {
					t.Fatalf("Ingest called %d times, want 1", len(e.ing.entries))
				}
				en := e.ing.entries[0]
				if en.Source != src || !en.ReceivedAt.Equal(testNow) || !bytes.Equal(en.Body, body) || en.DeliveryID == "" || en.Kind == "" || en.Seq != 0 {
					t.Errorf("entry = %+v, want source %s, received %v, the exact body, a delivery id, a kind and no sequence", en, src, testNow)
				}
			})
		}
	}
}

// TestUnknownOutcome shows that an Ingester answer the handler does not
// know is a 503, not a 2xx the sender would trust.
func TestUnknownOutcome(t *testing.T) {
	e := newEnv(t)
	e.ing.result = pipeline.Result{Outcome: "maybe"}
	body := validBody(pipeline.SourceSupabase)
	rec := e.post(pipeline.SourceSupabase, auth(pipeline.SourceSupabase, e.settings, body), body)
	if rec.Code != http.StatusServiceUnavailable || decodeAnswer(t, rec).ErrorType != "unavailable" {
		t.Errorf("status = %d, body %s; want 503 unavailable", rec.Code, rec.Body)
	}
	if got := requestsTotal(e, pipeline.SourceSupabase, "error"); got != 1 {
		t.Errorf("requests_total{outcome=error} = %v, want 1", got)
	}
}

// TestSettingsReadPerRequest shows that a rotated secret applies to the next
// delivery without a new Handler.
func TestSettingsReadPerRequest(t *testing.T) {
	e := newEnv(t)
	body := validBody(pipeline.SourceCloudflare)
	old := auth(pipeline.SourceCloudflare, e.settings, body)
	if rec := e.post(pipeline.SourceCloudflare, old, body); rec.Code != http.StatusAccepted {
		t.Fatalf("before rotation: status %d", rec.Code)
	}
	e.settings.CloudflareSecret = "rotated"
	if rec := e.post(pipeline.SourceCloudflare, old, body); rec.Code != http.StatusUnauthorized {
		t.Errorf("old secret after rotation: status %d, want 401", rec.Code)
	}
	if rec := e.post(pipeline.SourceCloudflare, auth(pipeline.SourceCloudflare, e.settings, body), body); rec.Code != http.StatusAccepted {
		t.Errorf("new secret after rotation: status %d, want 202", rec.Code)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	if want := []string{"accepted", "duplicate", "ignored", "queued", "unauthorized", "invalid", "too_large", "error"}; !slices.Equal(outcomes, want) {
		t.Errorf("outcomes = %v, want %v", outcomes, want)
	}
	if n := testutil.CollectAndCount(e.reg, "pipeline_exporter_webhook_requests_total"); n != len(pipeline.Sources)*len(outcomes) {
		t.Errorf("pre-initialised request series = %d, want %d", n, len(pipeline.Sources)*len(outcomes))
	}
	if n := testutil.CollectAndCount(e.reg, "pipeline_exporter_webhook_last_received_timestamp_seconds"); n != len(pipeline.Sources) {
		t.Errorf("last-received series = %d, want %d", n, len(pipeline.Sources))
	}
	if problems, err := testutil.GatherAndLint(e.reg); err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if len(e.h.LastReceived()) != 0 {
		t.Errorf("LastReceived before any delivery = %v, want empty", e.h.LastReceived())
	}

	body := validBody(pipeline.SourceGitHub)
	e.post(pipeline.SourceGitHub, auth(pipeline.SourceGitHub, e.settings, body), body)
	e.post(pipeline.SourceGitHub, hdr("X-Hub-Signature-256", "sha256=00"), body)
	e.post(pipeline.SourceGitHub, hdr("X-Hub-Signature-256", "sha256=00"), body)
	e.post(pipeline.SourceMailerLite, hdr("Signature", "00"), body)
	// Authenticated but invalid: counts as received.
	sb := []byte(`{"type":"INSERT"}`)
	e.post(pipeline.SourceSupabase, auth(pipeline.SourceSupabase, e.settings, sb), sb)

	want := `
# HELP pipeline_exporter_webhook_last_received_timestamp_seconds Unix time in seconds of the last authenticated webhook delivery, by source.
# TYPE pipeline_exporter_webhook_last_received_timestamp_seconds gauge
pipeline_exporter_webhook_last_received_timestamp_seconds{source="cloudflare"} 0
pipeline_exporter_webhook_last_received_timestamp_seconds{source="github"} 1.7956944e+09
pipeline_exporter_webhook_last_received_timestamp_seconds{source="mailerlite"} 0
pipeline_exporter_webhook_last_received_timestamp_seconds{source="supabase"} 1.7956944e+09
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "pipeline_exporter_webhook_last_received_timestamp_seconds"); err != nil {
		t.Error(err)
	}
	checks := []struct {
		source  pipeline.Source
		outcome string
		want    float64
	}{
		{"github", "accepted", 1},
		{"github", "unauthorized", 2},
		{"mailerlite", "unauthorized", 1},
		{"supabase", "invalid", 1},
		{"supabase", "accepted", 0},
		{"cloudflare", "unauthorized", 0},
	}
	counts := e.h.Counts()
	for _, c := range checks {
		if got := requestsTotal(e, c.source, c.outcome); got != c.want {
			t.Errorf("requests_total{source=%q,outcome=%q} = %v, want %v", c.source, c.outcome, got, c.want)
		}
		if got := counts[c.source][c.outcome]; got != c.want {
			t.Errorf("Counts()[%s][%s] = %v, want %v", c.source, c.outcome, got, c.want)
		}
	}
	if len(counts) != len(pipeline.Sources) || len(counts["cloudflare"]) != len(outcomes) {
		t.Errorf("Counts() = %v, want every source with every outcome", counts)
	}
	last := e.h.LastReceived()
	if len(last) != 2 || !last["github"].Equal(testNow) || !last["supabase"].Equal(testNow) {
		t.Errorf("LastReceived() = %v, want github and supabase at %v", last, testNow)
	}
}
