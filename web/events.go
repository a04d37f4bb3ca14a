package web

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/api"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	// heartbeatInterval keeps proxies from closing an idle stream; the HTTP
	// API documentation promises at most 15 s.
	heartbeatInterval = 15 * time.Second
	// pollInterval is how often the streams look at the store without being
	// notified: a replica that does not apply follows the shared store at
	// most this far behind.
	pollInterval = time.Second
	// batchSize is how many changed runs one history read returns.
	batchSize = 100
	// streamBuffer is how many events a stream may have waiting before its
	// client counts as too slow and is dropped.
	streamBuffer = 256
	// coalesce is the least time between two reads of the changed runs.
	// A read sends each changed run once, in its latest state, so a run
	// that changed five times in between costs one event per stream, not
	// five. With a read per commit, 100 streams starved ingest of CPU:
	// `make bench`'s row "exporter p99 at 500 req/s, 0 → 100 open
	// /api/events streams" was 74.8 → 11,142 ms, and 9.0 → 4,640 ms with
	// streams that only batched their writes. A tenth of a second is still
	// live to a person watching.
	coalesce = 100 * time.Millisecond
	// writeTimeout bounds one write to a client; a client that takes longer
	// to accept an event or a heartbeat is dropped.
	writeTimeout = 10 * time.Second
	// maxReplay is how many of the latest change sequences a resume may
	// replay: a client that was away longer gets the runs changed in the
	// last maxReplay changes (the API has the older history). Without a
	// bound, a resume from id 0 replayed all 40,017 runs of a history (45
	// MB) per connection, and a client reconnecting in a loop raised
	// webhook p99 69-fold.
	maxReplay = 1000
	// clientShare is the share of the streams one client address may hold:
	// never-reading streams from one address cannot keep everyone else out.
	clientShare = 4
)

// event is one encoded `run` event, shared by every stream that sends it.
type event struct {
	seq   int64
	frame []byte
}

// subscriber is one open stream registered with the hub.
type subscriber struct {
	ch chan event
	// dropped is closed by the hub when the subscriber fell too far behind.
	dropped chan struct{}
}

// hub reads the changed runs once for all streams and fans them out. Only
// its own goroutine reads the live changes; Notify just wakes it, so the
// applier never waits on a stream.
type hub struct {
	history   pipeline.History
	encode    func(*pipeline.Run) ([]byte, error)
	logger    *slog.Logger
	maxStream int
	// maxClient is how many streams one client address may hold.
	maxClient int

	wake chan struct{}
	// ctx is cancelled by close: the hub stops, and every stream with it.
	ctx       context.Context
	close     context.CancelFunc
	heartbeat time.Duration

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	// cursor is the change sequence the hub has fanned out up to; it is
	// meaningful only while subs is not empty.
	cursor int64
	open   int // streams being served, catching up or live
	// byClient counts the open streams of each client address.
	byClient map[string]int
	// failing is set while the hub's reads fail, so a store outage is
	// logged once, not every poll.
	failing bool

	openGauge prometheus.Gauge
	dropped   prometheus.Counter
}

func newHub(h pipeline.History, encode func(*pipeline.Run) ([]byte, error), maxStreams int, reg prometheus.Registerer, logger *slog.Logger) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	b := &hub{
		history:   h,
		encode:    encode,
		logger:    logger,
		maxStream: maxStreams,
		maxClient: max(1, maxStreams/clientShare),
		byClient:  map[string]int{},
		wake:      make(chan struct{}, 1),
		ctx:       ctx,
		close:     cancel,
		heartbeat: heartbeatInterval,
		subs:      map[*subscriber]struct{}{},
		openGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipeline_exporter_event_streams",
			Help: "Open /api/events streams.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipeline_exporter_event_streams_dropped_total",
			Help: "Live-event streams closed because their client did not keep up.",
		}),
	}
	if reg != nil {
		reg.MustRegister(b.openGauge, b.dropped)
	}
	return b
}

