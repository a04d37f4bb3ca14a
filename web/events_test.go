package web

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipeline-exporter/pipeline_exporter/api"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// sseEvent is one event or comment read from a stream.
type sseEvent struct {
	event, id, data, comment string
}

// sseClient reads a stream in the background.
type sseClient struct {
	resp   *http.Response
	events chan sseEvent
}

func openStream(t *testing.T, srv *httptest.Server, path string, header http.Header) *sseClient {
	t.Helper()
	return openStreamWith(t, srv, srv.Client(), path, header)
}

// clientFrom returns a client of srv whose connections come from ip, a
// loopback address other than 127.0.0.1 for a second client.
func clientFrom(srv *httptest.Server, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	return &http.Client{Transport: tr}
}

func openStreamWith(t *testing.T, srv *httptest.Server, client *http.Client, path string, header http.Header) *sseClient {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	c := &sseClient{resp: resp, events: make(chan sseEvent, 100)}
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				c.events <- ev
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
	return c
}

// next returns the next event that is not a heartbeat.
func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.comment == "heartbeat" {
				continue
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
		}
	}
}

// quiet fails if an event other than a heartbeat arrives within d.
func (c *sseClient) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-c.events:
			if ok && ev.comment != "heartbeat" {
				t.Fatalf("unexpected event %+v", ev)
			}
			if !ok {
				return
			}
		case <-deadline:
			return
		}
	}
}

// ended waits for the server to end the stream.
func (c *sseClient) ended(t *testing.T) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-c.events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("stream still open after 5s")
		}
	}
}

func (e sseEvent) run(t *testing.T) api.Run {
	t.Helper()
	if e.event != "run" {
		t.Fatalf("event = %+v, want a run event", e)
	}
	var v struct {
		pipeline.Run
		PageURL string `json:"page_url"`
	}
	if err := json.Unmarshal([]byte(e.data), &v); err != nil {
		t.Fatalf("data %q: %v", e.data, err)
	}
	return api.Run{Run: &v.Run, PageURL: v.PageURL}
}

func newTestWeb(t *testing.T, h pipeline.History, o Options) (*Web, *httptest.Server) {
	t.Helper()
	o.History = h
	w := New(o)
	mux := http.NewServeMux()
	mux.Handle("GET /api/events", w.Events())
	mux.Handle("/", w.Pages())
	srv := httptest.NewUnstartedServer(mux)
	// The server's write timeout would cut streams that do not clear it.
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(func() {
		w.Close()
		srv.Close()
	})
	return w, srv
}

// TestEventsResume checks what a stream sends first: one event per run
// changed after the client's last event id, in change order, the run's
// latest state only; a client with no id, or an id that is not a
// non-negative number no newer than the newest change, starts at the
// newest change.
func TestEventsResume(t *testing.T) {
	h := newMemHistory()
	h.commit(testRun(1, pipeline.StatusPending)) // 1
	h.commit(testRun(2, pipeline.StatusPending)) // 2
	h.commit(testRun(1, pipeline.StatusRunning)) // 3
	h.commit(testRun(3, pipeline.StatusPending)) // 4
	h.commit(testRun(2, pipeline.StatusFailed))  // 5
	h.commit(testRun(1, pipeline.StatusSuccess)) // 6
	_, srv := newTestWeb(t, h, Options{})

	all := []string{"4:3:pending", "5:2:failed", "6:1:success"}
	for _, tc := range []struct {
		name   string
		path   string
		header string
		want   []string // id:run:status
	}{
		{name: "no id", path: "/api/events"},
		{name: "header", path: "/api/events", header: "4", want: all[1:]},
		{name: "query", path: "/api/events?last_event_id=5", want: all[2:]},
		{name: "header wins over query", path: "/api/events?last_event_id=1", header: "5", want: all[2:]},
		{name: "intermediate id", path: "/api/events?last_event_id=3", want: all},
		{name: "newest", path: "/api/events?last_event_id=6"},
		{name: "zero", path: "/api/events?last_event_id=0", want: all},
		{name: "newer than newest", path: "/api/events?last_event_id=7"},
		{name: "not a number", path: "/api/events?last_event_id=abc"},
		{name: "negative", header: "-1", path: "/api/events"},
		{name: "past int64", header: "9223372036854775808", path: "/api/events"},
		{name: "10 KB", header: strings.Repeat("1", 10<<10), path: "/api/events"},
		{name: "bad header, good query", header: "abc", path: "/api/events?last_event_id=0"},
		{name: "bad escape", path: "/api/events?last_event_id=%ZZ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.header != "" {
				hdr.Set("Last-Event-ID", tc.header)
			}
			c := openStream(t, srv, tc.path, hdr)
			for _, want := range tc.want {
				ev := c.next(t)
				r := ev.run(t)
				if got := fmt.Sprintf("%s:%d:%s", ev.id, r.ID, r.Status); got != want {
					t.Fatalf("event = %s, want %s", got, want)
				}
			}
			c.quiet(t, 100*time.Millisecond)
		})
	}
}

