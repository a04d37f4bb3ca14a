package poller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/pause"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const sourceCloudflare = "cloudflare"

// DefaultPagesAPIURL is Cloudflare's API root, used when PagesOptions.APIURL
// is empty.
const DefaultPagesAPIURL = "https://api.cloudflare.com/client/v4"

// Cloudflare allows 1200 API requests per 5 minutes per user.
const (
	cloudflareBurst     = 1200
	cloudflarePerSecond = 1200.0 / 300
)

// PagesOptions configure a PagesPoller.
type PagesOptions struct {
	// APIURL is the API root; DefaultPagesAPIURL when empty.
	APIURL    string
	AccountID string
	// Token is the API token ("Pages Read"), read per request so that a
	// reloaded api_token_file applies.
	Token func() string
	// Projects are the Pages project names of the configured pipelines.
	Projects []string
	// Interval is the wait between polls; Run returns at once if it is not
	// positive.
	Interval   time.Duration
	Now        func() time.Time
	Sleep      func(ctx context.Context, d time.Duration) error
	HTTPClient *http.Client
}

// PagesPoller lists the deployments of each Cloudflare Pages project every
// Interval, or at once when Trigger is called, and feeds new or changed
// deployments to a Sink as pipeline.PagesDeploymentEvents.
type PagesPoller struct {
	client  *http.Client
	cache   *conditionalTransport
	sched   *schedule
	sink    Sink
	logger  *slog.Logger
	apiURL  string
	account string
	// projects is ordered and without duplicates, since several pipelines
	// may deploy to the same project.
	projects []string
	now      func() time.Time
	sleep    func(context.Context, time.Duration) error
	trigger  chan struct{}

	// The fields below belong to the one goroutine of Run.
	bucket tokenBucket
	// sent is the last event sent per project and deployment id.
	sent map[string]map[string]pipeline.PagesDeploymentEvent
	// polled picks the level of each project's "Polled Cloudflare Pages" line.
	polled pollLog
}

