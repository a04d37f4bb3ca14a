package config

import (
	"fmt"
	"net/url"
	pathpkg "path"
	"regexp"
	"slices"
	"strings"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

var (
	pipelineName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_-]*$`)
	// A run's workflow is matched by the file name of its path or by its
	// numeric id, so those are the two forms a pipeline may give.
	workflowFile = regexp.MustCompile(`^[^/@]+\.ya?ml$`)
	workflowID   = regexp.MustCompile(`^[1-9][0-9]*$`)
	// GitHub's rules: an owner is 1-39 letters, digits and inner hyphens; a
	// repository name 1-100 letters, digits, '.', '-' and '_'.
	repository = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?/[A-Za-z0-9._-]{1,100}$`)
)

// supabaseEvents are the operations a Supabase database webhook reports.
var supabaseEvents = []string{"INSERT", "UPDATE", "DELETE"}

// githubEvents are the values a workflow run's `event` can take: the events
// listed in GitHub's "Events that trigger workflows", plus "dynamic", which
// GitHub reports for the runs it creates itself (Dependabot, CodeQL default
// setup). Checking them catches a typo that would make a rule never match.
var githubEvents = []string{
	"branch_protection_rule", "check_run", "check_suite", "create", "delete",
	"deployment", "deployment_status", "discussion", "discussion_comment",
	"dynamic", "fork", "gollum", "image_version", "issue_comment", "issues",
	"label", "merge_group", "milestone", "page_build", "public",
	"pull_request", "pull_request_review", "pull_request_review_comment",
	"pull_request_target", "push", "registry_package", "release",
	"repository_dispatch", "schedule", "status", "watch", "workflow_call",
	"workflow_dispatch", "workflow_run",
}

// validate checks what the schema cannot express and normalises the API
// URLs, reporting every problem. Secrets are already loaded, so the checks
// see *_file secrets too.
func (d *decoder) validate(c *Config) {
	if c.GitHub != nil {
		d.report(d.validateGitHub(c.GitHub))
	}
	d.report(d.validateWebhooks(&c.Webhooks))
	if c.Cloudflare != nil {
		d.report(d.validateCloudflare(c.Cloudflare))
	}
	if len(c.Pipelines) == 0 {
		d.report(d.errorf("pipelines", "at least one pipeline is required"))
		return
	}
	polling := c.GitHub != nil && c.GitHub.PollInterval > 0
	if !polling && c.Webhooks.GitHub.Secret == "" {
		d.report(d.errorf("pipelines", "no source of workflow runs: set webhooks.github.secret, or a github section with a token to poll"))
	}
	if c.MaxPipelines <= 0 {
		d.report(d.errorf("max_pipelines", "must be positive"))
	}
	names := map[string]int{}
	for i := range c.Pipelines {
		path := fmt.Sprintf("pipelines[%d]", i)
		p := &c.Pipelines[i]
		// A pattern's name is a template; two patterns are the same
		// pipelines when both their repository and template are.
		key := p.Name
		if p.IsPattern() {
			key = strings.ToLower(p.Repository) + "\x00" + p.Name
		}
		if first, dup := names[key]; dup && p.Name != "" {
			d.report(d.errorf(path+".name", "duplicate pipeline name (first at line %d)", first))
		} else {
			names[key] = d.line(path + ".name")
		}
		d.validatePipeline(c, p, path)
	}
}

