package webhook

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// The Supabase bodies follow the documented payload types exactly
// (InsertPayload, UpdatePayload, DeletePayload): record is null on DELETE,
// old_record null on INSERT.
const (
	supabaseUpdate = `{"type":"UPDATE","table":"posts","schema":"public","record":{"id":1,"title":"Hello again"},"old_record":{"id":1,"title":"Hello"}}`
	supabaseDelete = `{"type":"DELETE","table":"posts","schema":"public","record":null,"old_record":{"id":1,"title":"Hello again"}}`
)

func TestSupabase(t *testing.T) {
	const whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	whsecKey, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(whsec, "whsec_"))
	now := fmt.Sprint(testNow.Unix())
	standard := func(key []byte, sigs ...string) func([]byte) http.Header {
		return func(body []byte) http.Header {
			all := append(sigs, fixtures.SignStandardWebhook(key, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now, body))
			return hdr("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "webhook-timestamp", now, "webhook-signature", strings.Join(all, " "))
		}
	}
	cases := []struct {
		name     string
		body     string
		settings func(*Settings)
		header   func(body []byte) http.Header
		wantID   string // "" means the body hash
	}{
		{name: "INSERT with Bearer", body: supabaseInsert, header: func([]byte) http.Header {
			return hdr("Authorization", "Bearer sb-secret")
		}},
		{name: "UPDATE with lower-case bearer scheme", body: supabaseUpdate, header: func([]byte) http.Header {
			return hdr("Authorization", "bearer sb-secret")
		}},
		{name: "DELETE with a configured header", body: supabaseDelete, settings: func(s *Settings) { s.SupabaseHeader = "X-Webhook-Secret" },
			header: func([]byte) http.Header { return hdr("X-Webhook-Secret", "sb-secret") }},
		{name: "Standard Webhooks with a whsec_ secret", body: supabaseInsert, settings: func(s *Settings) { s.SupabaseSecret = whsec },
			header: standard(whsecKey), wantID: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"},
		{name: "Standard Webhooks with a plain secret", body: supabaseUpdate, header: standard([]byte("sb-secret")), wantID: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"},
		{name: "Standard Webhooks among rotated and asymmetric signatures", body: supabaseDelete,
			header: standard([]byte("sb-secret"), "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==", "garbage"),
			wantID: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"},
		{name: "wrong Bearer but a valid signature", body: supabaseInsert, header: func(b []byte) http.Header {
			return merge(standard([]byte("sb-secret"))(b), hdr("Authorization", "Bearer wrong"))
		}, wantID: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"},
		{name: "valid Bearer and a stale signature", body: supabaseInsert, header: func(b []byte) http.Header {
			return hdr("Authorization", "Bearer sb-secret", "webhook-id", "msg_1", "webhook-timestamp", "1", "webhook-signature", "v1,AAAA")
		}, wantID: "msg_1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if c.settings != nil {
				c.settings(&e.settings)
			}
			body := []byte(c.body)
			rec := e.post(pipeline.SourceSupabase, c.header(body), body)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202; body %s", rec.Code, rec.Body)
			}
			var doc struct{ Type, Table string }
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			wantID := c.wantID
			if wantID == "" {
				wantID = bodyID(body)
			}
			call := e.ing.entries[0]
			if call.DeliveryID != wantID || call.Kind != doc.Type {
				t.Errorf("delivery id/event = %q/%q, want %q/%q", call.DeliveryID, call.Kind, wantID, doc.Type)
			}
			want := []pipeline.Event{pipeline.TriggerEvent{
				Trigger: pipeline.Trigger{Source: pipeline.SourceSupabase, Event: doc.Type, DeliveryID: wantID, ReceivedAt: testNow},
				Type:    doc.Type,
				Table:   "posts",
			}}
			if !reflect.DeepEqual(call.Events, want) {
				t.Errorf("events:\n got %+v\nwant %+v", call.Events, want)
			}
		})
	}
}

// TestStandardWebhookTestVector checks the verifier against the signature
// the Standard Webhooks reference library is tested with, and the edges of
// the five-minute tolerance.
func TestStandardWebhookTestVector(t *testing.T) {
	var v struct {
		Secret    string `json:"secret"`
		ID        string `json:"webhook-id"`
		Timestamp string `json:"webhook-timestamp"`
		Payload   string `json:"payload"`
		Signature string `json:"webhook-signature"`
	}
	if err := json.Unmarshal(fixtures.MustLoad("standard-webhooks/test-vector.json"), &v); err != nil {
		t.Fatal(err)
	}
	signed := time.Unix(1614265330, 0)
	cases := []struct {
		name      string
		now       time.Time
		payload   string
		signature string
		errSub    string // "" = verifies
	}{
		{name: "published vector", now: signed, payload: v.Payload, signature: v.Signature},
		{name: "five minutes later", now: signed.Add(5 * time.Minute), payload: v.Payload, signature: v.Signature},
		{name: "five minutes earlier", now: signed.Add(-5 * time.Minute), payload: v.Payload, signature: v.Signature},
		{name: "stale", now: signed.Add(5*time.Minute + time.Second), payload: v.Payload, signature: v.Signature, errSub: "outside tolerance"},
		{name: "from the future", now: signed.Add(-5*time.Minute - time.Second), payload: v.Payload, signature: v.Signature, errSub: "outside tolerance"},
		{name: "payload changed", now: signed, payload: v.Payload + "\n", signature: v.Signature, errSub: "no webhook-signature entry matches"},
		{name: "wrong version tag", now: signed, payload: v.Payload, signature: "v2" + strings.TrimPrefix(v.Signature, "v1"), errSub: "no webhook-signature entry matches"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hdr("webhook-id", v.ID, "webhook-timestamp", v.Timestamp, "webhook-signature", c.signature)
			err := verifyStandardWebhook(h, []byte(c.payload), v.Secret, c.now)
			if c.errSub == "" && err != nil || c.errSub != "" && (err == nil || !strings.Contains(err.Error(), c.errSub)) {
				t.Errorf("verify = %v, want error containing %q", err, c.errSub)
			}
		})
	}
	t.Run("undecodable whsec_ secret", func(t *testing.T) {
		h := hdr("webhook-id", v.ID, "webhook-timestamp", v.Timestamp, "webhook-signature", v.Signature)
		if err := verifyStandardWebhook(h, []byte(v.Payload), "whsec_!!", signed); err == nil || strings.Contains(err.Error(), "!!") {
			t.Errorf("verify = %v, want an error that does not repeat the secret", err)
		}
	})
}

