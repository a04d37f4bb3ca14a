package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// seedFiles adds every fixture matching pattern to f.
func seedFiles(f *testing.F, pattern string, add func(name string, body []byte)) {
	names, err := fixtures.Glob(pattern)
	if err != nil || len(names) == 0 {
		f.Fatalf("no seeds for %s: %v", pattern, err)
	}
	for _, n := range names {
		add(n, fixtures.MustLoad(n))
	}
}

func FuzzParseGitHub(f *testing.F) {
	seedFiles(f, "github/*/*.json", func(name string, body []byte) {
		f.Add(path.Base(path.Dir(name)), body)
	})
	f.Add("workflow_run", []byte(`{"workflow_run":null}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
		r.Header.Set("X-GitHub-Event", event)
		r.Header.Set("X-GitHub-Delivery", "d")
		p, err := parseGitHub(r, body, testNow)
		if err != nil {
			return
		}
		for _, ev := range p.events {
			switch ev := ev.(type) {
			case pipeline.WorkflowRunEvent:
				if ev.RunID == 0 || ev.Status == "" || ev.RunAttempt < 1 {
					t.Errorf("workflow run without id, status or attempt: %+v", ev)
				}
			case pipeline.WorkflowJobEvent:
				if ev.JobID == 0 || ev.RunID == 0 || ev.Status == "" || ev.RunAttempt < 1 {
					t.Errorf("job without ids, status or attempt: %+v", ev)
				}
			case pipeline.TriggerEvent:
				if ev.Trigger.Source != pipeline.SourceGitHub || ev.Trigger.DeliveryID != "d" {
					t.Errorf("trigger = %+v", ev)
				}
			default:
				t.Errorf("unexpected event %T", ev)
			}
		}
	})
}

func FuzzParseSupabase(f *testing.F) {
	for _, s := range []string{supabaseInsert, supabaseUpdate, supabaseDelete, `{"type":"INSERT","table":""}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/supabase", nil)
		p, err := parseSupabase(r, body, testNow)
		if err != nil {
			return
		}
		ev := p.events[0].(pipeline.TriggerEvent)
		if ev.Table == "" || (ev.Type != "INSERT" && ev.Type != "UPDATE" && ev.Type != "DELETE") || p.id != bodyID(body) {
			t.Errorf("accepted %q as %+v, id %q", body, ev, p.id)
		}
	})
}

func FuzzParseMailerLite(f *testing.F) {
	seedFiles(f, "mailerlite/*.json", func(_ string, body []byte) { f.Add(body) })
	f.Add([]byte(`{"type":"campaign.sent"}`))
	f.Add([]byte(`{"events":[{"type":""}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parseMailerLite(nil, body, testNow)
		if err != nil {
			return
		}
		if len(p.events) == 0 {
			t.Errorf("accepted %q without events", body)
		}
		for _, ev := range p.events {
			if ev.(pipeline.TriggerEvent).Type == "" {
				t.Errorf("accepted %q with an untyped event", body)
			}
		}
	})
}

func FuzzParseCloudflare(f *testing.F) {
	seedFiles(f, "cloudflare/*.json", func(_ string, body []byte) { f.Add(body) })
	f.Add([]byte(`{"alert_type":"pages_event_alert"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parseCloudflare(nil, body, testNow)
		if err != nil {
			return
		}
		if len(p.events) > 0 && p.event != pagesAlertType {
			t.Errorf("%q made a trigger for %q", body, p.event)
		}
	})
}

func FuzzAuthGitHub(f *testing.F) {
	body := fixtures.MustLoad("github/workflow_job/queued.json")
	f.Add(fixtures.SignGitHub(testSettings.GitHubSecret, body), body)
	f.Add("sha1=00", body)
	f.Add("sha256=zz", []byte("x"))
	f.Fuzz(func(t *testing.T, sig string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
		r.Header.Set("X-Hub-Signature-256", sig)
		if authGitHub(r, testSettings, body, testNow) == nil && !strings.EqualFold(sig, fixtures.SignGitHub(testSettings.GitHubSecret, body)) {
			t.Errorf("signature %q accepted for %q", sig, body)
		}
	})
}

func FuzzAuthMailerLite(f *testing.F) {
	body := fixtures.MustLoad("mailerlite/classic-v2.subscriber.create.json")
	f.Add(fixtures.SignMailerLite(testSettings.MailerLiteSecret, body), body)
	f.Add("", []byte("{}"))
	f.Fuzz(func(t *testing.T, sig string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/mailerlite", nil)
		r.Header.Set("Signature", sig)
		want := fixtures.SignMailerLite(testSettings.MailerLiteSecret, body)
		if authMailerLite(r, testSettings, body, testNow) == nil && !strings.EqualFold(sig, want) {
			t.Errorf("signature %q accepted for %q", sig, body)
		}
	})
}

func FuzzVerifyStandardWebhook(f *testing.F) {
	ts := "1614265330"
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", ts, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`))
	f.Add("id", "-9223372036854775808", "v1,", []byte{})
	f.Add("id", ts, "v1a,xx v1,=== v1", []byte("{}"))
	now := time.Unix(1614265330, 0)
	f.Fuzz(func(t *testing.T, id, ts, sigs string, body []byte) {
		h := hdr("webhook-id", id, "webhook-timestamp", ts, "webhook-signature", sigs)
		if verifyStandardWebhook(h, body, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", now) != nil {
			return
		}
		if !strings.Contains(sigs, "v1,") || ts == "" || id == "" {
			t.Errorf("accepted id %q ts %q sigs %q", id, ts, sigs)
		}
	})
}

// FuzzHandler drives the whole request path with correctly authenticated
// bodies: whatever the body, the answer is a JSON 2xx or 400.
func FuzzHandler(f *testing.F) {
	for i, src := range pipeline.Sources {
		f.Add(uint8(i), validBody(src))
	}
	f.Add(uint8(0), fixtures.MustLoad("github/workflow_run/completed.json"))
	f.Add(uint8(2), []byte(`{"events":[{"type":"a"},{"type":1}]}`))
	e := newEnv(f)
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		src := pipeline.Sources[int(which)%len(pipeline.Sources)]
		e.ing.entries = e.ing.entries[:0]
		rec := e.post(src, auth(src, e.settings, body), body)
		if rec.Code != http.StatusAccepted && rec.Code != http.StatusBadRequest {
			t.Fatalf("%s %q: status %d", src, body, rec.Code)
		}
		var a answer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || (a.Status != "success" && a.Status != "error") {
			t.Fatalf("%s %q: answer %q", src, body, rec.Body)
		}
		if rec.Code == http.StatusAccepted && !bytes.Equal(e.ing.entries[len(e.ing.entries)-1].Body, body) {
			t.Fatalf("%s: stored body differs from the request body", src)
		}
	})
}