func (d *decoder) validateGitHub(g *GitHub) error {
	switch {
	case g.Repo != "" && len(g.Repos) > 0:
		return d.errorf("github.repositories", "set either owner and repo, or repositories, not both")
	case g.Repo != "":
		if g.Owner == "" {
			return d.errorf("github.owner", "is required with repo")
		}
		if strings.Contains(g.Owner, "/") || strings.Contains(g.Repo, "/") {
			return d.errorf("github.repo", "owner and repo must not contain '/'; use repositories for owner/repo entries")
		}
	case len(g.Repos) > 0:
		if g.Owner != "" {
			return d.errorf("github.owner", "goes with repo; repositories entries are owner/repo")
		}
		for i, r := range g.Repos {
			if !repository.MatchString(r) {
				return d.errorf(fmt.Sprintf("github.repositories[%d]", i), "must be owner/repo")
			}
			if slices.Contains(g.Repos[:i], r) {
				return d.errorf(fmt.Sprintf("github.repositories[%d]", i), "duplicate repository %s", r)
			}
		}
	case len(g.Hooks) == 0:
		return d.errorf("github", "set owner and repo, or repositories")
	}
	u, err := d.httpURL("github.api_url", g.APIURL)
	if err != nil {
		return err
	}
	// go-github resolves paths against BaseURL, which must end with "/".
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	g.APIURL = u.String()
	if g.PollInterval > 0 && g.Token == "" {
		return d.errorf("github.poll_interval", "polling needs github.token or github.token_file (poll_interval: 0 disables polling)")
	}
	return d.validateHooks(g)
}

