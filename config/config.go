// Package config owns pipeline_exporter's YAML configuration: the schema, its
// defaults, ${VAR} expansion, validation with file:line errors, secrets that
// never print, and the SafeConfig holder that reloads it.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Defaults, applied before a section is decoded so that an absent key keeps
// its default and an explicit zero (poll_interval: 0) stays zero.
var (
	// DefaultGitHub holds the defaults of the github section.
	DefaultGitHub = GitHub{
		APIURL:            "https://api.github.com/",
		PollInterval:      model.Duration(time.Minute),
		BackfillWindow:    model.Duration(24 * time.Hour),
		ReconcileInterval: model.Duration(5 * time.Minute),
	}
	// DefaultWebhooks holds the defaults of the webhooks section.
	DefaultWebhooks = Webhooks{
		MaxBodyBytes: 1 << 20,
	}
	// DefaultCloudflare holds the defaults of the cloudflare section.
	DefaultCloudflare = Cloudflare{
		APIURL:       "https://api.cloudflare.com/client/v4",
		PollInterval: model.Duration(time.Minute),
	}
	// DefaultPipeline holds the defaults of each pipelines entry.
	DefaultPipeline = Pipeline{
		DispatchTimeout: model.Duration(10 * time.Minute),
		// GitHub's own limit for a job.
		Timeout:       model.Duration(6 * time.Hour),
		SlowThreshold: model.Duration(15 * time.Minute),
		// GitHub timestamps have one-second resolution and clocks drift.
		ClockSkew: model.Duration(time.Minute),
	}
	// DefaultVerify holds the defaults of a pipeline's verify section.
	DefaultVerify = Verify{
		ExpectStatus:    200,
		Timeout:         model.Duration(10 * time.Second),
		Deadline:        model.Duration(5 * time.Minute),
		RecheckInterval: model.Duration(5 * time.Minute),
	}
)

// MaxWebhookBodyBytes is the largest allowed webhooks.max_body_bytes: GitHub
// does not deliver payloads above 25 MiB, so a larger cap only helps abuse.
const MaxWebhookBodyBytes = 25 << 20

// Config is the whole configuration file.
type Config struct {
	// GitHub is optional: without it, runs come from webhooks only.
	GitHub     *GitHub     `yaml:"github,omitempty"`
	Webhooks   Webhooks    `yaml:"webhooks"`
	Cloudflare *Cloudflare `yaml:"cloudflare,omitempty"`
	Pipelines  []Pipeline  `yaml:"pipelines"`
	// MaxPipelines bounds the pipelines discovered from repository
	// patterns; runs of further repositories are ignored. A change takes
	// a restart.
	MaxPipelines int `yaml:"max_pipelines"`
	// Tracing exports each finished run as an OpenTelemetry trace; off
	// unless an endpoint is set here or in the OTEL_EXPORTER_OTLP_*
	// variables. A change takes a restart.
	Tracing Tracing `yaml:"tracing,omitempty"`
}

// Tracing configures the OTLP/gRPC trace exporter.
type Tracing struct {
	// Endpoint is host:port or a URL of an OTLP/gRPC collector.
	Endpoint string `yaml:"endpoint,omitempty"`
	// Insecure sends without TLS.
	Insecure bool `yaml:"insecure,omitempty"`
}

// UnmarshalYAML decodes strictly.
func (t *Tracing) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Tracing
	return decodeStruct(unmarshal, (*plain)(t))
}

// UnmarshalYAML applies the defaults of the webhooks section, which is a
// value and so keeps them when the file leaves it out.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = Config{Webhooks: DefaultWebhooks, MaxPipelines: pipeline.DefaultMaxPipelines}
	type plain Config
	return decodeStruct(unmarshal, (*plain)(c))
}

