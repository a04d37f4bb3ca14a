package poller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pause"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/webhook"
)

const (
	endpointDeliveries = "deliveries"
	// reconcileOverlap is how far before the start of a hook's last
	// complete pass the next one lists: GitHub records a delivery once its
	// attempt ended (up to its 10 s timeout) and clocks differ.
	reconcileOverlap = 10 * time.Minute
	// DefaultLookBack is how far back a hook's first pass lists: GitHub
	// keeps a hook's deliveries for three days.
	DefaultLookBack = 72 * time.Hour
)

// Reasons a missed delivery is not recovered, the reason label of
// pipeline_exporter_github_deliveries_skipped_total.
const (
	skipEvent     = "event"     // an event the exporter reads nothing from
	skipMalformed = "malformed" // a payload the webhook handler would answer 400
	skipGone      = "gone"      // GitHub no longer has it
)

// Hook is a repository's or an organization's webhook, by its id.
type Hook struct {
	// Repository is owner/repo for a repository's webhook; Organization
	// names the organization of an organization's webhook.
	Repository   string
	Organization string
	ID           int64
}

// Name is the hook as the metrics and /api/status show it: owner/repo#id
// or org#id.
func (h Hook) Name() string {
	return fmt.Sprintf("%s#%d", cmp.Or(h.Repository, h.Organization), h.ID)
}

// DeliveryLog says which deliveries the log already holds (the store).
type DeliveryLog interface {
	KnownDeliveries(ctx context.Context, source pipeline.Source, ids []string) (map[string]bool, error)
}

// Ingester appends a delivery to the log and applies it, like a webhook's
// (pipeline.Applier, or the runtime that hands it on to the Applier).
type Ingester interface {
	Ingest(ctx context.Context, e *pipeline.Entry) (pipeline.Result, error)
}

// ReconcilerOptions configure a Reconciler.
type ReconcilerOptions struct {
	// APIURL is the REST API root, as for GitHubOptions.
	APIURL string
	// Token is read per request so that a reloaded token_file applies.
	Token func() string
	Hooks []Hook
	// Interval is the wait between passes; Run returns at once if it is
	// not positive (reconcile_interval 0) or there are no hooks.
	Interval time.Duration
	// LookBack bounds how far back a hook's first pass lists;
	// DefaultLookBack when zero. Keep it inside the log's retention, or a
	// pruned delivery would be recovered again.
	LookBack time.Duration
	Now      func() time.Time
	Sleep    func(ctx context.Context, d time.Duration) error
	// HTTPClient supplies the timeout and base transport.
	HTTPClient *http.Client
}

// HookStatus is one hook's reading back of missed deliveries, as shown by
// /api/status.
type HookStatus struct {
	Hook string `json:"hook"`
	// LastPass is the start of the last complete pass over the hook's
	// deliveries; everything GitHub recorded before it (less ten minutes)
	// is in the log.
	LastPass *time.Time `json:"last_pass,omitempty"`
	// LastPassRecovered is how many deliveries that pass recovered;
	// Recovered and Skipped count since the exporter started.
	LastPassRecovered int        `json:"last_pass_recovered"`
	Recovered         int64      `json:"recovered"`
	Skipped           int64      `json:"skipped"`
	LastError         string     `json:"last_error,omitempty"`
	LastErrorAt       *time.Time `json:"last_error_at,omitempty"`
}

// Reconciler reads back, through GitHub's record of each hook's
// deliveries, the deliveries that never reached the log — sent while no
// exporter was up, lost on the way, or never sent by GitHub, which does not
// retry — and appends each as the webhook delivery it was, under its own
// X-GitHub-Delivery, marked recovered. The original arriving late, or a
// redelivery, is then a duplicate.
//
// A pass lists each hook's deliveries newest first down to the start of
// its last complete pass (less reconcileOverlap) or LookBack, asks the log
// which of their guids it lacks, and fetches and ingests those of events the
// exporter reads, oldest first, one request at a time. When nothing was
// missed it costs one list request per hook, and none of GitHub's rate
// limit when the first page is unchanged (answered 304). A pass that fails
// part way is not complete: the next one lists the same stretch again, and
// what the failed one appended is in the log by then.
type Reconciler struct {
	client   *github.Client
	initErr  error
	cache    *conditionalTransport
	sched    *schedule
	log      DeliveryLog
	ingester Ingester
	logger   *slog.Logger
	now      func() time.Time
	lookBack time.Duration
	hooks    []*hookState

	recovered *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	lastPass  *prometheus.GaugeVec

	// mu guards the status fields of the hooks.
	mu sync.Mutex
}

