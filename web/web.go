// Package web serves what people look at in a browser: the landing page
// with the recent runs, a run's page with its stage timeline, and the live
// events (Server-Sent Events) that keep both current. It only reads the
// committed run history through pipeline.History; it never writes.
package web

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// DefaultMaxStreams is the default cap on concurrent /api/events streams.
const DefaultMaxStreams = 100

// queryTimeout bounds each history read of a page, so a stuck store
// answers the user with an error page instead of a hanging tab.
const queryTimeout = 5 * time.Second

// Link is one entry of the landing page's list of links, as on
// exporter-toolkit's landing page.
type Link struct {
	Address     string
	Text        string
	Description string
}

// Options configure the pages and the live events.
type Options struct {
	// History is the committed run history; the only thing read.
	History pipeline.History
	// Specs returns the configured pipelines, listed on the landing page
	// with those the history knows.
	Specs func() []pipeline.Spec
	// ExternalURL is where users reach the exporter (--web.external-url):
	// run page links in the events' page_url are made absolute with it.
	// Nil leaves them relative to the exporter's root.
	ExternalURL *url.URL
	// MaxStreams caps concurrent /api/events streams; past it a new stream
	// is answered 503. Zero means DefaultMaxStreams.
	MaxStreams int
	// Registerer takes the live-event metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Name, Description and Version head the landing page; Links are listed
	// under them, as exporter-toolkit's landing page does.
	Name, Description, Version string
	Links                      []Link
}

// Web serves the landing page, the run pages and /api/events. Notify wakes
// the event streams after a commit; Close ends them.
type Web struct {
	history  pipeline.History
	specs    func() []pipeline.Spec
	external *url.URL
	logger   *slog.Logger
	landing  landingHeader
	hub      *hub
}

// New returns the pages and event streams for o, with the goroutine that
// follows the history for the streams started; Close stops it.
func New(o Options) *Web {
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// Links are relative to the landing page, as exporter-toolkit makes
	// them, so they work behind a proxy's path prefix.
	links := make([]Link, len(o.Links))
	for i, l := range o.Links {
		l.Address = strings.TrimPrefix(l.Address, "/")
		links[i] = l
	}
	w := &Web{
		history:  o.History,
		specs:    o.Specs,
		external: o.ExternalURL,
		logger:   o.Logger,
		landing:  landingHeader{Name: o.Name, Description: o.Description, Version: o.Version, Links: links},
	}
	w.hub = newHub(o.History, w.eventData, o.MaxStreams, o.Registerer, o.Logger)
	go w.hub.run()
	return w
}

// Pages returns the handler of GET / (the landing page), GET /runs/{id}
// and an HTML 404 page for every other path it is given.
func (w *Web) Pages() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", w.serveLanding)
	mux.HandleFunc("GET /runs/{id}", w.serveRun)
	mux.HandleFunc("/", func(rw http.ResponseWriter, _ *http.Request) {
		w.notFound(rw, "There is no page at this address.")
	})
	return mux
}

// Events returns the handler of GET /api/events. Mount it outside the
// request-duration instrumentation: a stream lasts as long as the client
// stays.
func (w *Web) Events() http.Handler {
	return http.HandlerFunc(w.hub.serve)
}

// Notify tells the event streams that runs changed. It never blocks and
// coalesces: call it after every commit of the applier.
func (w *Web) Notify() {
	w.hub.notify()
}

// Close ends every event stream and refuses new ones (503). Call it before
// the HTTP server's graceful shutdown waits for open requests, for example
// through http.Server.RegisterOnShutdown; it is safe to call more than
// once.
func (w *Web) Close() {
	w.hub.close()
}

// queryContext bounds a page's history reads by queryTimeout and by the
// request.
func queryContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), queryTimeout)
}
