package web

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/api"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Landing page sizes: the newest runs, and the failures kept listed after
// they left the newest (blackbox_exporter's "Recent Probes" habit).
const (
	recentRuns = 20
	recentFail = 10
)

//go:embed templates/*.html
var templateFS embed.FS

var templates = map[string]*template.Template{
	"landing":  parsePage("landing.html"),
	"run":      parsePage("run.html"),
	"notfound": parsePage("notfound.html"),
}

func parsePage(name string) *template.Template {
	return template.Must(template.New(name).ParseFS(templateFS, "templates/layout.html", "templates/"+name))
}

// page is what the layout needs from every page.
type page struct {
	Title string
	Name  string
	// Root is the exporter's root relative to the page, so the pages work
	// behind a proxy that serves them under a path prefix.
	Root string
}

type landingHeader struct {
	Name, Description, Version string
	Links                      []Link
}

type landingPage struct {
	page
	Header    landingHeader
	Pipelines []pipelineRow
	Runs      []runRow
	// Seq is the change sequence the table was read at: the live events
	// start after it.
	Seq   int64
	Error string
}

// pipelineRow is one row of the landing page's Pipelines table.
type pipelineRow struct {
	api.Pipeline
	// LiveCommit is the live build's short commit, Served what the site
	// showed at the last check (a commit shortened the same way), and
	// Checked how long ago that was.
	LiveCommit string
	Served     string
	Checked    string
}

// shortCommit shortens a full SHA to git's 7 digits and leaves anything
// else (a prefix a header gave, a version string) as it is.
func shortCommit(s string) string {
	if len(s) == 40 {
		return s[:7]
	}
	return s
}

type runRow struct {
	ID       int64
	Pipeline string
	Status   pipeline.Status
	Trigger  pipeline.Source
	Stages   []pipeline.Stage
	Duration string
	Age      string
	Created  string
}

func (w *Web) serveLanding(rw http.ResponseWriter, r *http.Request) {
	data := landingPage{
		page:   page{Title: w.landing.Name, Name: w.landing.Name, Root: "./"},
		Header: w.landing,
	}
	runs, seq, err := w.recent(r)
	if err != nil {
		w.logger.Error("Reading the recent runs failed", "err", err)
		data.Error = "The run history cannot be read right now."
	}
	now := time.Now()
	if err == nil {
		data.Pipelines, err = w.pipelines(r, now)
		if err != nil {
			w.logger.Error("Reading the pipelines failed", "err", err)
			data.Error = "The run history cannot be read right now."
		}
	}
	for _, run := range runs {
		data.Runs = append(data.Runs, runRow{
			ID:       run.ID,
			Pipeline: run.Pipeline,
			Status:   run.Status,
			Trigger:  run.Trigger.Source,
			Stages:   run.Stages,
			Duration: runDuration(run),
			Age:      age(now.Sub(run.CreatedAt)),
			Created:  run.CreatedAt.UTC().Format(time.RFC3339Nano),
		})
	}
	data.Seq = seq
	w.render(rw, http.StatusOK, "landing", data)
}