// GitHub configures the GitHub Actions API poller.
type GitHub struct {
	// Owner and Repo name one repository; Repos lists several as owner/repo.
	Owner     string   `yaml:"owner,omitempty"`
	Repo      string   `yaml:"repo,omitempty"`
	Repos     []string `yaml:"repositories,omitempty"`
	Token     Secret   `yaml:"token,omitempty"`
	TokenFile string   `yaml:"token_file,omitempty"`
	// APIURL always ends with a slash after loading, as go-github requires.
	APIURL string `yaml:"api_url"`
	// PollInterval 0 disables polling.
	PollInterval model.Duration `yaml:"poll_interval"`
	// BackfillWindow is how far back the poller reconciles after a gap.
	BackfillWindow model.Duration `yaml:"backfill_window"`
	// Hooks are the webhooks pointing at this exporter whose deliveries are
	// read back from GitHub, so that one GitHub failed to deliver is not lost.
	Hooks []Hook `yaml:"hooks,omitempty"`
	// ReconcileInterval is the wait between two readings of the hooks'
	// deliveries; 0 disables them.
	ReconcileInterval model.Duration `yaml:"reconcile_interval"`
}

// Hook is a repository or organization webhook, by its id.
type Hook struct {
	Repository   string `yaml:"repository,omitempty"`
	Organization string `yaml:"organization,omitempty"`
	ID           int64  `yaml:"id"`
}

// UnmarshalYAML decodes strictly.
func (h *Hook) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Hook
	return decodeStruct(unmarshal, (*plain)(h))
}

// Name is the hook as the metrics' hook label and /api/status show it:
// owner/repo#id or org#id.
func (h Hook) Name() string {
	owner := h.Repository
	if owner == "" {
		owner = h.Organization
	}
	return fmt.Sprintf("%s#%d", owner, h.ID)
}

// UnmarshalYAML applies DefaultGitHub before decoding.
func (g *GitHub) UnmarshalYAML(unmarshal func(any) error) error {
	*g = DefaultGitHub
	type plain GitHub
	return decodeStruct(unmarshal, (*plain)(g))
}

// Repositories returns the watched repositories as owner/repo.
func (g *GitHub) Repositories() []string {
	if g.Repo != "" {
		return []string{g.Owner + "/" + g.Repo}
	}
	return append([]string(nil), g.Repos...)
}

// Webhooks configures the webhook receivers. A source without a secret is
// disabled: its path answers 404, so nothing unsigned is ever accepted.
type Webhooks struct {
	GitHub     WebhookSource   `yaml:"github"`
	Supabase   SupabaseWebhook `yaml:"supabase"`
	MailerLite WebhookSource   `yaml:"mailerlite"`
	Cloudflare WebhookSource   `yaml:"cloudflare"`
	// MaxBodyBytes caps every request body.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// UnmarshalYAML applies DefaultWebhooks before decoding.
func (w *Webhooks) UnmarshalYAML(unmarshal func(any) error) error {
	*w = DefaultWebhooks
	type plain Webhooks
	return decodeStruct(unmarshal, (*plain)(w))
}

// Secret returns the secret configured for a source's webhook, empty when
// the source is disabled.
func (w *Webhooks) Secret(s pipeline.Source) Secret {
	switch s {
	case pipeline.SourceGitHub:
		return w.GitHub.Secret
	case pipeline.SourceSupabase:
		return w.Supabase.Secret
	case pipeline.SourceMailerLite:
		return w.MailerLite.Secret
	case pipeline.SourceCloudflare:
		return w.Cloudflare.Secret
	}
	return ""
}

// WebhookSource holds the shared secret of one webhook source.
type WebhookSource struct {
	Secret     Secret `yaml:"secret,omitempty"`
	SecretFile string `yaml:"secret_file,omitempty"`
}

// UnmarshalYAML decodes strictly.
func (w *WebhookSource) UnmarshalYAML(unmarshal func(any) error) error {
	type plain WebhookSource
	return decodeStruct(unmarshal, (*plain)(w))
}

// SupabaseWebhook holds the Supabase secret. Supabase does not sign
// database webhooks; the user sets a header carrying the secret.
type SupabaseWebhook struct {
	Secret     Secret `yaml:"secret,omitempty"`
	SecretFile string `yaml:"secret_file,omitempty"`
	// Header names the header carrying the secret verbatim; empty means
	// "Authorization: Bearer <secret>".
	Header string `yaml:"header,omitempty"`
}

// UnmarshalYAML decodes strictly.
func (w *SupabaseWebhook) UnmarshalYAML(unmarshal func(any) error) error {
	type plain SupabaseWebhook
	return decodeStruct(unmarshal, (*plain)(w))
}

// Cloudflare configures the Cloudflare Pages API poller.
type Cloudflare struct {
	AccountID    string `yaml:"account_id,omitempty"`
	APIToken     Secret `yaml:"api_token,omitempty"`
	APITokenFile string `yaml:"api_token_file,omitempty"`
	// APIURL never ends with a slash after loading.
	APIURL string `yaml:"api_url"`
	// PollInterval 0 disables polling.
	PollInterval model.Duration `yaml:"poll_interval"`
}

// UnmarshalYAML applies DefaultCloudflare before decoding.
func (c *Cloudflare) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultCloudflare
	type plain Cloudflare
	return decodeStruct(unmarshal, (*plain)(c))
}