// TestEventsReplayBound checks that a resume from an old id replays only
// the runs changed in the last maxReplay changes, however long the history.
func TestEventsReplayBound(t *testing.T) {
	h := newMemHistory()
	const runs = maxReplay + 200
	for id := range int64(runs) {
		h.commit(testRun(id+1, pipeline.StatusSuccess))
	}
	_, srv := newTestWeb(t, h, Options{})
	for _, id := range []string{"0", "150"} {
		c := openStream(t, srv, "/api/events?last_event_id="+id, nil)
		for i := range maxReplay {
			ev := c.next(t)
			if want := fmt.Sprint(runs - maxReplay + 1 + i); ev.id != want {
				t.Fatalf("resume from %s: event %d has id %s, want %s", id, i, ev.id, want)
			}
		}
		c.quiet(t, 200*time.Millisecond)
	}
}

// TestEventsLive checks that a change committed while streams are open
// reaches each of them once, on Notify and without it (a replica that does
// not apply follows the store by polling), and that the server's write
// timeout does not cut a stream.
func TestEventsLive(t *testing.T) {
	h := newMemHistory()
	h.commit(testRun(1, pipeline.StatusRunning))
	ext, _ := url.Parse("https://ci.example.com/exporter")
	w, srv := newTestWeb(t, h, Options{ExternalURL: ext})

	a := openStream(t, srv, "/api/events?last_event_id=1", nil)
	b := openStream(t, srv, "/api/events?last_event_id=0", nil)
	if r := b.next(t).run(t); r.ID != 1 {
		t.Fatalf("catch-up run = %d", r.ID)
	}
	// Past the server's 300ms write timeout.
	time.Sleep(500 * time.Millisecond)

	h.commit(testRun(1, pipeline.StatusSuccess))
	w.Notify()
	for _, c := range []*sseClient{a, b} {
		ev := c.next(t)
		r := ev.run(t)
		if ev.id != "2" || r.ID != 1 || r.Status != pipeline.StatusSuccess {
			t.Fatalf("live event = %+v", ev)
		}
		if r.PageURL != "https://ci.example.com/exporter/runs/1" {
			t.Fatalf("page_url = %q", r.PageURL)
		}
	}

	// No Notify: the poll finds it within a second.
	h.commit(testRun(2, pipeline.StatusPending))
	for _, c := range []*sseClient{a, b} {
		if ev := c.next(t); ev.id != "3" {
			t.Fatalf("polled event = %+v", ev)
		}
	}
	a.quiet(t, 50*time.Millisecond)
}

// TestEventData checks that an event is one `run` frame whose data line
// is the run's JSON with its page_url, and without the change sequence.
func TestEventData(t *testing.T) {
	r := testRun(7, pipeline.StatusFailed)
	r.ChangeSeq = 42
	r.Error = "line one\nline two"
	w := New(Options{History: newMemHistory()})
	defer w.Close()
	frame, err := w.eventData(r)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(frame), "\n")
	if len(lines) != 5 || lines[0] != "event: run" || lines[1] != "id: 42" || !strings.HasPrefix(lines[2], "data: ") || lines[3] != "" || lines[4] != "" {
		t.Fatalf("frame = %q, want event, id and one data line, then a blank line", frame)
	}
	data := strings.TrimPrefix(lines[2], "data: ")
	var m map[string]any
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		t.Fatalf("data %s: %v", data, err)
	}
	for _, k := range []string{"id", "pipeline", "status", "trigger", "triggers", "stages", "github", "pages", "page_url", "error"} {
		if _, ok := m[k]; !ok {
			t.Errorf("run JSON has no %q: %s", k, data)
		}
	}
	if m["id"] != 7.0 || m["status"] != "failed" || m["page_url"] != "/runs/7" || m["error"] != r.Error {
		t.Errorf("run JSON %s: want id 7, status failed, page_url /runs/7 and the error's two lines", data)
	}
	if _, ok := m["ChangeSeq"]; ok {
		t.Errorf("run JSON shows the change sequence: %s", data)
	}
}