// owner is a GitHub user or organization name.
var owner = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$`)

func (d *decoder) validateHooks(g *GitHub) error {
	seen := map[Hook]int{}
	for i, h := range g.Hooks {
		d.report(d.validateHook(h, fmt.Sprintf("github.hooks[%d]", i), seen))
	}
	if len(g.Hooks) > 0 && g.ReconcileInterval > 0 && g.Token == "" {
		return d.errorf("github.hooks", "reading webhook deliveries needs github.token or github.token_file (reconcile_interval: 0 disables it)")
	}
	return nil
}

// validateHook checks one of github.hooks; seen holds those before it.
func (d *decoder) validateHook(h Hook, path string, seen map[Hook]int) error {
	switch {
	case h.Repository != "" && h.Organization != "":
		return d.errorf(path+".organization", "set either repository or organization, not both")
	case h.Repository != "":
		if !repository.MatchString(h.Repository) {
			return d.errorf(path+".repository", "must be owner/repo")
		}
	case h.Organization != "":
		if !owner.MatchString(h.Organization) {
			return d.errorf(path+".organization", "must be an organization name (no '/')")
		}
	default:
		return d.errorf(path, "set repository (a repository's webhook) or organization (an organization's webhook)")
	}
	if h.ID <= 0 {
		return d.errorf(path+".id", "is required: the webhook's numeric id, the number at the end of its settings page's URL")
	}
	key := Hook{Repository: strings.ToLower(h.Repository), Organization: strings.ToLower(h.Organization), ID: h.ID}
	if first, dup := seen[key]; dup {
		return d.errorf(path, "duplicate hook (first at line %d)", first)
	}
	seen[key] = d.line(path)
	return nil
}

func (d *decoder) validateWebhooks(w *Webhooks) error {
	if w.MaxBodyBytes <= 0 || w.MaxBodyBytes > MaxWebhookBodyBytes {
		return d.errorf("webhooks.max_body_bytes", "must be between 1 and %d (GitHub's 25 MiB cap)", MaxWebhookBodyBytes)
	}
	if h := w.Supabase.Header; h != "" {
		if w.Supabase.Secret == "" {
			return d.errorf("webhooks.supabase.header", "needs webhooks.supabase.secret or secret_file")
		}
		if !validHeaderName(h) {
			return d.errorf("webhooks.supabase.header", "is not a valid HTTP header name")
		}
	}
	return nil
}

func (d *decoder) validateCloudflare(c *Cloudflare) error {
	u, err := d.httpURL("cloudflare.api_url", c.APIURL)
	if err != nil {
		return err
	}
	// The poller appends /accounts/...; a trailing slash would double it.
	u.Path = strings.TrimRight(u.Path, "/")
	c.APIURL = u.String()
	if c.PollInterval > 0 {
		if c.AccountID == "" {
			return d.errorf("cloudflare.account_id", "is required for polling (poll_interval: 0 disables polling)")
		}
		if c.APIToken == "" {
			return d.errorf("cloudflare.poll_interval", "polling needs cloudflare.api_token or cloudflare.api_token_file (poll_interval: 0 disables polling)")
		}
	}
	return nil
}

// httpURL parses an http or https URL. The value is left out of errors: it
// may carry credentials.
func (d *decoder) httpURL(path, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, d.errorf(path, "must be an http or https URL")
	}
	return u, nil
}

// validatePipeline reports each of the pipeline's problems.
func (d *decoder) validatePipeline(c *Config, p *Pipeline, path string) {
	switch {
	case p.IsPattern():
		d.report(d.validateNameTemplate(p.Name, path+".name"))
	case p.Name == "":
		d.report(d.errorf(path+".name", "is required"))
	case !pipelineName.MatchString(p.Name):
		d.report(d.errorf(path+".name", "must match %s", pipelineName))
	}
	switch {
	case p.Workflow == "":
		d.report(d.errorf(path+".workflow", "is required"))
	case !workflowFile.MatchString(p.Workflow) && !workflowID.MatchString(p.Workflow):
		d.report(d.errorf(path+".workflow", "must be a workflow file name such as deploy.yml (not a path) or a numeric workflow id"))
	}
	d.report(d.validateRepository(c, p, path))
	for i, b := range p.Branches {
		if b == "" {
			d.report(d.errorf(fmt.Sprintf("%s.branches[%d]", path, i), "must not be empty"))
		}
	}
	for i := range p.Triggers {
		key := fmt.Sprintf("%s.triggers[%d]", path, i)
		d.report(d.validateTrigger(c, &p.Triggers[i], key))
		d.report(d.validateTriggerPipeline(c, p, p.Triggers[i].Pipeline, key+".pipeline"))
	}
	if p.PagesProject != "" {
		switch {
		case c.Cloudflare == nil:
			d.report(d.errorf(path+".pages_project", "needs the cloudflare section"))
		case c.Cloudflare.PollInterval == 0 && c.Webhooks.Cloudflare.Secret == "":
			d.report(d.errorf(path+".pages_project", "needs cloudflare polling or webhooks.cloudflare.secret"))
		}
	}
	if p.Verify != nil {
		d.report(d.validateVerify(p.Verify, path+".verify"))
		if p.Verify.Build != nil {
			d.report(d.validateBuild(p.Verify.Build, p.PagesProject, path+".verify.build"))
		}
	}
	for _, f := range []struct {
		key   string
		value int64
	}{
		{"dispatch_timeout", int64(p.DispatchTimeout)},
		{"timeout", int64(p.Timeout)},
		{"slow_threshold", int64(p.SlowThreshold)},
	} {
		if f.value <= 0 {
			d.report(d.errorf(path+"."+f.key, "must be positive"))
		}
	}
}

// validateRepository checks the pipeline's repository, which it must name
// when the github section watches several: its runs could come from any of
// them (docs/configuration.md).
func (d *decoder) validateRepository(c *Config, p *Pipeline, path string) error {
	if p.IsPattern() {
		owner, repo, ok := strings.Cut(p.Repository, "/")
		if _, err := pathpkg.Match(p.Repository, ""); err != nil || !ok || owner == "" || repo == "" || strings.Contains(repo, "/") {
			return d.errorf(path+".repository", "must be owner/repo or a pattern of them such as acme/* (Go's path.Match)")
		}
		return nil
	}
	if p.Repository != "" {
		if !repository.MatchString(p.Repository) {
			return d.errorf(path+".repository", "must be owner/repo")
		}
		return nil
	}
	if c.GitHub != nil && len(c.GitHub.Repositories()) > 1 {
		return d.errorf(path+".repository", "is required: github.repositories lists several, so name the one this pipeline's workflow runs in")
	}
	return nil
}

// nameSamples are the repositories a pattern's name template is tried on
// at load: two, so that a template that names every repository alike (a
// clash at the second one) is refused before any run.
var nameSamples = []string{"owner/repo-a", "owner/repo-b"}

// validateNameTemplate checks the name template of a pattern pipeline: it
// parses, names only known fields, gives a valid pipeline name and
// different names to different repositories.
func (d *decoder) validateNameTemplate(text, path string) error {
	tmpl, err := pipeline.ParseNameTemplate(text)
	if err != nil {
		return d.errorf(path, "does not parse as a name template: %v", err)
	}
	var names []string
	for _, repo := range nameSamples {
		name, err := pipeline.DiscoveredName(tmpl, repo)
		if err != nil {
			return d.errorf(path, "gives repository %s no pipeline name: %v (fields: .Repository, .Owner, .Repo)", repo, err)
		}
		names = append(names, name)
	}
	if names[0] == names[1] {
		return d.errorf(path, "gives every repository the same name %q: use .Repo or .Repository", names[0])
	}
	return nil
}

func (d *decoder) validateTrigger(c *Config, t *Trigger, path string) error {
	if !slices.Contains(pipeline.Sources, t.Source) {
		return d.errorf(path+".source", "must be one of github, supabase, mailerlite, cloudflare")
	}
	if t.Table != "" {
		if t.Source != pipeline.SourceSupabase {
			return d.errorf(path+".table", "applies to supabase triggers only")
		}
		if strings.Contains(t.Table, ".") {
			return d.errorf(path+".table", "give the table name without its schema")
		}
	}
	for i, e := range t.Events {
		key := fmt.Sprintf("%s.events[%d]", path, i)
		switch {
		case e == "":
			return d.errorf(key, "must not be empty")
		case t.Source == pipeline.SourceSupabase && !slices.Contains(supabaseEvents, e):
			return d.errorf(key, "supabase events are INSERT, UPDATE and DELETE")
		case t.Source == pipeline.SourceGitHub && !slices.Contains(githubEvents, e):
			return d.errorf(key, "is not an event that starts GitHub workflow runs")
		}
	}
	// GitHub triggers are read from workflow runs, whose source validate
	// already required; the others arrive only as webhooks.
	if t.Source != pipeline.SourceGitHub && c.Webhooks.Secret(t.Source) == "" {
		return d.errorf(path+".source", "trigger source %s needs webhooks.%s.secret or secret_file", t.Source, t.Source)
	}
	return nil
}

// validateTriggerPipeline checks the pipeline a trigger rule of p names:
// one discovered from p's pattern, so p must be a pattern, and the name one
// a pipeline can have that no written pipeline has (a discovered pipeline
// never takes a written one's name). Whether p's template can give the
// name is not knowable before the repository is seen.
func (d *decoder) validateTriggerPipeline(c *Config, p *Pipeline, name, path string) error {
	if name == "" {
		return nil
	}
	if !p.IsPattern() {
		return d.errorf(path, "applies only to a pipeline whose repository is a pattern such as acme/*, to name one of the pipelines discovered from it; this pipeline is one already")
	}
	if err := pipeline.ValidPipelineName(name); err != nil {
		return d.errorf(path, "is not a pipeline name: %v", err)
	}
	for i := range c.Pipelines {
		if w := &c.Pipelines[i]; !w.IsPattern() && w.Name == name {
			return d.errorf(path, "names the pipeline written at line %d, which is not discovered from this pattern: name one of the pattern's own pipelines", d.line(fmt.Sprintf("pipelines[%d].name", i)))
		}
	}
	return nil
}

func (d *decoder) validateVerify(v *Verify, path string) error {
	switch {
	case v.URL == "":
		return d.errorf(path+".url", "is required")
	case v.ExpectStatus < 100 || v.ExpectStatus > 599:
		return d.errorf(path+".expect_status", "must be an HTTP status code (100-599)")
	case v.Timeout <= 0:
		return d.errorf(path+".timeout", "must be positive")
	case v.Deadline < v.Timeout:
		return d.errorf(path+".deadline", "must be at least timeout (%s)", v.Timeout)
	case v.BodyContains != "" && v.BodyRegexp != nil:
		return d.errorf(path+".body_regexp", "set either body_contains or body_regexp, not both")
	}
	if _, err := d.httpURL(path+".url", v.URL); err != nil {
		return err
	}
	return nil
}

// validHeaderName reports whether s is an HTTP field name (RFC 9110 token).
func validHeaderName(s string) bool {
	for _, r := range s {
		token := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)
		if !token {
			return false
		}
	}
	return s != ""
}