// Pipeline is one watched publish pipeline.
type Pipeline struct {
	Name string `yaml:"name"`
	// Repository is the owner/repo whose workflow runs, jobs, pushes and
	// dispatches belong to the pipeline. Empty means the one repository
	// the github section names, or any repository without one; with
	// several watched repositories it is required. A pattern (acme/*,
	// path.Match, case-insensitive) stands for one pipeline per matching
	// repository, named by Name as a template over .Repository, .Owner and
	// .Repo ({{ .Repo }} when Name is empty); see IsPattern.
	Repository string `yaml:"repository,omitempty"`
	// Workflow is a workflow file name (deploy.yml) or a numeric workflow id.
	Workflow string `yaml:"workflow"`
	// Branches limits the tracked runs; empty tracks every branch.
	Branches        []string       `yaml:"branches,omitempty"`
	Triggers        []Trigger      `yaml:"triggers,omitempty"`
	PagesProject    string         `yaml:"pages_project,omitempty"`
	Verify          *Verify        `yaml:"verify,omitempty"`
	DispatchTimeout model.Duration `yaml:"dispatch_timeout"`
	Timeout         model.Duration `yaml:"timeout"`
	SlowThreshold   model.Duration `yaml:"slow_threshold"`
	ClockSkew       model.Duration `yaml:"clock_skew"`
}

// UnmarshalYAML applies DefaultPipeline before decoding, and the default
// name template of a pattern pipeline after.
func (p *Pipeline) UnmarshalYAML(unmarshal func(any) error) error {
	*p = DefaultPipeline
	type plain Pipeline
	if err := decodeStruct(unmarshal, (*plain)(p)); err != nil {
		return err
	}
	if p.IsPattern() && p.Name == "" {
		p.Name = DefaultNameTemplate
	}
	return nil
}

// DefaultNameTemplate names a pipeline discovered from a repository
// pattern when the pattern pipeline has no name.
const DefaultNameTemplate = "{{ .Repo }}"