func TestMailerLite(t *testing.T) {
	classic := fixtures.MustLoad("mailerlite/classic-v2.subscriber.create.json")
	// The current API publishes no example body. A single-event delivery is
	// the Classic fixture's event object on its own, with the type of an
	// event the current API documents.
	single := editJSON(t, classic, func(m map[string]any) {
		ev := m["events"].([]any)[0].(map[string]any)
		ev["type"] = "campaign.sent"
		for k := range m {
			delete(m, k)
		}
		for k, v := range ev {
			m[k] = v
		}
	})
	// Two events in one batch, as MailerLite batches each minute.
	batch := editJSON(t, classic, func(m map[string]any) {
		evs := m["events"].([]any)
		second := map[string]any{}
		for k, v := range evs[0].(map[string]any) {
			second[k] = v
		}
		second["type"] = "subscriber.update"
		m["events"] = append(evs, second)
	})
	cases := []struct {
		name      string
		body      []byte
		wantEvent string
		wantTypes []string
	}{
		{"classic batch fixture", classic, "batch", []string{"subscriber.create"}},
		{"single event", single, "campaign.sent", []string{"campaign.sent"}},
		{"batch of two", batch, "batch", []string{"subscriber.create", "subscriber.update"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			rec := e.post(pipeline.SourceMailerLite, auth(pipeline.SourceMailerLite, e.settings, c.body), c.body)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202; body %s", rec.Code, rec.Body)
			}
			call := e.ing.entries[0]
			id := bodyID(c.body)
			if call.DeliveryID != id || call.Kind != c.wantEvent {
				t.Errorf("delivery id/event = %q/%q, want %q/%q", call.DeliveryID, call.Kind, id, c.wantEvent)
			}
			var want []pipeline.Event
			for _, typ := range c.wantTypes {
				want = append(want, pipeline.TriggerEvent{
					Trigger: pipeline.Trigger{Source: pipeline.SourceMailerLite, Event: typ, DeliveryID: id, ReceivedAt: testNow},
					Type:    typ,
				})
			}
			if !reflect.DeepEqual(call.Events, want) {
				t.Errorf("events:\n got %+v\nwant %+v", call.Events, want)
			}
		})
	}
}

