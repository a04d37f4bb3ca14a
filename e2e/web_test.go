package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sseEvent is one event (or heartbeat comment) of /api/events.
type sseEvent struct {
	event, id, data, comment string
}

// eventStream follows /api/events in the background.
type eventStream struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
}

// openEvents connects to /api/events; lastEventID, when set, is sent as
// Last-Event-ID the way a reconnecting EventSource does.
func (e *exporter) openEvents(lastEventID string) *eventStream {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), http.MethodGet, e.url+"/api/events", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		e.t.Fatalf("GET /api/events = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &eventStream{t: e.t, resp: resp, events: make(chan sseEvent, 100)}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				s.events <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "event":
					ev.event = v
				case "id":
					ev.id = v
				case "data":
					ev.data = v
				}
			}
		}
	}()
	return s
}

// next returns the next run event.
func (s *eventStream) next() (sseEvent, runJSON) {
	s.t.Helper()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatal("event stream ended")
			}
			if ev.comment == "heartbeat" {
				continue
			}
			if ev.event != "run" {
				s.t.Fatalf("event = %+v, want a run event", ev)
			}
			var r runJSON
			if err := json.Unmarshal([]byte(ev.data), &r); err != nil {
				s.t.Fatalf("event data %q: %v", ev.data, err)
			}
			return ev, r
		case <-time.After(10 * time.Second):
			s.t.Fatal("no event within 10s")
		}
	}
}

// untilStatus reads events until run id reaches status and returns the
// last one read.
func (s *eventStream) untilStatus(id int64, status string) sseEvent {
	s.t.Helper()
	for {
		ev, r := s.next()
		if r.ID == id && r.Status == status {
			return ev
		}
	}
}

// quiet fails if a run event arrives within d.
func (s *eventStream) quiet(d time.Duration) {
	s.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return
			}
			if ev.comment != "heartbeat" {
				s.t.Fatalf("unexpected event %+v", ev)
			}
		case <-deadline:
			return
		}
	}
}

// ended waits until the server ends the stream.
func (s *eventStream) ended(within time.Duration) {
	s.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-s.events:
			if !ok {
				return
			}
		case <-deadline:
			s.t.Fatalf("event stream still open after %v", within)
		}
	}
}

// TestPagesAndLiveEvents follows a publish the way a person and a script
// would: the landing page and the run page after signed webhooks, and
// /api/events live, resumed with Last-Event-ID, also across a restart.
func TestPagesAndLiveEvents(t *testing.T) {
	cfg := writeConfig(t, coreConfig)
	data := filepath.Join(t.TempDir(), "data")
	const external = "http://ops.example.test/pipelines/"
	args := []string{"--storage.retention=0", "--web.external-url=" + external, "--web.max-event-streams=12"}
	e := startExporter(t, cfg, data, args...)

	live := e.openEvents("")
	deliveries := exampleRun(t, exampleRunID, "success")
	e.mustPost(deliveries[0], http.StatusAccepted) // requested
	first, r := live.next()
	if r.Pipeline != "site" || r.Status != "running" || r.GitHub == nil || r.GitHub.RunID != exampleRunID {
		t.Fatalf("first event run = %+v", r)
	}
	runID := r.ID
	firstID, err := strconv.ParseInt(first.id, 10, 64)
	if err != nil || firstID <= 0 {
		t.Fatalf("event id %q is not a change sequence", first.id)
	}

	// The landing page lists the run and embeds where its live rows start.
	page := e.get("/")
	body := string(page.body)
	for _, want := range []string{
		fmt.Sprintf(`<tr id="run-%d"`, runID),
		`<td>site</td>`,
		`<td class="status st-running">running</td>`,
		`data-events="api/events?last_event_id=` + first.id + `"`,
		`<a href="metrics">`,
	} {
		if page.code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET / = %d, lacks %s", page.code, want)
		}
	}
	if strings.Contains(body, "debug/pprof") {
		t.Error("landing page links to pprof, which the exporter does not serve")
	}

	for _, d := range deliveries[1:] { // job, completed
		e.mustPost(d, http.StatusAccepted)
	}
	done := live.untilStatus(runID, "success")
	doneID, _ := strconv.ParseInt(done.id, 10, 64)
	if doneID <= firstID {
		t.Fatalf("event ids %d then %d do not increase", firstID, doneID)
	}

	// The event carries the run exactly as the API returns it.
	var api struct {
		Data map[string]any `json:"data"`
	}
	e.get(fmt.Sprintf("/api/pipeline-runs/%d", runID)).decode(t, &api)
	var fromEvent map[string]any
	if err := json.Unmarshal([]byte(done.data), &fromEvent); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromEvent, api.Data) {
		t.Errorf("event data\n%s\ndiffers from the API's\n%v", done.data, api.Data)
	}
	if want := fmt.Sprintf("%sruns/%d", external, runID); fromEvent["page_url"] != want {
		t.Errorf("page_url = %v, want %s", fromEvent["page_url"], want)
	}

	// The run page: stages, link to GitHub, the trigger.
	runPage := e.get(fmt.Sprintf("/runs/%d", runID))
	body = string(runPage.body)
	for _, want := range []string{
		`data-stage="trigger"`, `data-stage="linters"`,
		`<td class="status st-success">success</td>`,
		`href="https://github.com/`,
		fmt.Sprintf(`<a href="../api/pipeline-runs/%d">`, runID),
	} {
		if runPage.code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET /runs/%d = %d, lacks %s", runID, runPage.code, want)
		}
	}
	for _, path := range []string{"/runs/999999", "/runs/abc", "/runs/0", "/runs/-5"} {
		a := e.get(path)
		if a.code != http.StatusNotFound || !strings.Contains(string(a.body), "<html") {
			t.Errorf("GET %s = %d %.80s, want an HTML 404", path, a.code, a.body)
		}
	}

	// A resume sends the run's latest state once, then nothing.
	resumed := e.openEvents(first.id)
	if ev, r := resumed.next(); ev.id != done.id || r.ID != runID || r.Status != "success" {
		t.Fatalf("resumed event = %s %+v, want %s success", ev.id, r, done.id)
	}
	resumed.quiet(300 * time.Millisecond)
	// An id past the newest starts from the newest, like no id: nothing
	// is replayed.
	future := e.openEvents(strconv.FormatInt(doneID+1000, 10))
	future.quiet(300 * time.Millisecond)

	// Three streams are open from 127.0.0.1, a quarter of the twelve: a
	// fourth from the same address is refused, one from another address
	// is served.
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(e.url + "/api/events")
	if err != nil {
		t.Fatalf("fourth stream: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("fourth stream = %d, want 503", resp.StatusCode)
	}
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")},
	}).DialContext}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = other.Do(req)
	if err != nil {
		t.Fatalf("stream from 127.0.0.2: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream from 127.0.0.2 = %d, want 200", resp.StatusCode)
	}
	// Streams are not in the request-duration histogram.
	if m := string(e.get("/metrics").body); strings.Contains(m, `handler="events"`) || !strings.Contains(m, "pipeline_exporter_event_streams 4") {
		t.Errorf("metrics: streams in the latency histogram or not counted")
	}

	// Shutdown ends the open streams instead of waiting on them.
	start := time.Now()
	if code := e.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	live.ended(time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown with open streams took %v", d)
	}

	// After a restart the same ids resume without a gap.
	e = startExporter(t, cfg, data, args...)
	after := e.openEvents(first.id)
	if ev, _ := after.next(); ev.id != done.id {
		t.Fatalf("event after restart = %s, want %s", ev.id, done.id)
	}
	e.openEvents(done.id).quiet(300 * time.Millisecond)
}
