package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Standard Webhooks (https://www.standardwebhooks.com/) headers and replay
// window.
const (
	headerWebhookID        = "webhook-id"
	headerWebhookTimestamp = "webhook-timestamp"
	headerWebhookSignature = "webhook-signature"
	standardTolerance      = 5 * time.Minute
)

// authSupabase passes when either method verifies. Supabase itself does not
// sign Database Webhooks, so the usual proof is a shared secret in a header
// the user added to the webhook; senders that sign use Standard Webhooks.
func authSupabase(r *http.Request, s Settings, body []byte, now time.Time) error {
	headerErr := checkSharedSecret(r, s)
	if headerErr == nil {
		return nil
	}
	if r.Header.Get(headerWebhookSignature) == "" {
		return headerErr
	}
	return verifyStandardWebhook(r.Header, body, s.SupabaseSecret, now)
}

func checkSharedSecret(r *http.Request, s Settings) error {
	if s.SupabaseHeader != "" {
		got := r.Header.Get(s.SupabaseHeader)
		if got == "" {
			return fmt.Errorf("missing %s header", s.SupabaseHeader)
		}
		if !secretEqual(got, s.SupabaseSecret) {
			return fmt.Errorf("wrong secret in %s header", s.SupabaseHeader)
		}
		return nil
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return errors.New("missing Authorization header")
	}
	// The scheme name is case-insensitive (RFC 9110, section 11.1).
	if len(auth) < 7 || !strings.EqualFold(auth[:7], "Bearer ") {
		return errors.New("header Authorization is not a Bearer token")
	}
	if !secretEqual(auth[7:], s.SupabaseSecret) {
		return errors.New("wrong Bearer token")
	}
	return nil
}

// verifyStandardWebhook checks webhook-signature, a space-separated list of
// "v1,<base64 HMAC-SHA256>" entries over "id.timestamp.body"; one match
// suffices, so senders can rotate keys. The key is the secret itself, or
// its base64 decoding when it has the whsec_ prefix.
func verifyStandardWebhook(h http.Header, body []byte, secret string, now time.Time) error {
	id, ts, sigs := h.Get(headerWebhookID), h.Get(headerWebhookTimestamp), h.Get(headerWebhookSignature)
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature header")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp is not a Unix time in seconds")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > standardTolerance || d < -standardTolerance {
		return errors.New("webhook-timestamp outside tolerance")
	}
	key := []byte(secret)
	if enc, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if key, err = base64.StdEncoding.DecodeString(enc); err != nil {
			return errors.New("the configured whsec_ secret is not valid base64")
		}
	}
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, id)
	mac.Write([]byte{'.'})
	io.WriteString(mac, ts)
	mac.Write([]byte{'.'})
	mac.Write(body)
	want := mac.Sum(nil)
	for _, entry := range strings.Fields(sigs) {
		version, enc, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(enc)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no webhook-signature entry matches the body")
}

// supabasePayload is the documented Database Webhook body; record and
// old_record are not needed to start a pipeline.
type supabasePayload struct {
	Type   string `json:"type"`
	Table  string `json:"table"`
	Schema string `json:"schema"`
}

func parseSupabase(r *http.Request, body []byte, received time.Time) (parsed, error) {
	var p supabasePayload
	if err := decodeObject(body, &p); err != nil {
		return parsed{}, err
	}
	switch p.Type {
	case "INSERT", "UPDATE", "DELETE":
	case "":
		return parsed{}, errors.New("missing type (INSERT, UPDATE or DELETE)")
	default:
		return parsed{}, fmt.Errorf("type %q is not INSERT, UPDATE or DELETE", p.Type)
	}
	if p.Table == "" {
		return parsed{}, errors.New("missing table")
	}
	id := r.Header.Get(headerWebhookID)
	if id == "" {
		id = bodyID(body)
	}
	return parsed{id: id, event: p.Type, events: []pipeline.Event{pipeline.TriggerEvent{
		Trigger: pipeline.Trigger{
			Source:     pipeline.SourceSupabase,
			Event:      p.Type,
			DeliveryID: id,
			ReceivedAt: received,
		},
		Type:  p.Type,
		Table: p.Table,
	}}}, nil
}
