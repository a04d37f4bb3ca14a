package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestStackAlertmanagerInhibitsAndGroups posts alerts straight to an
// Alertmanager running the project's config: while the exporter is down its
// pipeline alerts are suppressed (another exporter's are not), a low rate
// limit suppresses the poll failure it causes, and notifications are grouped
// by pipeline.
func TestStackAlertmanagerInhibitsAndGroups(t *testing.T) {
	receiver := newStackReceiver(t)
	amURL := stackAlertmanager(t, receiver.srv.URL, newStackSMTPSink(t).addr)

	type alert struct {
		Labels   map[string]string `json:"labels"`
		StartsAt time.Time         `json:"startsAt"`
	}
	post := func(alerts ...map[string]string) {
		t.Helper()
		var body []alert
		for _, l := range alerts {
			body = append(body, alert{Labels: l, StartsAt: time.Now()})
		}
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(amURL+"/api/v2/alerts", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /api/v2/alerts: %s", resp.Status)
		}
	}
	// Sources first, so that the inhibitor knows them before the targets'
	// groups are flushed.
	post(
		map[string]string{"alertname": "PipelineExporterDown", "severity": "critical", "job": "pipeline_exporter"},
		map[string]string{"alertname": "PipelineGitHubRateLimitLow", "severity": "warning", "job": "other_exporter", "instance": "other:8080"},
	)
	post(
		map[string]string{"alertname": "PipelineFailure", "severity": "critical", "job": "pipeline_exporter", "instance": "exporter:8080", "pipeline": "site"},
		map[string]string{"alertname": "PipelineFailure", "severity": "critical", "job": "other_exporter", "instance": "other:8080", "pipeline": "blog"},
		map[string]string{"alertname": "PipelineGitHubPollFailing", "severity": "warning", "job": "other_exporter", "instance": "other:8080"},
	)

	// The suppressed alerts, as Alertmanager reports them once it has
	// flushed their groups.
	suppressed := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && len(suppressed) < 2 {
		resp, err := http.Get(amURL + "/api/v2/alerts?" + url.Values{"inhibited": {"true"}, "active": {"false"}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var got []struct {
			Labels map[string]string `json:"labels"`
			Status struct {
				State       string   `json:"state"`
				InhibitedBy []string `json:"inhibitedBy"`
			} `json:"status"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range got {
			if a.Status.State == "suppressed" && len(a.Status.InhibitedBy) > 0 {
				suppressed[a.Labels["alertname"]+"/"+a.Labels["job"]] = true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := map[string]bool{"PipelineFailure/pipeline_exporter": true, "PipelineGitHubPollFailing/other_exporter": true}
	for k := range want {
		if !suppressed[k] {
			t.Errorf("%s is not suppressed; suppressed: %v", k, suppressed)
		}
	}
	for k := range suppressed {
		if !want[k] {
			t.Errorf("%s is suppressed and should not be", k)
		}
	}

	// The other exporter's failure is notified, in its pipeline's group.
	blog := func(n stackNotification, a stackAlert) bool {
		return a.Labels["alertname"] == "PipelineFailure" && a.Labels["pipeline"] == "blog"
	}
	receiver.wait(t, 0, 20*time.Second, "PipelineFailure of blog", blog)
	receiver.wait(t, 0, 20*time.Second, "PipelineExporterDown", func(_ stackNotification, a stackAlert) bool {
		return a.Labels["alertname"] == "PipelineExporterDown"
	})
	receiver.mu.Lock()
	defer receiver.mu.Unlock()
	for _, n := range receiver.got {
		for _, a := range n.Alerts {
			if blog(n, a) && (len(n.GroupLabels) != 1 || n.GroupLabels["pipeline"] != "blog") {
				t.Errorf("blog's failure notified in group %v, want {pipeline=blog}", n.GroupLabels)
			}
			if key := a.Labels["alertname"] + "/" + a.Labels["job"]; want[key] {
				t.Errorf("suppressed alert %s was notified", key)
			}
		}
	}
}
