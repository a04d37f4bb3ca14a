package pipeline

import (
	"reflect"
	"testing"
	"time"
)

func TestEventsRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	events := []Event{
		runEvent(t, "completed"),
		jobEvent(t, "in_progress"),
		TriggerEvent{Trigger: Trigger{Source: SourceSupabase, Event: "INSERT", DeliveryID: "d1", ReceivedAt: at}, Table: "posts", Type: "INSERT"},
		PagesDeploymentEvent{Project: "site", Deployment: PagesDeployment{DeploymentID: "x", Stages: []PagesStage{{Name: "build", Status: "active", StartedOn: &at}}}, CreatedOn: at},
		VerifyResultEvent{RunID: 3, Success: true, StartedAt: at, FinishedAt: at.Add(time.Second), ResponseSeconds: 0.2, Attempts: 1},
		VerifyResultEvent{RunID: 4, StartedAt: at, FinishedAt: at, URL: "https://example.com/", StatusCode: 200, Build: "5d6e7f8", Served: "1a2b3c4", ServedRunID: 3, Error: "site serves 1a2b3c4 (run 3), not 5d6e7f8"},
		RecheckResultEvent{RunID: 3, Success: true, CheckedAt: at, URL: "https://example.com/", StatusCode: 200, ResponseSeconds: 0.1, Served: "1a2b3c4", ServedRunID: 3},
	}
	data, err := MarshalEvents(events)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalEvents(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, events) {
		t.Fatalf("round trip:\n got %#v\nwant %#v", got, events)
	}
	for _, bad := range []string{`{`, `[{"type":"nope","event":{}}]`, `[{"type":"trigger","event":[]}]`} {
		if _, err := UnmarshalEvents([]byte(bad)); err == nil {
			t.Errorf("UnmarshalEvents(%s) succeeded", bad)
		}
	}
}