// NewPages returns a Cloudflare Pages poller. Its metrics are registered on
// reg, sharing the request and last-success vectors with the GitHub poller.
func NewPages(opts PagesOptions, sink Sink, reg prometheus.Registerer, logger *slog.Logger) *PagesPoller {
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
	apiURL := opts.APIURL
	if apiURL == "" {
		apiURL = DefaultPagesAPIURL
	}
	m := newMetrics(reg)

	var hc http.Client
	if opts.HTTPClient != nil {
		hc = *opts.HTTPClient
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cache := newConditionalTransport(&apiTransport{next: base, source: sourceCloudflare, token: token, now: now, metrics: m})
	hc.Transport = cache

	var projects []string
	for _, p := range opts.Projects {
		if p != "" && !slices.Contains(projects, p) {
			projects = append(projects, p)
		}
	}
	return &PagesPoller{
		client:   &hc,
		cache:    cache,
		sched:    &schedule{source: sourceCloudflare, interval: opts.Interval, now: now, sleep: sleep, lastSuccess: m.lastSuccess.WithLabelValues(sourceCloudflare), logger: logger},
		sink:     sink,
		logger:   logger,
		apiURL:   strings.TrimSuffix(apiURL, "/"),
		account:  opts.AccountID,
		projects: projects,
		now:      now,
		sleep:    sleep,
		trigger:  make(chan struct{}, 1),
		bucket:   tokenBucket{capacity: cloudflareBurst, perSecond: cloudflarePerSecond, tokens: cloudflareBurst},
		sent:     make(map[string]map[string]pipeline.PagesDeploymentEvent),
	}
}

// Run polls immediately, then every Interval or when triggered, until ctx
// is done. Call it once per poller.
func (p *PagesPoller) Run(ctx context.Context) {
	if p.sched.interval <= 0 {
		return
	}
	p.sched.run(ctx, p.pass, p.trigger)
}

// Trigger makes a running poller poll now, e.g. when a Cloudflare
// notification arrives. It never blocks; triggers during a poll coalesce
// into one more poll.
func (p *PagesPoller) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// Status reports the poller's health.
func (p *PagesPoller) Status() Status {
	return p.sched.status()
}

func (p *PagesPoller) pass(ctx context.Context) error {
	return pollEach(ctx, p.projects, func(ctx context.Context, project string) error {
		changed, err := p.pollProject(ctx, project)
		if err != nil {
			p.polled.failed(project)
			return err
		}
		p.logger.Log(ctx, p.polled.succeeded(project), fmt.Sprintf("Polled Cloudflare Pages %s: %d deployments changed", project, changed))
		return nil
	})
}

// cfEnvelope is Cloudflare's response envelope.
type cfEnvelope struct {
	Success bool `json:"success"`
	Errors  []struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
	Result []cfDeployment `json:"result"`
}

type cfDeployment struct {
	ID                string    `json:"id"`
	URL               string    `json:"url"`
	Environment       string    `json:"environment"`
	CreatedOn         time.Time `json:"created_on"`
	DeploymentTrigger struct {
		Metadata struct {
			CommitHash string `json:"commit_hash"`
		} `json:"metadata"`
	} `json:"deployment_trigger"`
	LatestStage pipeline.PagesStage   `json:"latest_stage"`
	Stages      []pipeline.PagesStage `json:"stages"`
}

func (p *PagesPoller) pollProject(ctx context.Context, project string) (int, error) {
	if d := p.bucket.reserve(p.now()); d > 0 {
		if err := p.sleep(ctx, d); err != nil {
			return 0, err
		}
	}
	u := fmt.Sprintf("%s/accounts/%s/pages/projects/%s/deployments", p.apiURL, url.PathEscape(p.account), url.PathEscape(project))
	req, err := http.NewRequestWithContext(withRequestInfo(ctx, endpointDeployments, true), http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("list deployments of %s: %w", project, err)
	}
	defer resp.Body.Close()

	var env cfEnvelope
	decErr := json.NewDecoder(io.LimitReader(resp.Body, maxCachedBody)).Decode(&env)
	if resp.StatusCode != http.StatusOK {
		msg := resp.Status
		if decErr == nil && len(env.Errors) > 0 {
			msg += ": " + env.Errors[0].Message
		}
		return 0, fmt.Errorf("list deployments of %s: %s", project, msg)
	}
	if decErr != nil || !env.Success {
		// Do not replay an unusable body on the next 304.
		p.cache.forget(req.URL.String())
		if decErr != nil {
			return 0, fmt.Errorf("list deployments of %s: %w", project, decErr)
		}
		return 0, fmt.Errorf("list deployments of %s: Cloudflare answered success=false", project)
	}

	deployments := env.Result
	sort.SliceStable(deployments, func(i, j int) bool { return deployments[i].CreatedOn.Before(deployments[j].CreatedOn) })
	last := p.sent[project]
	current := make(map[string]pipeline.PagesDeploymentEvent, len(deployments))
	var events []pipeline.Event
	for _, d := range deployments {
		ev := pagesEvent(project, d)
		current[d.ID] = ev
		if prev, ok := last[d.ID]; ok && reflect.DeepEqual(prev, ev) {
			continue
		}
		events = append(events, ev)
	}
	if len(events) > 0 {
		if err := p.sink.Apply(ctx, events); err != nil {
			return 0, fmt.Errorf("apply deployments of %s: %w", project, err)
		}
	}
	// Only the listed deployments are kept: one that dropped off the first
	// page is old and will not be listed again.
	p.sent[project] = current
	return len(events), nil
}

func pagesEvent(project string, d cfDeployment) pipeline.PagesDeploymentEvent {
	return pipeline.PagesDeploymentEvent{
		Project: project,
		Deployment: pipeline.PagesDeployment{
			Project:      project,
			DeploymentID: d.ID,
			URL:          d.URL,
			Environment:  d.Environment,
			CommitHash:   d.DeploymentTrigger.Metadata.CommitHash,
			Stages:       d.Stages,
		},
		LatestStage: d.LatestStage,
		CreatedOn:   d.CreatedOn,
	}
}

// tokenBucket keeps the poller inside Cloudflare's request budget. A
// reservation may drive the tokens negative: the caller then waits until the
// bucket has refilled to zero, so waits queue up fairly.
type tokenBucket struct {
	capacity  float64
	perSecond float64
	tokens    float64
	last      time.Time
}

// reserve takes one token and returns how long to wait before using it.
func (b *tokenBucket) reserve(now time.Time) time.Duration {
	if !b.last.IsZero() {
		elapsed := max(0, now.Sub(b.last))
		b.tokens = min(b.capacity, b.tokens+elapsed.Seconds()*b.perSecond)
	}
	b.last = now
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.perSecond * float64(time.Second))
}