func (b *hub) notify() {
	select {
	case b.wake <- struct{}{}:
	default:
		// A wake-up is already pending; it will read this change too.
	}
}

// run follows the history until close: on every notification, and every
// poll interval for the changes another replica committed.
func (b *hub) run() {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.wake:
		case <-t.C:
		}
		b.fanOut()
		// Changes committed meanwhile leave a wake-up pending.
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(coalesce):
		}
	}
}

// fanOut reads what changed after the cursor and hands each run's event to
// every subscriber without waiting: a subscriber whose buffer is full is
// dropped.
func (b *hub) fanOut() {
	for {
		b.mu.Lock()
		if len(b.subs) == 0 {
			b.mu.Unlock()
			return
		}
		cursor := b.cursor
		b.mu.Unlock()

		events, more, err := b.read(b.ctx, cursor)
		b.readFailed(err)
		if err != nil {
			return
		}
		for _, ev := range events {
			b.send(ev)
		}
		if !more {
			return
		}
	}
}

// read returns the events of up to batchSize runs changed after seq, in
// change order, and whether there may be more. A run that cannot be
// encoded is logged and skipped.
func (b *hub) read(ctx context.Context, seq int64) ([]event, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	runs, err := b.history.ChangedAfter(ctx, seq, batchSize)
	if err != nil {
		return nil, false, err
	}
	events := make([]event, 0, len(runs))
	for _, r := range runs {
		frame, err := b.encode(r)
		if err != nil {
			b.logger.Error("Encoding a run for the live events failed", "run", r.ID, "err", err)
			continue
		}
		events = append(events, event{seq: r.ChangeSeq, frame: frame})
	}
	return events, len(runs) == batchSize, nil
}

// readFailed logs when the hub's reads start and stop failing.
func (b *hub) readFailed(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err != nil && !b.failing:
		b.logger.Warn("Reading changed runs for the live events failed; retrying every poll", "err", err)
	case err == nil && b.failing:
		b.logger.Info("Reading changed runs for the live events works again")
	}
	b.failing = err != nil
}

func (b *hub) send(ev event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// The cursor may have moved past ev while the store was read: every
	// subscriber then went away and a new one caught up further itself.
	if ev.seq <= b.cursor {
		return
	}
	b.cursor = ev.seq
	for s := range b.subs {
		select {
		case s.ch <- ev:
		default:
			delete(b.subs, s)
			close(s.dropped)
			b.dropped.Inc()
		}
	}
}

// acquire takes one of the stream slots for client; it says why not when
// all are taken, client holds its share already, or the hub is closed.
func (b *hub) acquire(client string) (refused string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.ctx.Err() != nil:
		return "shutting down"
	case b.open >= b.maxStream:
		return "too many event streams"
	case b.byClient[client] >= b.maxClient:
		return "too many event streams from " + client
	}
	b.open++
	b.byClient[client]++
	b.openGauge.Set(float64(b.open))
	return ""
}

func (b *hub) release(client string, s *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open--
	if b.byClient[client]--; b.byClient[client] == 0 {
		delete(b.byClient, client)
	}
	b.openGauge.Set(float64(b.open))
	if s != nil {
		delete(b.subs, s)
	}
}

// clientAddress is the address a stream counts against: the peer's IP,
// never a header a client can set (X-Forwarded-For). Behind a reverse
// proxy every client shares the proxy's address.
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// subscribe registers s as having sent every change up to sent. It fails
// when the hub has already fanned out changes after sent to others: the
// stream must catch up further first.
func (b *hub) subscribe(s *subscriber, sent int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) == 0 {
		b.cursor = sent
	} else if b.cursor > sent {
		return false
	}
	b.subs[s] = struct{}{}
	return true
}

