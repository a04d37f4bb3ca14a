package pipeline

import (
	"encoding/json"
	"fmt"
)

// Event type tags in the delivery log. They are stored, so they never
// change once released.
const (
	tagWorkflowRun     = "workflow_run"
	tagWorkflowJob     = "workflow_job"
	tagTrigger         = "trigger"
	tagPagesDeployment = "pages_deployment"
	tagVerifyResult    = "verify_result"
	tagRecheckResult   = "recheck_result"
)

// taggedEvent is one Event as the delivery log stores it.
type taggedEvent struct {
	Type  string          `json:"type"`
	Event json.RawMessage `json:"event"`
}

// MarshalEvents encodes events for the delivery log.
func MarshalEvents(events []Event) ([]byte, error) {
	tagged := make([]taggedEvent, len(events))
	for i, ev := range events {
		var tag string
		switch ev.(type) {
		case WorkflowRunEvent:
			tag = tagWorkflowRun
		case WorkflowJobEvent:
			tag = tagWorkflowJob
		case TriggerEvent:
			tag = tagTrigger
		case PagesDeploymentEvent:
			tag = tagPagesDeployment
		case VerifyResultEvent:
			tag = tagVerifyResult
		case RecheckResultEvent:
			tag = tagRecheckResult
		default:
			return nil, fmt.Errorf("encoding event %d: unknown type %T", i, ev)
		}
		body, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("encoding event %d (%s): %w", i, tag, err)
		}
		tagged[i] = taggedEvent{Type: tag, Event: body}
	}
	return json.Marshal(tagged)
}

// UnmarshalEvents decodes what MarshalEvents encoded.
func UnmarshalEvents(data []byte) ([]Event, error) {
	var tagged []taggedEvent
	if err := json.Unmarshal(data, &tagged); err != nil {
		return nil, fmt.Errorf("decoding events: %w", err)
	}
	events := make([]Event, len(tagged))
	for i, te := range tagged {
		var err error
		switch te.Type {
		case tagWorkflowRun:
			events[i], err = decodeAs[WorkflowRunEvent](te.Event)
		case tagWorkflowJob:
			events[i], err = decodeAs[WorkflowJobEvent](te.Event)
		case tagTrigger:
			events[i], err = decodeAs[TriggerEvent](te.Event)
		case tagPagesDeployment:
			events[i], err = decodeAs[PagesDeploymentEvent](te.Event)
		case tagVerifyResult:
			events[i], err = decodeAs[VerifyResultEvent](te.Event)
		case tagRecheckResult:
			events[i], err = decodeAs[RecheckResultEvent](te.Event)
		default:
			err = fmt.Errorf("unknown type %q", te.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("decoding event %d: %w", i, err)
		}
	}
	return events, nil
}

func decodeAs[E Event](data json.RawMessage) (Event, error) {
	var e E
	err := json.Unmarshal(data, &e)
	return e, err
}
