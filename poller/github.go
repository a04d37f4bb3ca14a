package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pause"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	sourceGitHub = "github"
	// perPage is GitHub's maximum page size: one request covers a busy day.
	perPage = 100
)

// DefaultBackfillWindow is the BackfillWindow used when none is given.
const DefaultBackfillWindow = 24 * time.Hour

// GitHubOptions configure a GitHubPoller.
type GitHubOptions struct {
	// APIURL is the REST API root, e.g. https://api.github.com/ or, for
	// GitHub Enterprise Server, https://ghe.example.com/api/v3/. It is used
	// as given (no /api/v3/ is appended), so an httptest URL works too.
	APIURL string
	// Token is read per request so that a reloaded token_file applies.
	Token func() string
	// Repositories are owner/repo names.
	Repositories []string
	// Interval is the wait between polls; Run returns at once if it is not
	// positive (poll_interval 0 disables polling).
	Interval time.Duration
	// BackfillWindow bounds how far back a poll looks for runs missed while
	// the exporter was down or failing; DefaultBackfillWindow when zero.
	BackfillWindow time.Duration
	Now            func() time.Time
	Sleep          func(ctx context.Context, d time.Duration) error
	// HTTPClient supplies the timeout and base transport; the conditional
	// and instrumenting transports wrap its Transport.
	HTTPClient *http.Client
}

// GitHubPoller lists the workflow runs of each configured repository every
// Interval and feeds new or changed runs, with their jobs, to a Sink.
//
// Each poll asks the same URL (no moving time filter), so an unchanged
// repository answers 304 to If-None-Match and costs no rate-limit points. A
// poll goes to page 2 and further only while a whole page is new or changed
// and still inside BackfillWindow: that is how runs missed during a gap are
// recovered. Jobs come from /actions/runs/{id}/attempts/{attempt}/jobs, so
// they always belong to the attempt the run event names (the key the Tracker
// merges webhook and polled state on).
type GitHubPoller struct {
	client *github.Client
	// initErr is a bad APIURL, reported by every poll so it shows in Status.
	initErr error
	cache   *conditionalTransport
	api     *apiTransport
	sched   *schedule
	sink    Sink
	logger  *slog.Logger
	repos   []string
	window  time.Duration
	now     func() time.Time

	// The fields below belong to the one goroutine of Run, so the poller
	// never sends GitHub two requests at once.

	// runs is what was last sent per repository and run id.
	runs map[string]map[int64]runState
	// polled picks the level of each repository's "Polled GitHub" line.
	polled pollLog
}

// runState is what decides whether a listed run changed since the last poll.
type runState struct {
	attempt    int
	status     string
	conclusion string
	createdAt  time.Time
	updatedAt  time.Time
}

// workflowRun adds path, which go-github v60's WorkflowRun lacks and the
// Tracker matches pipelines on.
type workflowRun struct {
	github.WorkflowRun
	Path string `json:"path"`
}

type workflowRuns struct {
	TotalCount   int            `json:"total_count"`
	WorkflowRuns []*workflowRun `json:"workflow_runs"`
}

// NewGitHub returns a GitHub poller. Its metrics are registered on reg; a
// poller built again on reload reuses the already registered collectors.
func NewGitHub(opts GitHubOptions, sink Sink, reg prometheus.Registerer, logger *slog.Logger) *GitHubPoller {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = pause.For
	}
	token := opts.Token
	if token == nil {
		token = func() string { return "" }
	}
	window := opts.BackfillWindow
	if window <= 0 {
		window = DefaultBackfillWindow
	}
	m := newMetrics(reg)
	client, cache, api, initErr := newGitHubClient(opts.APIURL, token, opts.HTTPClient, now, m)
	return &GitHubPoller{
		client:  client,
		initErr: initErr,
		cache:   cache,
		api:     api,
		sched: &schedule{
			source: sourceGitHub, interval: opts.Interval, now: now, sleep: sleep, lastSuccess: m.lastSuccess.WithLabelValues(sourceGitHub), logger: logger,
		},
		sink:   sink,
		logger: logger,
		repos:  opts.Repositories,
		window: window,
		now:    now,
		runs:   make(map[string]map[int64]runState),
	}
}

// newGitHubClient returns a go-github client on apiURL (api.github.com when
// empty) whose requests go through the conditional cache and the
// instrumenting, rate-limiting transport, over hc's transport and timeout.
// A bad apiURL is returned as the error every request of the caller should
// report.
func newGitHubClient(apiURL string, token func() string, hc *http.Client, now func() time.Time, m *metrics) (*github.Client, *conditionalTransport, *apiTransport, error) {
	var c http.Client
	if hc != nil {
		c = *hc
	}
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	api := &apiTransport{next: base, source: sourceGitHub, token: token, now: now, metrics: m, trackRate: true}
	cache := newConditionalTransport(api)
	c.Transport = cache

	client := github.NewClient(&c)
	var initErr error
	if apiURL != "" {
		u, err := url.Parse(strings.TrimSuffix(apiURL, "/") + "/")
		if err != nil {
			initErr = fmt.Errorf("github api_url: %w", err)
		} else {
			client.BaseURL = u
		}
	}
	return client, cache, api, initErr
}