// pipelines returns the rows of the Pipelines table.
func (w *Web) pipelines(r *http.Request, now time.Time) ([]pipelineRow, error) {
	ctx, cancel := queryContext(r)
	defer cancel()
	sums, err := w.history.Summaries(ctx)
	if err != nil {
		return nil, err
	}
	var specs []pipeline.Spec
	if w.specs != nil {
		specs = w.specs()
	}
	var rows []pipelineRow
	for _, p := range api.Pipelines(specs, sums) {
		row := pipelineRow{Pipeline: p}
		if l := p.Live; l != nil {
			row.LiveCommit = shortCommit(l.Commit)
			row.Served = shortCommit(l.Served)
			row.Checked = age(now.Sub(l.CheckedAt))
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// recent returns the newest runs and the newest failures, newest first
// without repeats, and a change sequence every change up to which the
// returned runs reflect.
func (w *Web) recent(r *http.Request) ([]*pipeline.Run, int64, error) {
	ctx, cancel := queryContext(r)
	defer cancel()
	newest, err := w.history.ListRuns(ctx, pipeline.RunQuery{Limit: recentRuns})
	if err != nil {
		return nil, 0, err
	}
	// Changes are committed in sequence order, so every change up to the
	// highest one this first read saw was already committed when it ran,
	// and the read of the failures after it reflects them too.
	var seq int64
	for _, run := range newest {
		seq = max(seq, run.ChangeSeq)
	}
	failed, err := w.history.ListRuns(ctx, pipeline.RunQuery{
		Statuses: []pipeline.Status{pipeline.StatusFailed, pipeline.StatusTimedOut},
		Limit:    recentFail,
	})
	if err != nil {
		return nil, 0, err
	}
	all := newest
	for _, f := range failed {
		if !slices.ContainsFunc(newest, func(n *pipeline.Run) bool { return n.ID == f.ID }) {
			all = append(all, f)
		}
	}
	slices.SortFunc(all, func(a, b *pipeline.Run) int { return int(b.ID - a.ID) })
	return all, seq, nil
}

type runPage struct {
	page
	Run      *pipeline.Run
	Created  string
	Duration string
	// Span is the time the timeline covers; Live is set when it ends now.
	Span   string
	Live   bool
	Stages []timelineRow
}

// timelineRow is one stage, or one of the Pages deployment's own stages
// (Sub), placed on the run's time scale in percent.
type timelineRow struct {
	Name, Status string
	Sub          bool
	Drawn        bool
	Left, Width  string
	Duration     string
	URL          string
	LinkText     string
	Error        string
}

func (w *Web) serveRun(rw http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		w.notFound(rw, fmt.Sprintf("%q is not a run id: run ids are positive numbers.", raw))
		return
	}
	ctx, cancel := queryContext(r)
	defer cancel()
	run, err := w.history.Run(ctx, id)
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		w.notFound(rw, fmt.Sprintf("There is no run %d: it was never recorded, or it was pruned from the history.", id))
		return
	case err != nil:
		w.logger.Error("Reading a run failed", "id", id, "err", err)
		w.render(rw, http.StatusServiceUnavailable, "notfound", notFoundPage{
			page:    page{Title: "Run history unavailable", Name: w.landing.Name, Root: "../"},
			Heading: "Run history unavailable",
			Message: "The run history cannot be read right now; try again shortly.",
		})
		return
	}
	w.render(rw, http.StatusOK, "run", w.runPage(run, time.Now()))
}

func (w *Web) runPage(run *pipeline.Run, now time.Time) runPage {
	p := runPage{
		page:     page{Title: fmt.Sprintf("Run %d of %s: %s", run.ID, run.Pipeline, run.Status), Name: w.landing.Name, Root: "../"},
		Run:      run,
		Created:  run.CreatedAt.UTC().Format("2006-01-02 15:04:05Z"),
		Duration: runDuration(run),
	}
	// The scale runs from the run's start to its finish, or to now while it
	// runs; stages reported before the run's creation widen it.
	start, end := run.CreatedAt, now
	if run.FinishedAt != nil {
		end = *run.FinishedAt
	} else {
		p.Live = true
	}
	widen := func(from, to *time.Time) {
		if from != nil && from.Before(start) {
			start = *from
		}
		if to != nil && to.After(end) {
			end = *to
		}
	}
	for _, s := range run.Stages {
		widen(s.StartedAt, s.FinishedAt)
	}
	if run.Pages != nil {
		for _, s := range run.Pages.Stages {
			widen(s.StartedOn, s.EndedOn)
		}
	}
	span := end.Sub(start)
	if span <= 0 {
		span = time.Second
	}
	p.Span = duration(span.Seconds())
	place := func(row *timelineRow, from, to *time.Time, running bool) {
		if from == nil {
			return
		}
		stop := now
		switch {
		case to != nil:
			stop = *to
		case !running:
			stop = *from
		}
		if stop.After(end) {
			stop = end
		}
		left := float64(from.Sub(start)) / float64(span) * 100
		width := float64(stop.Sub(*from)) / float64(span) * 100
		row.Drawn = true
		row.Left = strconv.FormatFloat(left, 'f', 2, 64)
		row.Width = strconv.FormatFloat(max(width, 0), 'f', 2, 64)
	}
	for _, s := range run.Stages {
		row := timelineRow{Name: s.Name, Status: string(s.Status), URL: s.URL, Error: s.Error, LinkText: linkText(s.Name)}
		if s.StartedAt != nil && (s.FinishedAt != nil || s.Status == pipeline.StatusRunning) {
			row.Duration = duration(s.DurationSeconds)
			if s.FinishedAt == nil {
				row.Duration = duration(now.Sub(*s.StartedAt).Seconds()) + " so far"
			}
		}
		place(&row, s.StartedAt, s.FinishedAt, s.Status == pipeline.StatusRunning)
		if s.Name == pipeline.StagePages && row.URL == "" && run.Pages != nil {
			row.URL = run.Pages.URL
		}
		p.Stages = append(p.Stages, row)
		if s.Name != pipeline.StagePages || run.Pages == nil {
			continue
		}
		for _, ps := range run.Pages.Stages {
			sub := timelineRow{Name: ps.Name, Status: ps.Status, Sub: true}
			if ps.StartedOn != nil && ps.EndedOn != nil {
				sub.Duration = duration(ps.EndedOn.Sub(*ps.StartedOn).Seconds())
			}
			place(&sub, ps.StartedOn, ps.EndedOn, ps.Status == "active")
			p.Stages = append(p.Stages, sub)
		}
	}
	return p
}

// linkText names where a stage's link goes.
func linkText(stage string) string {
	switch stage {
	case pipeline.StagePages:
		return "Pages deployment"
	case pipeline.StageVerify:
		return "live site"
	case pipeline.StageTrigger, pipeline.StageDispatch:
		return "link"
	}
	return "GitHub job"
}

type notFoundPage struct {
	page
	Heading, Message string
}

func (w *Web) notFound(rw http.ResponseWriter, msg string) {
	w.render(rw, http.StatusNotFound, "notfound", notFoundPage{
		// The 404 page is served at any depth; an absolute root is the one
		// link that works from all of them.
		page:    page{Title: "Not found", Name: w.landing.Name, Root: "/"},
		Heading: "Not found",
		Message: msg,
	})
}

// render executes the page into a buffer first, so a template failure is
// still answered with a clean 500.
func (w *Web) render(rw http.ResponseWriter, code int, name string, data any) {
	var buf bytes.Buffer
	if err := templates[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		w.logger.Error("Rendering a page failed", "page", name, "err", err)
		http.Error(rw, "cannot render the page", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(code)
	if _, err := rw.Write(buf.Bytes()); err != nil {
		w.logger.Debug("Writing a page failed", "page", name, "err", err)
	}
}

// runDuration is the run's trigger-to-finish time, or a dash while it runs.
func runDuration(r *pipeline.Run) string {
	if r.FinishedAt == nil {
		return "–"
	}
	return duration(r.DurationSeconds)
}

// duration formats seconds with the two largest units that matter.
func duration(s float64) string {
	if s < 1 {
		return strconv.Itoa(int(s*1000+0.5)) + "ms"
	}
	n := int64(s + 0.5)
	switch {
	case n < 60:
		return fmt.Sprintf("%ds", n)
	case n < 3600:
		return fmt.Sprintf("%dm %ds", n/60, n%60)
	case n < 86400:
		return fmt.Sprintf("%dh %dm", n/3600, n%3600/60)
	}
	return fmt.Sprintf("%dd %dh", n/86400, n%86400/3600)
}

// age formats how long ago something happened, in its largest unit.
func age(d time.Duration) string {
	if d < time.Second {
		return "0s ago"
	}
	return strings.SplitN(duration(d.Seconds()), " ", 2)[0] + " ago"
}