// hookState is what the Reconciler keeps per hook.
type hookState struct {
	Hook
	name string

	// Owned by the Run goroutine.

	// since is the start of the last complete pass, zero before one.
	since time.Time
	// skipped holds the guids of missed deliveries not recovered, with
	// their delivery time, so that each is counted once while listed.
	skipped map[string]time.Time
	// denied is set while GitHub refuses the hook (403/404), so that the
	// refusal is logged once.
	denied bool

	// Guarded by Reconciler.mu.
	lastPass          time.Time
	lastPassRecovered int
	recoveredN        int64
	skippedN          int64
	lastError         string
	lastErrorAt       time.Time
}

// NewReconciler returns a Reconciler of opts.Hooks that asks log what it
// holds and hands what was missed to ingester. Its metrics are registered
// on reg, reusing collectors registered before (config reloads).
func NewReconciler(opts ReconcilerOptions, log DeliveryLog, ingester Ingester, reg prometheus.Registerer, logger *slog.Logger) *Reconciler {
	now, sleep, token := opts.Now, opts.Sleep, opts.Token
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = pause.For
	}
	if token == nil {
		token = func() string { return "" }
	}
	m := newMetrics(reg)
	client, cache, _, initErr := newGitHubClient(opts.APIURL, token, opts.HTTPClient, now, m)
	r := &Reconciler{
		client:   client,
		initErr:  initErr,
		cache:    cache,
		sched:    &schedule{source: sourceGitHub, interval: opts.Interval, now: now, sleep: sleep, logger: logger},
		log:      log,
		ingester: ingester,
		logger:   logger,
		now:      now,
		lookBack: cmp.Or(opts.LookBack, DefaultLookBack),
		recovered: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_exporter_github_deliveries_recovered_total",
			Help: "GitHub webhook deliveries that never reached the exporter, read back from GitHub and appended to the log, by hook.",
		}, []string{"hook"})),
		skipped: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_exporter_github_deliveries_skipped_total",
			Help: "GitHub webhook deliveries that never reached the exporter and were not recovered, by hook and reason (event: an event the exporter reads nothing from; malformed: a payload it cannot read; gone: GitHub no longer has it).",
		}, []string{"hook", "reason"})),
		lastPass: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipeline_exporter_github_reconcile_last_success_timestamp_seconds",
			Help: "Unix time of the start of the last complete pass over a hook's GitHub deliveries: what GitHub recorded before it is in the log.",
		}, []string{"hook"})),
	}
	for _, h := range opts.Hooks {
		hs := &hookState{Hook: h, name: h.Name(), skipped: make(map[string]time.Time)}
		r.hooks = append(r.hooks, hs)
		// Present from the start, so that increase() sees the first one.
		r.recovered.WithLabelValues(hs.name)
	}
	return r
}

// Run makes a pass at once, then every Interval (longer while backing off
// or rate limited), until ctx is done. Call it once per Reconciler.
func (r *Reconciler) Run(ctx context.Context) {
	if r.sched.interval <= 0 || len(r.hooks) == 0 {
		return
	}
	r.sched.run(ctx, r.pass, nil)
}

// Status reports each hook's passes.
func (r *Reconciler) Status() []HookStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]HookStatus, 0, len(r.hooks))
	for _, h := range r.hooks {
		out = append(out, HookStatus{
			Hook:              h.name,
			LastPass:          timeOrNil(h.lastPass),
			LastPassRecovered: h.lastPassRecovered,
			Recovered:         h.recoveredN,
			Skipped:           h.skippedN,
			LastError:         h.lastError,
			LastErrorAt:       timeOrNil(h.lastErrorAt),
		})
	}
	return out
}

// pass reconciles every hook in turn. A hook GitHub refuses (403, 404) is
// a configuration mistake, shown in its status and logged once: it neither
// fails the pass nor slows the other hooks down with a backoff.
func (r *Reconciler) pass(ctx context.Context) error {
	if r.initErr != nil {
		return r.initErr
	}
	return pollEach(ctx, r.hooks, func(ctx context.Context, h *hookState) error {
		n, err := r.reconcile(ctx, h)
		if ctx.Err() != nil {
			return err
		}
		r.note(h, n, err)
		if denial(err) != "" {
			return nil
		}
		return err
	})
}