// Run polls immediately, then every Interval (longer while backing off or
// rate limited), until ctx is done. Call it once per poller.
func (p *GitHubPoller) Run(ctx context.Context) {
	if p.sched.interval <= 0 {
		return
	}
	p.sched.run(ctx, p.pass, nil)
}

// Status reports the poller's health and the last GitHub rate limit read.
func (p *GitHubPoller) Status() Status {
	st := p.sched.status()
	st.RateLimit = p.api.rateLimit()
	return st
}

// pass polls every repository, one request at a time.
func (p *GitHubPoller) pass(ctx context.Context) error {
	if p.initErr != nil {
		return p.initErr
	}
	return pollEach(ctx, p.repos, func(ctx context.Context, repo string) error {
		changed, err := p.pollRepo(ctx, repo)
		if err != nil {
			var ge *github.ErrorResponse
			if errors.As(err, &ge) && ge.Response != nil && ge.Response.StatusCode == http.StatusUnauthorized {
				err = fmt.Errorf("GitHub rejected the token (check github.token or token_file): %w", err)
			}
			p.polled.failed(repo)
			return err
		}
		msg := fmt.Sprintf("Polled GitHub %s: %d runs changed", repo, changed)
		if rl := p.api.rateLimit(); rl != nil {
			msg += fmt.Sprintf(", rate limit %d left", rl.Remaining)
		}
		p.logger.Log(ctx, p.polled.succeeded(repo), msg)
		return nil
	})
}