// IsPattern reports whether the pipeline's repository is a pattern, which
// stands for one pipeline per matching repository.
func (p *Pipeline) IsPattern() bool {
	return strings.ContainsAny(p.Repository, `*?[\`)
}

// Trigger is one rule for which outside events start a run.
type Trigger struct {
	Source pipeline.Source `yaml:"source"`
	// Table is the Supabase table, without schema; empty matches every table.
	Table string `yaml:"table,omitempty"`
	// Events lists the accepted event types; empty accepts all.
	Events []string `yaml:"events,omitempty"`
	// Pipeline, on a rule of a pattern pipeline, is the name of the one
	// pipeline discovered from the pattern that the rule opens runs in;
	// empty opens them in every one.
	Pipeline string `yaml:"pipeline,omitempty"`
}

// Verify configures the HTTP check of the live site after a deploy.
type Verify struct {
	URL          string         `yaml:"url"`
	ExpectStatus int            `yaml:"expect_status"`
	Timeout      model.Duration `yaml:"timeout"`
	BodyContains string         `yaml:"body_contains,omitempty"`
	BodyRegexp   *Regexp        `yaml:"body_regexp,omitempty"`
	// Deadline is how long verify keeps retrying before the stage fails.
	Deadline model.Duration `yaml:"deadline"`
	// Build, when set, is how the site shows which build it serves.
	Build *Build `yaml:"build,omitempty"`
	// RecheckInterval is how often the pipeline's live build is checked
	// again after it was verified; 0 never.
	RecheckInterval model.Duration `yaml:"recheck_interval"`
}

// UnmarshalYAML applies DefaultVerify before decoding.
func (v *Verify) UnmarshalYAML(unmarshal func(any) error) error {
	*v = DefaultVerify
	type plain Verify
	return decodeStruct(unmarshal, (*plain)(v))
}

// UnmarshalYAML decodes strictly.
func (t *Trigger) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Trigger
	return decodeStruct(unmarshal, (*plain)(t))
}

// Regexp is a regular expression compiled when the config loads, so a bad
// pattern fails the load instead of the first verify. It is unanchored: it
// matches anywhere in the body.
type Regexp struct {
	*regexp.Regexp
}

// UnmarshalYAML compiles the pattern.
func (r *Regexp) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	re, err := regexp.Compile(s)
	if err != nil {
		return err
	}
	r.Regexp = re
	return nil
}

// MarshalText returns the pattern as written, for YAML and JSON output.
func (r Regexp) MarshalText() ([]byte, error) {
	if r.Regexp == nil {
		return nil, nil
	}
	return []byte(r.String()), nil
}

// Load reads the file at path and parses it with Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// Parse expands environment variables in data, decodes it strictly, applies
// defaults, reads *_file secrets and validates the result. filename names the
// file in errors, and relative *_file paths are resolved against its
// directory.
func Parse(data []byte, filename string) (*Config, error) {
	d := &decoder{file: filename, dir: filepath.Dir(filename), lines: map[string]int{}, paths: map[position]string{}, vars: map[string][]string{}}
	return d.parse(data)
}

// Specs returns the pipelines as the Tracker needs them. A pipeline that
// names no repository gets the one the github section names; validation
// has refused the config if that section names several.
func (c *Config) Specs() []pipeline.Spec {
	var only string
	if c.GitHub != nil {
		if repos := c.GitHub.Repositories(); len(repos) == 1 {
			only = repos[0]
		}
	}
	specs := make([]pipeline.Spec, 0, len(c.Pipelines))
	for _, p := range c.Pipelines {
		repo := p.Repository
		if repo == "" {
			repo = only
		}
		s := pipeline.Spec{
			Name:            p.Name,
			Repository:      repo,
			Discover:        p.IsPattern(),
			Workflow:        p.Workflow,
			Branches:        append([]string(nil), p.Branches...),
			PagesProject:    p.PagesProject,
			Verify:          p.Verify != nil,
			DispatchTimeout: time.Duration(p.DispatchTimeout),
			Timeout:         time.Duration(p.Timeout),
			SlowThreshold:   time.Duration(p.SlowThreshold),
			ClockSkew:       time.Duration(p.ClockSkew),
		}
		for _, t := range p.Triggers {
			s.Triggers = append(s.Triggers, pipeline.TriggerRule{
				Source:   t.Source,
				Table:    t.Table,
				Events:   append([]string(nil), t.Events...),
				Pipeline: t.Pipeline,
			})
		}
		specs = append(specs, s)
	}
	return specs
}