func TestCloudflare(t *testing.T) {
	ddos := fixtures.MustLoad("cloudflare/advanced_ddos_attack_l4_alert.json")
	// Cloudflare documents no pages_event_alert example; the documented
	// envelope with that alert_type stands in for one.
	pages := editJSON(t, ddos, func(m map[string]any) { m["alert_type"] = "pages_event_alert" })
	cases := []struct {
		name       string
		body       []byte
		outcome    pipeline.Outcome // what the fake Ingester reports; "" = its default
		wantEvent  string
		wantAnswer pipeline.Outcome
		trigger    bool
		wantPolls  int
	}{
		{name: "Save and Test message", body: fixtures.MustLoad("cloudflare/test-message.json"), wantEvent: "notification", wantAnswer: pipeline.OutcomeIgnored},
		{name: "other alert type", body: ddos, wantEvent: "advanced_ddos_attack_l4_alert", wantAnswer: pipeline.OutcomeIgnored},
		{name: "pages alert", body: pages, wantEvent: "pages_event_alert", wantAnswer: pipeline.OutcomeAccepted, trigger: true, wantPolls: 1},
		{name: "pages alert no pipeline wants", body: pages, outcome: pipeline.OutcomeIgnored, wantEvent: "pages_event_alert", wantAnswer: pipeline.OutcomeIgnored, trigger: true, wantPolls: 1},
		{name: "pages alert redelivered", body: pages, outcome: pipeline.OutcomeDuplicate, wantEvent: "pages_event_alert", wantAnswer: pipeline.OutcomeDuplicate, trigger: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.ing.result = pipeline.Result{Outcome: c.outcome}
			rec := e.post(pipeline.SourceCloudflare, auth(pipeline.SourceCloudflare, e.settings, c.body), c.body)
			if rec.Code/100 != 2 {
				t.Fatalf("status = %d, want 2xx; body %s", rec.Code, rec.Body)
			}
			if a := decodeAnswer(t, rec); a.Data.Outcome != c.wantAnswer {
				t.Errorf("outcome = %q, want %q", a.Data.Outcome, c.wantAnswer)
			}
			call := e.ing.entries[0]
			id := bodyID(c.body)
			if call.DeliveryID != id || call.Kind != c.wantEvent {
				t.Errorf("delivery id/event = %q/%q, want %q/%q", call.DeliveryID, call.Kind, id, c.wantEvent)
			}
			var want []pipeline.Event
			if c.trigger {
				want = []pipeline.Event{pipeline.TriggerEvent{
					Trigger: pipeline.Trigger{Source: pipeline.SourceCloudflare, Event: "pages_event_alert", DeliveryID: id, ReceivedAt: testNow},
					Type:    "pages_event_alert",
				}}
			}
			if !reflect.DeepEqual(call.Events, want) {
				t.Errorf("events:\n got %+v\nwant %+v", call.Events, want)
			}
			if e.cloudflare != c.wantPolls {
				t.Errorf("OnCloudflare called %d times, want %d", e.cloudflare, c.wantPolls)
			}
		})
	}
}
