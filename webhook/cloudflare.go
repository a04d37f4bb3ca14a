package webhook

import (
	"errors"
	"net/http"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// pagesAlertType is the alert_type of Cloudflare Pages deployment
// notifications; other notifications (and the test message Cloudflare sends
// when the webhook is saved) are stored and ignored.
const pagesAlertType = "pages_event_alert"

// authCloudflare checks cf-webhook-auth, which carries the secret verbatim.
func authCloudflare(r *http.Request, s Settings, _ []byte, _ time.Time) error {
	got := r.Header.Get("cf-webhook-auth")
	if got == "" {
		return errors.New("missing cf-webhook-auth header")
	}
	if !secretEqual(got, s.CloudflareSecret) {
		return errors.New("wrong secret in cf-webhook-auth header")
	}
	return nil
}

// cloudflarePayload holds the one documented field the exporter uses; see
// https://developers.cloudflare.com/notifications/reference/webhook-payload-schema/.
// The data object of Pages alerts has no published shape, so it is not read:
// the Pages poller fetches the deployment itself.
type cloudflarePayload struct {
	AlertType string `json:"alert_type"`
}

// parseCloudflare makes a trigger of a Pages notification. Cloudflare gives
// no delivery id, so the body hash is the dedup key.
func parseCloudflare(_ *http.Request, body []byte, received time.Time) (parsed, error) {
	var p cloudflarePayload
	if err := decodeObject(body, &p); err != nil {
		return parsed{}, err
	}
	id := bodyID(body)
	event := p.AlertType
	if event == "" {
		event = "notification"
	}
	out := parsed{id: id, event: event}
	if p.AlertType == pagesAlertType {
		out.events = []pipeline.Event{pipeline.TriggerEvent{
			Trigger: pipeline.Trigger{
				Source:     pipeline.SourceCloudflare,
				Event:      p.AlertType,
				DeliveryID: id,
				ReceivedAt: received,
			},
			Type: p.AlertType,
		}}
	}
	return out, nil
}