// note records the outcome of a hook's pass for Status and the log.
func (r *Reconciler) note(h *hookState, recovered int, err error) {
	now := r.now()
	fix := denial(err)
	switch {
	case fix != "" && !h.denied:
		h.denied = true
		r.logger.Error("GitHub refuses to list the deliveries of a hook; its missed deliveries are not recovered", "hook", h.name, "err", err, "fix", fix)
	case err == nil && h.denied:
		h.denied = false
		r.logger.Info("GitHub lists the deliveries of the hook again", "hook", h.name)
	case err == nil:
		level := slog.LevelDebug
		if recovered > 0 {
			level = slog.LevelInfo
		}
		r.logger.Log(context.Background(), level, "Reconciled the hook's deliveries with the log", "hook", h.name, "recovered", recovered)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		h.lastError, h.lastErrorAt = err.Error(), now
		return
	}
	h.lastError, h.lastErrorAt = "", time.Time{}
	h.lastPass, h.lastPassRecovered = h.since, recovered
}

// denial returns how to fix a hook GitHub refuses, or "" for another error.
func denial(err error) string {
	var ge *github.ErrorResponse
	if !errors.As(err, &ge) || ge.Response == nil {
		return ""
	}
	switch ge.Response.StatusCode {
	case http.StatusForbidden:
		return "give the token read access to the hook's settings: a classic token needs the admin:repo_hook scope (repository hooks) or admin:org_hook (organization hooks), a fine-grained token the \"Webhooks\" permission (read) of the repository or organization"
	case http.StatusNotFound:
		return "check the hook's id in github.hooks (the number at the end of the hook's settings page URL) and that the token can see the repository or organization"
	}
	return ""
}

// reconcile makes one pass over a hook and returns how many deliveries it
// recovered. Only a pass that went to its end moves the hook's start
// point on.
func (r *Reconciler) reconcile(ctx context.Context, h *hookState) (int, error) {
	start := r.now()
	cutoff := start.Add(-r.lookBack)
	if !h.since.IsZero() {
		cutoff = later(cutoff, h.since.Add(-reconcileOverlap))
	}
	listed, err := r.list(ctx, h, cutoff)
	if err != nil {
		return 0, err
	}
	// A delivery and its redeliveries share a guid; the first attempt is
	// when the event happened.
	first := make(map[string]*github.HookDelivery, len(listed))
	for _, d := range listed {
		g := d.GetGUID()
		if g == "" {
			continue
		}
		if o := first[g]; o == nil || d.GetDeliveredAt().Before(o.GetDeliveredAt().Time) {
			first[g] = d
		}
	}
	guids := make([]string, 0, len(first))
	for g := range first {
		guids = append(guids, g)
	}
	known, err := r.log.KnownDeliveries(ctx, pipeline.SourceGitHub, guids)
	if err != nil {
		return 0, fmt.Errorf("reading the delivery log: %w", err)
	}
	var missed []*github.HookDelivery
	for g, d := range first {
		if !known[g] {
			missed = append(missed, d)
		}
	}
	// Oldest first, as GitHub sent them: a trigger is in the log before
	// the workflow run that claims it.
	slices.SortFunc(missed, func(a, b *github.HookDelivery) int {
		return cmp.Or(a.GetDeliveredAt().Compare(b.GetDeliveredAt().Time), cmp.Compare(a.GetID(), b.GetID()))
	})
	recovered := 0
	for _, d := range missed {
		ok, err := r.recover(ctx, h, d)
		if err != nil {
			return recovered, err
		}
		if ok {
			recovered++
		}
	}
	for g, at := range h.skipped {
		if at.Before(cutoff) {
			delete(h.skipped, g)
		}
	}
	h.since = start
	r.lastPass.WithLabelValues(h.name).Set(float64(start.UnixNano()) / 1e9)
	return recovered, nil
}

// list returns the hook's deliveries delivered since cutoff, newest first,
// following the Link header's cursor. Only the first page is asked with
// If-None-Match: its URL is the same every pass.
func (r *Reconciler) list(ctx context.Context, h *hookState, cutoff time.Time) ([]*github.HookDelivery, error) {
	opts := &github.ListCursorOptions{PerPage: perPage}
	var all []*github.HookDelivery
	for {
		reqCtx := withRequestInfo(ctx, endpointDeliveries, opts.Cursor == "")
		var page []*github.HookDelivery
		var resp *github.Response
		var err error
		if h.Repository != "" {
			owner, repo, _ := strings.Cut(h.Repository, "/")
			page, resp, err = r.client.Repositories.ListHookDeliveries(reqCtx, owner, repo, h.ID, opts)
		} else {
			page, resp, err = r.client.Organizations.ListHookDeliveries(reqCtx, h.Organization, h.ID, opts)
		}
		if err != nil {
			if resp != nil && resp.StatusCode == http.StatusOK && resp.Request != nil {
				// The body did not decode: do not replay it on the next 304.
				r.cache.forget(resp.Request.URL.String())
			}
			return nil, fmt.Errorf("list the deliveries of hook %s: %w", h.name, err)
		}
		done := len(page) == 0 || resp.Cursor == ""
		for _, d := range page {
			if d.GetDeliveredAt().Before(cutoff) {
				done = true
				continue
			}
			all = append(all, d)
		}
		if done {
			return all, nil
		}
		opts.Cursor = resp.Cursor
	}
}