func TestEventsHeartbeat(t *testing.T) {
	w, srv := newTestWeb(t, newMemHistory(), Options{})
	w.hub.heartbeat = 50 * time.Millisecond
	c := openStream(t, srv, "/api/events", nil)
	select {
	case ev := <-c.events:
		if ev.comment != "heartbeat" || ev.event != "" {
			t.Fatalf("first frame = %+v, want a heartbeat", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no heartbeat")
	}
}

// TestEventsCap checks the cap on concurrent streams (from as many client
// addresses, each within its share) and that a closed stream frees its
// slot.
func TestEventsCap(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	w, srv := newTestWeb(t, newMemHistory(), Options{MaxStreams: 2, Registerer: reg})
	a := openStream(t, srv, "/api/events", nil)
	openStreamWith(t, srv, clientFrom(srv, "127.0.0.2"), "/api/events", nil)
	if n := testutil.ToFloat64(w.hub.openGauge); n != 2 {
		t.Fatalf("open streams = %v", n)
	}
	resp, err := clientFrom(srv, "127.0.0.3").Get(srv.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		strings.TrimSpace(string(body)) != "too many event streams" {
		t.Fatalf("third stream = %d %q, want 503 with Retry-After", resp.StatusCode, body)
	}
	a.resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(w.hub.openGauge) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("closed stream still counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	openStream(t, srv, "/api/events", nil)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP pipeline_exporter_event_streams Open /api/events streams.
# TYPE pipeline_exporter_event_streams gauge
pipeline_exporter_event_streams 2
`), "pipeline_exporter_event_streams"); err != nil {
		t.Fatal(err)
	}
}

// TestEventsClientShare checks that one client address holds at most a
// quarter of the streams while another address still gets one, and that
// the address is the peer's, whatever X-Forwarded-For says.
func TestEventsClientShare(t *testing.T) {
	_, srv := newTestWeb(t, newMemHistory(), Options{MaxStreams: 8})
	from := func(ip string) *http.Client { return clientFrom(srv, ip) }
	get := func(c *http.Client, header http.Header) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/api/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	one := from("127.0.0.1")
	for i := range 2 {
		if resp := get(one, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d of 127.0.0.1 = %d", i+1, resp.StatusCode)
		}
	}
	resp := get(one, http.Header{"X-Forwarded-For": {"192.0.2.7"}})
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), "from 127.0.0.1") {
		t.Fatalf("third stream of 127.0.0.1 = %d %q, want 503 naming the address", resp.StatusCode, body)
	}
	if resp := get(from("127.0.0.2"), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("stream of 127.0.0.2 = %d, want 200", resp.StatusCode)
	}
}

// TestEventsClose checks that Close ends open streams, so a graceful
// shutdown does not wait on them, and refuses new ones.
func TestEventsClose(t *testing.T) {
	w, srv := newTestWeb(t, newMemHistory(), Options{})
	c := openStream(t, srv, "/api/events", nil)
	w.Close()
	c.ended(t)
	resp, err := srv.Client().Get(srv.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("stream after Close = %d, want 503", resp.StatusCode)
	}
	w.Close()
}

// TestSlowSubscriberDropped checks that the fan-out never waits on a
// stream: one whose buffer is full is dropped and counted, the others get
// the event.
func TestSlowSubscriberDropped(t *testing.T) {
	h := newMemHistory()
	w := New(Options{History: h})
	defer w.Close()
	slow := &subscriber{ch: make(chan event, 1), dropped: make(chan struct{})}
	fast := &subscriber{ch: make(chan event, 10), dropped: make(chan struct{})}
	w.hub.subscribe(slow, 0)
	w.hub.subscribe(fast, 0)
	h.commit(testRun(1, pipeline.StatusPending))
	h.commit(testRun(2, pipeline.StatusPending))

	done := make(chan struct{})
	go func() { w.hub.fanOut(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("fan-out blocked on a full subscriber")
	}
	select {
	case <-slow.dropped:
	default:
		t.Fatal("slow subscriber not dropped")
	}
	if n := testutil.ToFloat64(w.hub.dropped); n != 1 {
		t.Fatalf("dropped = %v", n)
	}
	if len(fast.ch) != 2 {
		t.Fatalf("fast subscriber got %d events", len(fast.ch))
	}
}

// TestNotifyNeverBlocks checks that the applier's call returns at once
// however many commits come before the hub reads.
func TestNotifyNeverBlocks(t *testing.T) {
	w := New(Options{History: newMemHistory()})
	defer w.Close()
	// Far more notifications than the hub reads between two reads: each
	// must return at once, whatever the hub is doing.
	done := make(chan struct{})
	go func() {
		for range 10000 {
			w.Notify()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify blocked")
	}
}
