package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// authMailerLite checks Signature, the hex HMAC-SHA256 of the raw body keyed
// with the webhook's secret.
func authMailerLite(r *http.Request, s Settings, body []byte, _ time.Time) error {
	sig := r.Header.Get("Signature")
	if sig == "" {
		return errors.New("missing Signature header")
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return errors.New("header Signature is not hex")
	}
	mac := hmac.New(sha256.New, []byte(s.MailerLiteSecret))
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return errors.New("header Signature does not match the body")
	}
	return nil
}

type mailerLiteEvent struct {
	Type string `json:"type"`
}

// mailerLitePayload is either one event or a batch of them under "events".
type mailerLitePayload struct {
	Type   string            `json:"type"`
	Events []mailerLiteEvent `json:"events"`
}

// parseMailerLite makes one trigger per event. MailerLite gives no delivery
// id, and retries resend the same bytes, so the body hash is the dedup key.
func parseMailerLite(_ *http.Request, body []byte, received time.Time) (parsed, error) {
	var p mailerLitePayload
	if err := decodeObject(body, &p); err != nil {
		return parsed{}, err
	}
	types := []string{p.Type}
	event := p.Type
	switch {
	case p.Events != nil:
		if len(p.Events) == 0 {
			return parsed{}, errors.New("events: empty batch")
		}
		types = types[:0]
		for i, e := range p.Events {
			if e.Type == "" {
				return parsed{}, fmt.Errorf("events[%d]: missing type", i)
			}
			types = append(types, e.Type)
		}
		event = "batch"
	case p.Type == "":
		return parsed{}, errors.New(`missing type: expected an event object or an {"events": [...]} batch`)
	}
	id := bodyID(body)
	events := make([]pipeline.Event, len(types))
	for i, t := range types {
		events[i] = pipeline.TriggerEvent{
			Trigger: pipeline.Trigger{
				Source:     pipeline.SourceMailerLite,
				Event:      t,
				DeliveryID: id,
				ReceivedAt: received,
			},
			Type: t,
		}
	}
	return parsed{id: id, event: event, events: events}, nil
}