// pollEach polls every item in turn. A rate limit ends the pass at once,
// since every further request would be refused too; other errors are
// collected so one broken item does not hide the others.
func pollEach[T any](ctx context.Context, items []T, poll func(context.Context, T) error) error {
	var errs []error
	for _, item := range items {
		err := poll(ctx, item)
		if err == nil {
			continue
		}
		errs = append(errs, err)
		var rl *rateLimitedError
		if errors.As(err, &rl) || ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// pollRepo lists one repository's runs, pages back only while every run of a
// page is new or changed and inside the window, and sends each new or
// changed run with its jobs in one Apply. A run is remembered only once the
// sink took it, so a failed Apply is retried on the next poll (from the
// replayed body when the list answers 304).
func (p *GitHubPoller) pollRepo(ctx context.Context, repo string) (int, error) {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || owner == "" || name == "" {
		return 0, fmt.Errorf("repository %q is not owner/repo", repo)
	}
	known := p.runs[repo]
	if known == nil {
		known = make(map[int64]runState)
		p.runs[repo] = known
	}
	cutoff := p.now().Add(-p.window)

	var changed []*workflowRun
	seen := make(map[int64]bool)
	for page := 1; ; {
		runs, next, err := p.listRuns(ctx, owner, name, page)
		if err != nil {
			return 0, err
		}
		allChanged := true
		for _, r := range runs {
			if seen[r.GetID()] {
				// Shifted from the previous page by a run created
				// between the two requests.
				continue
			}
			seen[r.GetID()] = true
			if !runChanged(known, r) {
				allChanged = false
				continue
			}
			if r.GetUpdatedAt().Before(cutoff) {
				// Older than the window: remember it so that it is not
				// "new" again on every poll, but send nothing.
				known[r.GetID()] = stateOf(r)
				continue
			}
			changed = append(changed, r)
		}
		if !allChanged || next == 0 || len(runs) == 0 || runs[len(runs)-1].GetCreatedAt().Before(cutoff) {
			break
		}
		page = next
	}

	// Oldest first, as GitHub would have delivered them: the Tracker lets
	// the first workflow run after a trigger claim it.
	sort.SliceStable(changed, func(i, j int) bool {
		a, b := changed[i].GetCreatedAt().Time, changed[j].GetCreatedAt().Time
		if !a.Equal(b) {
			return a.Before(b)
		}
		return changed[i].GetID() < changed[j].GetID()
	})
	for _, r := range changed {
		attempt := max(r.GetRunAttempt(), 1)
		jobs, err := p.listJobs(ctx, owner, name, r.GetID(), attempt)
		if err != nil {
			return 0, err
		}
		events := make([]pipeline.Event, 0, 1+len(jobs))
		events = append(events, runEvent(repo, r))
		for _, j := range jobs {
			events = append(events, jobEvent(repo, attempt, j))
		}
		if err := p.sink.Apply(ctx, events); err != nil {
			return 0, fmt.Errorf("apply run %d of %s: %w", r.GetID(), repo, err)
		}
		known[r.GetID()] = stateOf(r)
	}

	for id, st := range known {
		if !seen[id] && st.createdAt.Before(cutoff) {
			delete(known, id)
		}
	}
	return len(changed), nil
}

func runChanged(known map[int64]runState, r *workflowRun) bool {
	st, ok := known[r.GetID()]
	return !ok ||
		st.attempt != r.GetRunAttempt() ||
		st.status != r.GetStatus() ||
		st.conclusion != r.GetConclusion() ||
		!st.updatedAt.Equal(r.GetUpdatedAt().Time)
}

func stateOf(r *workflowRun) runState {
	return runState{
		attempt:    r.GetRunAttempt(),
		status:     r.GetStatus(),
		conclusion: r.GetConclusion(),
		createdAt:  r.GetCreatedAt().Time,
		updatedAt:  r.GetUpdatedAt().Time,
	}
}

// listRuns returns one page of the repository's runs, newest first, and the
// next page number (0 on the last page).
func (p *GitHubPoller) listRuns(ctx context.Context, owner, repo string, page int) ([]*workflowRun, int, error) {
	u := fmt.Sprintf("repos/%s/%s/actions/runs?per_page=%d", url.PathEscape(owner), url.PathEscape(repo), perPage)
	if page > 1 {
		u += "&page=" + strconv.Itoa(page)
	}
	req, err := p.client.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	var runs workflowRuns
	resp, err := p.client.Do(withRequestInfo(ctx, endpointRuns, true), req, &runs)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusOK {
			// The body did not decode: do not replay it on the next 304.
			p.cache.forget(req.URL.String())
		}
		return nil, 0, fmt.Errorf("list workflow runs of %s/%s: %w", owner, repo, err)
	}
	return runs.WorkflowRuns, resp.NextPage, nil
}

// listJobs returns every job of one attempt of a run.
func (p *GitHubPoller) listJobs(ctx context.Context, owner, repo string, runID int64, attempt int) ([]*github.WorkflowJob, error) {
	ctx = withRequestInfo(ctx, endpointJobs, false)
	opts := &github.ListOptions{PerPage: perPage}
	var all []*github.WorkflowJob
	for {
		jobs, resp, err := p.client.Actions.ListWorkflowJobsAttempt(ctx, owner, repo, runID, int64(attempt), opts)
		if err != nil {
			return nil, fmt.Errorf("list jobs of run %d attempt %d of %s/%s: %w", runID, attempt, owner, repo, err)
		}
		all = append(all, jobs.Jobs...)
		if resp.NextPage == 0 {
			return all, nil
		}
		opts.Page = resp.NextPage
	}
}

// runEvent converts a listed run. Repository is the configured owner/repo
// that was listed, so every event of one poller names its repository alike.
func runEvent(repo string, r *workflowRun) pipeline.WorkflowRunEvent {
	return pipeline.WorkflowRunEvent{
		Repository:   repo,
		RunID:        r.GetID(),
		RunAttempt:   r.GetRunAttempt(),
		WorkflowID:   r.GetWorkflowID(),
		WorkflowPath: r.Path,
		Name:         r.GetName(),
		HeadBranch:   r.GetHeadBranch(),
		HeadSHA:      r.GetHeadSHA(),
		Event:        r.GetEvent(),
		Status:       r.GetStatus(),
		Conclusion:   r.GetConclusion(),
		HTMLURL:      r.GetHTMLURL(),
		CreatedAt:    r.GetCreatedAt().Time,
		UpdatedAt:    r.GetUpdatedAt().Time,
		RunStartedAt: r.GetRunStartedAt().Time,
		HeadCommitAt: r.GetHeadCommit().GetTimestamp().Time,
	}
}

// jobEvent converts a job; attempt is the one asked for, used when the job
// itself does not say (older GitHub Enterprise versions).
func jobEvent(repo string, attempt int, j *github.WorkflowJob) pipeline.WorkflowJobEvent {
	if a := j.GetRunAttempt(); a > 0 {
		attempt = int(a)
	}
	return pipeline.WorkflowJobEvent{
		Repository:   repo,
		RunID:        j.GetRunID(),
		RunAttempt:   attempt,
		JobID:        j.GetID(),
		Name:         j.GetName(),
		WorkflowName: j.GetWorkflowName(),
		HeadBranch:   j.GetHeadBranch(),
		HeadSHA:      j.GetHeadSHA(),
		Status:       j.GetStatus(),
		Conclusion:   j.GetConclusion(),
		HTMLURL:      j.GetHTMLURL(),
		CreatedAt:    j.GetCreatedAt().Time,
		StartedAt:    j.GetStartedAt().Time,
		CompletedAt:  j.GetCompletedAt().Time,
	}
}