// recover fetches one missed delivery and ingests it. It reports whether
// the delivery was recovered: not when it was skipped (counted), nor when
// the original reached the log meanwhile. An error ends the pass.
func (r *Reconciler) recover(ctx context.Context, h *hookState, d *github.HookDelivery) (bool, error) {
	guid, event := d.GetGUID(), d.GetEvent()
	if !webhook.GitHubIngests(event) {
		r.skip(h, d, skipEvent)
		return false, nil
	}
	full, err := r.get(ctx, h, d.GetID())
	if err != nil {
		var ge *github.ErrorResponse
		if errors.As(err, &ge) && ge.Response != nil && ge.Response.StatusCode == http.StatusNotFound {
			r.skip(h, d, skipGone)
			return false, nil
		}
		return false, err
	}
	received := d.GetDeliveredAt().Time
	var body []byte
	if req := full.GetRequest(); req != nil && req.RawPayload != nil {
		body = *req.RawPayload
	}
	events, err := webhook.GitHubEvents(event, guid, body, received)
	if err != nil {
		r.logger.Debug("Missed delivery not recovered: its payload is malformed", "hook", h.name, "delivery", guid, "err", err)
		r.skip(h, d, skipMalformed)
		return false, nil
	}
	for i, ev := range events {
		events[i] = markRecovered(ev)
	}
	res, err := r.ingester.Ingest(ctx, &pipeline.Entry{
		Source:     pipeline.SourceGitHub,
		DeliveryID: guid,
		Kind:       event,
		ReceivedAt: received,
		Body:       body,
		Events:     events,
	})
	if err != nil {
		return false, fmt.Errorf("append recovered delivery %s of hook %s: %w", guid, h.name, err)
	}
	if res.Outcome == pipeline.OutcomeDuplicate {
		return false, nil
	}
	r.logger.Debug("Recovered a missed delivery", "hook", h.name, "delivery", guid, "event", event, "delivered_at", received, "outcome", res.Outcome)
	r.recovered.WithLabelValues(h.name).Inc()
	r.mu.Lock()
	h.recoveredN++
	r.mu.Unlock()
	return true, nil
}

// get fetches one delivery with its request headers and payload.
func (r *Reconciler) get(ctx context.Context, h *hookState, id int64) (*github.HookDelivery, error) {
	ctx = withRequestInfo(ctx, endpointDeliveries, false)
	var d *github.HookDelivery
	var err error
	if h.Repository != "" {
		owner, repo, _ := strings.Cut(h.Repository, "/")
		d, _, err = r.client.Repositories.GetHookDelivery(ctx, owner, repo, h.ID, id)
	} else {
		d, _, err = r.client.Organizations.GetHookDelivery(ctx, h.Organization, h.ID, id)
	}
	if err != nil {
		return nil, fmt.Errorf("get delivery %d of hook %s: %w", id, h.name, err)
	}
	return d, nil
}

// skip counts a missed delivery that is not recovered, once while it is
// listed.
func (r *Reconciler) skip(h *hookState, d *github.HookDelivery, reason string) {
	if _, seen := h.skipped[d.GetGUID()]; seen {
		return
	}
	h.skipped[d.GetGUID()] = d.GetDeliveredAt().Time
	r.skipped.WithLabelValues(h.name, reason).Inc()
	r.mu.Lock()
	h.skippedN++
	r.mu.Unlock()
}

// markRecovered returns the event marked as read back from GitHub.
func markRecovered(ev pipeline.Event) pipeline.Event {
	switch e := ev.(type) {
	case pipeline.WorkflowRunEvent:
		e.Recovered = true
		return e
	case pipeline.WorkflowJobEvent:
		e.Recovered = true
		return e
	case pipeline.TriggerEvent:
		e.Trigger.Recovered = true
		return e
	}
	return ev
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