// serve is GET /api/events.
func (b *hub) serve(w http.ResponseWriter, r *http.Request) {
	client := clientAddress(r)
	if refused := b.acquire(client); refused != "" {
		w.Header().Set("Retry-After", "5")
		http.Error(w, refused, http.StatusServiceUnavailable)
		return
	}
	var sub *subscriber
	defer func() { b.release(client, sub) }()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// nginx buffers responses unless told not to.
	h.Set("X-Accel-Buffering", "no")
	st := &stream{w: w, rc: rc, logger: b.logger}
	w.WriteHeader(http.StatusOK)
	if st.send() != nil {
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(b.ctx, cancel)()

	sent, err := b.resumePoint(ctx, lastEventID(r))
	if err != nil {
		b.logger.Warn("Reading the history for a live-event stream failed", "err", err)
		return
	}
	sub = &subscriber{ch: make(chan event, streamBuffer), dropped: make(chan struct{})}
	for {
		if sent, err = b.catchUp(ctx, st, sent); err != nil {
			return
		}
		if b.subscribe(sub, sent) {
			break
		}
	}

	hb := time.NewTicker(b.heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.dropped:
			b.logger.Debug("Dropped a live-event stream that did not keep up", "remote", r.RemoteAddr)
			return
		case <-hb.C:
			if st.send([]byte(": heartbeat\n\n")) != nil {
				return
			}
		case ev := <-sub.ch:
			// Send what is waiting at once.
			var frames [][]byte
			for more := true; more; {
				if ev.seq > sent {
					frames = append(frames, ev.frame)
					sent = ev.seq
				}
				select {
				case ev = <-sub.ch:
				default:
					more = false
				}
			}
			if st.send(frames...) != nil {
				return
			}
		}
	}
}

// resumePoint turns the client's last event id into the sequence to send
// changes after. No id, a bad one (-1 from lastEventID) or one newer than
// the newest change (the store was replaced, or the id is made up) start
// from the newest change: a bad id never costs a replay of the history. A
// good one replays at most the last maxReplay changes.
func (b *hub) resumePoint(ctx context.Context, id int64) (int64, error) {
	last, err := b.history.LastChange(ctx)
	if err != nil {
		return 0, err
	}
	if id < 0 || id > last {
		return last, nil
	}
	return max(id, last-maxReplay), nil
}

// catchUp sends every run whose latest change is after sent, in change
// order, and returns the last sequence sent.
func (b *hub) catchUp(ctx context.Context, st *stream, sent int64) (int64, error) {
	for {
		events, more, err := b.read(ctx, sent)
		if err != nil {
			if ctx.Err() == nil {
				b.logger.Warn("Reading changed runs for a live-event stream failed", "err", err)
			}
			return sent, err
		}
		frames := make([][]byte, len(events))
		for i, ev := range events {
			frames[i] = ev.frame
		}
		if err := st.send(frames...); err != nil {
			return sent, err
		}
		if len(events) > 0 {
			sent = events[len(events)-1].seq
		}
		if !more {
			return sent, nil
		}
	}
}

// lastEventID reads Last-Event-ID (an EventSource reconnecting) or
// ?last_event_id= (a page's first connect); -1 when there is none or it is
// not a non-negative number that fits an int64.
func lastEventID(r *http.Request) int64 {
	s := r.Header.Get("Last-Event-ID")
	if s == "" {
		s = r.URL.Query().Get("last_event_id")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// stream writes to one client, each write bounded by writeTimeout in place
// of the server's write timeout, which would cut every stream.
type stream struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	logger *slog.Logger
}

// send writes the frames and flushes them, under one write deadline.
func (s *stream) send(frames ...[]byte) error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		s.logger.Error("Live events need a connection whose write deadline can be set", "err", err)
		return err
	}
	for _, f := range frames {
		if _, err := s.w.Write(f); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

// eventData encodes r as one `run` event: its change sequence as the id and
// the run as the API shows it, on one line.
func (w *Web) eventData(r *pipeline.Run) ([]byte, error) {
	data, err := json.Marshal(api.NewRun(r, w.external))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(data) + 40)
	buf.WriteString("event: run\nid: ")
	buf.WriteString(strconv.FormatInt(r.ChangeSeq, 10))
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
	return buf.Bytes(), nil
}
