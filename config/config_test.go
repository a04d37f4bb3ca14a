package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

func TestLoadBad(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"unknown_key", "testdata/bad/unknown_key.yml:6: pipelines[0].verfy: unknown key (did you mean verify?)"},
		{"unknown_top", "testdata/bad/unknown_top.yml:1: pipelines: at least one pipeline is required\ntestdata/bad/unknown_top.yml:3: pipeline: unknown key (did you mean pipelines?)"},
		{"merge_unknown_key", "testdata/bad/merge_unknown_key.yml:7: pipelines[1].url: unknown key"},
		{"duplicate_key", "testdata/bad/duplicate_key.yml:6: pipelines[0].workflow: already set at line 5"},
		{"reserved_char", "testdata/bad/reserved_char.yml:3: the character U+E000 is reserved for ${VAR} expansion"},
		{"two_documents", "testdata/bad/two_documents.yml:3: a second YAML document is not allowed"},
		{"syntax", "testdata/bad/syntax.yml:3: did not find expected '-' indicator"},
		{"wrong_kind", "testdata/bad/wrong_kind.yml:3: pipelines: expected a list, got a string"},
		{"bad_int", "testdata/bad/bad_int.yml:3: webhooks.max_body_bytes: expected an integer, got a string"},
		{"bad_duration", "testdata/bad/bad_duration.yml:6: pipelines[0].timeout: must be a duration such as 90s, 15m, 6h or 2d"},
		{"negative_poll", "testdata/bad/negative_poll.yml:5: github.poll_interval: must be a duration such as 90s, 15m, 6h or 2d"},
		{"zero_timeout", "testdata/bad/zero_timeout.yml:6: pipelines[0].timeout: must be positive"},
		{"empty", "testdata/bad/empty.yml:1: pipelines: at least one pipeline is required"},
		{"no_pipelines", "testdata/bad/no_pipelines.yml:1: pipelines: at least one pipeline is required"},

		{"repo_and_repositories", "testdata/bad/repo_and_repositories.yml:4: github.repositories: set either owner and repo, or repositories, not both"},
		{"repo_without_owner", "testdata/bad/repo_without_owner.yml:1: github.owner: is required with repo"},
		{"bad_repositories_entry", "testdata/bad/bad_repositories_entry.yml:4: github.repositories[1]: must be owner/repo\n" +
			"testdata/bad/bad_repositories_entry.yml:9: pipelines[0].repository: is required: github.repositories lists several, so name the one this pipeline's workflow runs in"},
		{"repository_required", "testdata/bad/repository_required.yml:7: pipelines[0].repository: is required: github.repositories lists several, so name the one this pipeline's workflow runs in"},
		{"bad_repository", "testdata/bad/bad_repository.yml:5: pipelines[0].repository: must be owner/repo"},
		{"pattern_bad", "testdata/bad/pattern_bad.yml:4: pipelines[0].repository: must be owner/repo or a pattern of them such as acme/* (Go's path.Match)"},
		{"pattern_same_name", `testdata/bad/pattern_same_name.yml:4: pipelines[0].name: gives every repository the same name "owner": use .Repo or .Repository`},
		{"pattern_unknown_field", `testdata/bad/pattern_unknown_field.yml:4: pipelines[0].name: gives repository owner/repo-a no pipeline name: template: name:1:3: executing "name" at <.Name>: can't evaluate field Name in type pipeline.NameData (fields: .Repository, .Owner, .Repo)`},
		{"pattern_empty_name", "testdata/bad/pattern_empty_name.yml:4: pipelines[0].name: gives repository owner/repo-a no pipeline name: the name is empty (fields: .Repository, .Owner, .Repo)"},
		{"pattern_duplicate", "testdata/bad/pattern_duplicate.yml:6: pipelines[1].name: duplicate pipeline name (first at line 4)"},
		{"max_pipelines_zero", "testdata/bad/max_pipelines_zero.yml:3: max_pipelines: must be positive"},
		{"repository_not_a_string", "testdata/bad/repository_not_a_string.yml:5: pipelines[0].repository: expected a string, got a list"},
		{"trigger_unknown_key", "testdata/bad/trigger_unknown_key.yml:8: pipelines[0].triggers[0].tabel: unknown key (did you mean table?)"},
		{"branch_not_a_string", "testdata/bad/branch_not_a_string.yml:6: pipelines[0].branches[1]: expected a string, got a mapping"},
		{"pipeline_not_a_mapping", "testdata/bad/pipeline_not_a_mapping.yml:4: pipelines[0]: expected a mapping, got a string"},
		{"no_repo", "testdata/bad/no_repo.yml:1: github: set owner and repo, or repositories"},
		{"bad_api_url", "testdata/bad/bad_api_url.yml:5: github.api_url: must be an http or https URL"},
		{"hook_both", "testdata/bad/hook_both.yml:6: github.hooks[0].organization: set either repository or organization, not both"},
		{"hook_without_owner", "testdata/bad/hook_without_owner.yml:5: github.hooks[0]: set repository (a repository's webhook) or organization (an organization's webhook)"},
		{"hook_without_id", "testdata/bad/hook_without_id.yml:5: github.hooks[0].id: is required: the webhook's numeric id, the number at the end of its settings page's URL"},
		{"hook_bad_repository", "testdata/bad/hook_bad_repository.yml:5: github.hooks[0].repository: must be owner/repo"},
		{"hook_duplicate", "testdata/bad/hook_duplicate.yml:6: github.hooks[1]: duplicate hook (first at line 5)"},
		{"hook_without_token", "testdata/bad/hook_without_token.yml:4: github.hooks: reading webhook deliveries needs github.token or github.token_file (reconcile_interval: 0 disables it)"},
		{"hook_unknown_key", "testdata/bad/hook_unknown_key.yml:5: github.hooks[0].organisation: unknown key (did you mean organization?)"},
		{"negative_reconcile", "testdata/bad/negative_reconcile.yml:4: github.reconcile_interval: must be a duration such as 90s, 15m, 6h or 2d"},
		{"poll_without_token", "testdata/bad/poll_without_token.yml:1: github.poll_interval: polling needs github.token or github.token_file (poll_interval: 0 disables polling)"},

		{"empty_secret", "testdata/bad/empty_secret.yml:4: webhooks.supabase.secret: is empty: the environment variable ${PIPELINE_EXPORTER_TEST_UNSET} is unset or empty (set it, or remove the key to go without)"},
		{"empty_secret_file_path", "testdata/bad/empty_secret_file_path.yml:3: webhooks.mailerlite.secret_file: is empty; remove the key to go without"},
		{"secret_and_file", "testdata/bad/secret_and_file.yml:4: webhooks.github.secret_file: set either secret or secret_file, not both"},
		{"missing_secret_file", "testdata/bad/missing_secret_file.yml:3: webhooks.github.secret_file: no such file (a relative path is read from the config file's directory)"},
		{"empty_secret_file", "testdata/bad/empty_secret_file.yml:3: webhooks.github.secret_file: the file is empty"},
		{"body_too_big", "testdata/bad/body_too_big.yml:3: webhooks.max_body_bytes: must be between 1 and 26214400 (GitHub's 25 MiB cap)"},
		{"zero_body", "testdata/bad/zero_body.yml:3: webhooks.max_body_bytes: must be between 1 and 26214400 (GitHub's 25 MiB cap)"},
		{"header_without_secret", "testdata/bad/header_without_secret.yml:3: webhooks.supabase.header: needs webhooks.supabase.secret or secret_file"},
		{"bad_header", "testdata/bad/bad_header.yml:3: webhooks.supabase.header: is not a valid HTTP header name"},
		{"no_run_source", "testdata/bad/no_run_source.yml:3: pipelines: no source of workflow runs: set webhooks.github.secret, or a github section with a token to poll"},

		{"cloudflare_poll_without_token", "testdata/bad/cloudflare_poll_without_token.yml:3: cloudflare.poll_interval: polling needs cloudflare.api_token or cloudflare.api_token_file (poll_interval: 0 disables polling)"},
		{"cloudflare_poll_without_account", "testdata/bad/cloudflare_poll_without_account.yml:3: cloudflare.account_id: is required for polling (poll_interval: 0 disables polling)"},

		{"build_two_ways", "testdata/bad/build_two_ways.yml:8: pipelines[0].verify.build: set exactly one of body_contains, body_regexp, header, json_url, same_as_deployment"},
		{"build_unknown_field", "testdata/bad/build_unknown_field.yml:9: pipelines[0].verify.build.body_contains: unknown field Sha (fields: .Commit .ShortCommit .RunID .Branch .DeploymentID .DeploymentURL)"},
		{"build_bad_template", "testdata/bad/build_bad_template.yml:9: pipelines[0].verify.build.body_regexp: 1: unclosed action"},
		{"build_same_without_pages", "testdata/bad/build_same_without_pages.yml:8: pipelines[0].verify.build.same_as_deployment: needs the pipeline's pages_project: it compares the site with the run's own Pages deployment"},
		{"build_json_without_field", "testdata/bad/build_json_without_field.yml:8: pipelines[0].verify.build.json_field: is required with json_url: the dotted path of the commit in the document, such as commit or build.sha"},
		{"build_unknown_key", "testdata/bad/build_unknown_key.yml:9: pipelines[0].verify.build.headers: unknown key (did you mean header?)"},

		{"bad_name", `testdata/bad/bad_name.yml:4: pipelines[0].name: must match ^[a-zA-Z_][a-zA-Z0-9_-]*$`},
		{"missing_name", "testdata/bad/missing_name.yml:4: pipelines[0].name: is required"},
		{"duplicate_name", "testdata/bad/duplicate_name.yml:6: pipelines[1].name: duplicate pipeline name (first at line 4)"},
		{"missing_workflow", "testdata/bad/missing_workflow.yml:4: pipelines[0].workflow: is required"},
		{"workflow_path", "testdata/bad/workflow_path.yml:5: pipelines[0].workflow: must be a workflow file name such as deploy.yml (not a path) or a numeric workflow id"},
		{"empty_branch", "testdata/bad/empty_branch.yml:6: pipelines[0].branches[1]: must not be empty"},
		{"trigger_pipeline_written", "testdata/bad/trigger_pipeline_written.yml:11: pipelines[0].triggers[0].pipeline: applies only to a pipeline whose repository is a pattern such as acme/*, to name one of the pipelines discovered from it; this pipeline is one already"},
		{"trigger_pipeline_bad_name", `testdata/bad/trigger_pipeline_bad_name.yml:9: pipelines[0].triggers[0].pipeline: is not a pipeline name: the name " site" begins or ends with white space`},
		{"trigger_pipeline_taken", "testdata/bad/trigger_pipeline_taken.yml:9: pipelines[0].triggers[1].pipeline: names the pipeline written at line 11, which is not discovered from this pattern: name one of the pattern's own pipelines"},
		{"bad_source", "testdata/bad/bad_source.yml:7: pipelines[0].triggers[0].source: must be one of github, supabase, mailerlite, cloudflare"},
		{"table_not_supabase", "testdata/bad/table_not_supabase.yml:8: pipelines[0].triggers[0].table: applies to supabase triggers only"},
		{"schema_table", "testdata/bad/schema_table.yml:8: pipelines[0].triggers[0].table: give the table name without its schema"},
		{"bad_supabase_event", "testdata/bad/bad_supabase_event.yml:9: pipelines[0].triggers[0].events[1]: supabase events are INSERT, UPDATE and DELETE"},
		{"bad_github_event", "testdata/bad/bad_github_event.yml:8: pipelines[0].triggers[0].events[0]: is not an event that starts GitHub workflow runs"},
		{"trigger_without_secret", "testdata/bad/trigger_without_secret.yml:7: pipelines[0].triggers[0].source: trigger source supabase needs webhooks.supabase.secret or secret_file"},
		{"pages_without_cloudflare", "testdata/bad/pages_without_cloudflare.yml:6: pipelines[0].pages_project: needs the cloudflare section"},
		{"pages_without_source", "testdata/bad/pages_without_source.yml:8: pipelines[0].pages_project: needs cloudflare polling or webhooks.cloudflare.secret"},

		{"verify_without_url", "testdata/bad/verify_without_url.yml:6: pipelines[0].verify.url: is required"},
		{"verify_bad_url", "testdata/bad/verify_bad_url.yml:7: pipelines[0].verify.url: must be an http or https URL"},
		{"verify_both_matchers", "testdata/bad/verify_both_matchers.yml:9: pipelines[0].verify.body_regexp: set either body_contains or body_regexp, not both"},
		{"verify_bad_regexp", "testdata/bad/verify_bad_regexp.yml:8: pipelines[0].verify.body_regexp: is not a regular expression: missing closing )"},
		{"verify_bad_status", "testdata/bad/verify_bad_status.yml:8: pipelines[0].verify.expect_status: must be an HTTP status code (100-599)"},
		// Every problem of a file, in the order of its lines: those that do
		// not decode, then, once it decodes, those of its values.
		{"many_decode_errors", "testdata/bad/many_decode_errors.yml:2: github.owner: goes with repo; repositories entries are owner/repo\n" +
			"testdata/bad/many_decode_errors.yml:6: webhooks.supabase.secret: is empty: the environment variable ${PIPELINE_EXPORTER_TEST_UNSET} is unset or empty (set it, or remove the key to go without)\n" +
			"testdata/bad/many_decode_errors.yml:7: webhooks.max_body_bytes: must be between 1 and 26214400 (GitHub's 25 MiB cap)\n" +
			"testdata/bad/many_decode_errors.yml:11: pipelines[0].verfy: unknown key (did you mean verify?)\n" +
			"testdata/bad/many_decode_errors.yml:14: pipelines[1].branches: expected a list, got a string"},
		{"many_validation_errors", "testdata/bad/many_validation_errors.yml:5: pipelines[0].workflow: must be a workflow file name such as deploy.yml (not a path) or a numeric workflow id\n" +
			"testdata/bad/many_validation_errors.yml:6: pipelines[0].timeout: must be positive\n" +
			"testdata/bad/many_validation_errors.yml:7: pipelines[1].name: duplicate pipeline name (first at line 4)\n" +
			"testdata/bad/many_validation_errors.yml:9: pipelines[1].verify.url: must be an http or https URL"},
		{"verify_deadline_short", "testdata/bad/verify_deadline_short.yml:9: pipelines[0].verify.deadline: must be at least timeout (30s)"},
	}
	files, err := filepath.Glob("testdata/bad/*.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("testdata/bad has %d files, the table %d: every bad file needs its error", len(files), len(tests))
	}
	t.Setenv("PIPELINE_EXPORTER_TEST_UNSET", "")
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := Load("testdata/bad/" + tt.file + ".yml")
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want error %q", c, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Load error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestLoadGood(t *testing.T) {
	c, err := Load("testdata/good.yml")
	if err != nil {
		t.Fatal(err)
	}
	g := c.GitHub
	if got, want := g.Repositories(), []string{"octo-org/octo-repo", "octo-org/docs"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Repositories() = %v, want %v", got, want)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"github token from token_file, trimmed", g.Token.Value(), "ghp_from_file_0123"},
		{"github api_url gains a trailing slash", g.APIURL, "https://github.example.com/api/v3/"},
		{"github poll_interval", g.PollInterval, model.Duration(30 * time.Second)},
		{"github backfill_window in days", g.BackfillWindow, model.Duration(48 * time.Hour)},
		{"github hooks", len(g.Hooks), 2},
		{"github repository hook", g.Hooks[0], Hook{Repository: "octo-org/octo-repo", ID: 109948940}},
		{"github organization hook", g.Hooks[1], Hook{Organization: "octo-org", ID: 987654321}},
		{"github repository hook name", g.Hooks[0].Name(), "octo-org/octo-repo#109948940"},
		{"github organization hook name", g.Hooks[1].Name(), "octo-org#987654321"},
		{"github reconcile_interval", g.ReconcileInterval, model.Duration(90 * time.Second)},
		{"github webhook secret", c.Webhooks.GitHub.Secret.Value(), "gh-literal-secret"},
		{"supabase secret from secret_file", c.Webhooks.Supabase.Secret.Value(), "supabase-from-file"},
		{"supabase header", c.Webhooks.Supabase.Header, "X-Webhook-Secret"},
		{"mailerlite secret", c.Webhooks.Secret(pipeline.SourceMailerLite).Value(), "ml-literal-secret"},
		{"cloudflare webhook secret", c.Webhooks.Secret(pipeline.SourceCloudflare).Value(), "cf-literal-secret"},
		{"max_body_bytes", c.Webhooks.MaxBodyBytes, int64(2097152)},
		{"cloudflare account", c.Cloudflare.AccountID, "0123456789abcdef"},
		{"cloudflare token", c.Cloudflare.APIToken.Value(), "cf-api-token"},
		{"cloudflare api_url loses its trailing slash", c.Cloudflare.APIURL, "https://api.cloudflare.com/client/v4"},
		{"cloudflare poll_interval", c.Cloudflare.PollInterval, model.Duration(2 * time.Minute)},
		{"verify url", c.Pipelines[0].Verify.URL, "https://example.com/"},
		{"verify expect_status", c.Pipelines[0].Verify.ExpectStatus, 204},
		{"verify timeout", c.Pipelines[0].Verify.Timeout, model.Duration(5 * time.Second)},
		{"verify deadline", c.Pipelines[0].Verify.Deadline, model.Duration(2 * time.Minute)},
		{"verify regexp matches", c.Pipelines[0].Verify.BodyRegexp.MatchString("<html><title>My Blog</title>"), true},
		{"verify regexp is unanchored but exact", c.Pipelines[0].Verify.BodyRegexp.MatchString("<title>Shop</title>"), false},
		{"second pipeline has no verify", c.Pipelines[1].Verify == nil, true},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestSpecs(t *testing.T) {
	c, err := Load("testdata/good.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := []pipeline.Spec{
		{
			Name:       "site",
			Repository: "octo-org/octo-repo",
			Workflow:   "deploy.yml",
			Branches:   []string{"main", "release"},
			Triggers: []pipeline.TriggerRule{
				{Source: pipeline.SourceSupabase, Table: "posts", Events: []string{"INSERT", "UPDATE", "DELETE"}},
				{Source: pipeline.SourceMailerLite, Events: []string{"campaign.sent"}},
				{Source: pipeline.SourceGitHub, Events: []string{"push", "repository_dispatch", "workflow_dispatch"}},
				{Source: pipeline.SourceCloudflare, Events: []string{}},
			},
			PagesProject:    "my-site",
			Verify:          true,
			DispatchTimeout: 5 * time.Minute,
			Timeout:         time.Hour,
			SlowThreshold:   20 * time.Minute,
			ClockSkew:       30 * time.Second,
		},
		{
			Name:            "docs_2",
			Repository:      "Octo-Org/docs",
			Workflow:        "161335",
			Branches:        []string{},
			DispatchTimeout: 10 * time.Minute,
			Timeout:         6 * time.Hour,
			SlowThreshold:   15 * time.Minute,
			ClockSkew:       time.Minute,
		},
	}
	got := c.Specs()
	// A nil and an empty list mean the same to the Tracker (match all).
	for i := range got {
		if got[i].Branches == nil {
			got[i].Branches = []string{}
		}
		for j := range got[i].Triggers {
			if got[i].Triggers[j].Events == nil {
				got[i].Triggers[j].Events = []string{}
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Specs():\n got %+v\nwant %+v", got, want)
	}
	// Specs must not share slices with the config: the Tracker may keep them
	// across reloads.
	got = c.Specs()
	got[0].Branches[0] = "changed"
	got[0].Triggers[0].Events[0] = "changed"
	if c.Pipelines[0].Branches[0] != "main" || c.Pipelines[0].Triggers[0].Events[0] != "INSERT" {
		t.Error("Specs() shares slices with the Config")
	}
}

// TestSpecRepository checks which repository a pipeline follows when it
// names none (docs/configuration.md).
func TestSpecRepository(t *testing.T) {
	tests := []struct {
		name, github, repository, want string
	}{
		{"no github section: any repository", "", "", ""},
		{"one repository by owner and repo", "github: { owner: acme, repo: site, poll_interval: 0 }\n", "", "acme/site"},
		{"one repository in the list", "github: { repositories: [acme/site], poll_interval: 0 }\n", "", "acme/site"},
		{"the pipeline's own wins", "github: { owner: acme, repo: site, poll_interval: 0 }\n", "repository: other/docs,", "other/docs"},
		{"named among several", "github: { repositories: [acme/site, acme/docs], poll_interval: 0 }\n", "repository: acme/docs,", "acme/docs"},
		{"named without a github section", "", "repository: acme/site.github.io,", "acme/site.github.io"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.github+"webhooks: { github: { secret: s } }\npipelines: [{ name: p, "+tt.repository+" workflow: w.yml }]\n"), "repo.yml")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Specs()[0].Repository; got != tt.want {
				t.Errorf("Repository = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("testdata/minimal.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.GitHub != nil || c.Cloudflare != nil {
		t.Errorf("absent sections decoded as %+v, %+v; want nil", c.GitHub, c.Cloudflare)
	}
	if c.Webhooks.MaxBodyBytes != 1048576 {
		t.Errorf("max_body_bytes = %d, want 1048576", c.Webhooks.MaxBodyBytes)
	}
	p := c.Pipelines[0]
	want := Pipeline{
		Name:            "site",
		Workflow:        "test.yml",
		DispatchTimeout: model.Duration(10 * time.Minute),
		Timeout:         model.Duration(6 * time.Hour),
		SlowThreshold:   model.Duration(15 * time.Minute),
		ClockSkew:       model.Duration(time.Minute),
		Verify: &Verify{
			URL:          "http://localhost:8080/",
			ExpectStatus: 200,
			Timeout:      model.Duration(10 * time.Second),
			Deadline:     model.Duration(5 * time.Minute),
			// Rechecks need a build to look for; without one the
			// interval is inert.
			RecheckInterval: model.Duration(5 * time.Minute),
		},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("pipeline defaults:\n got %+v %+v\nwant %+v %+v", p, *p.Verify, want, *want.Verify)
	}

	// Sections present but empty get their own defaults; an explicit 0
	// poll_interval stays 0 and needs no token.
	c, err = Parse([]byte(`
github: { owner: o, repo: r, poll_interval: 0 }
cloudflare: { account_id: a, api_token: t }
webhooks: { github: { secret: s } }
pipelines: [{ name: p, workflow: w.yaml }]
`), "inline.yml")
	if err != nil {
		t.Fatal(err)
	}
	if want := (GitHub{Owner: "o", Repo: "r", APIURL: "https://api.github.com/", BackfillWindow: model.Duration(24 * time.Hour), ReconcileInterval: model.Duration(5 * time.Minute)}); !reflect.DeepEqual(*c.GitHub, want) {
		t.Errorf("github defaults:\n got %+v\nwant %+v", *c.GitHub, want)
	}
	if want := (Cloudflare{AccountID: "a", APIToken: "t", APIURL: "https://api.cloudflare.com/client/v4", PollInterval: model.Duration(time.Minute)}); !reflect.DeepEqual(*c.Cloudflare, want) {
		t.Errorf("cloudflare defaults:\n got %+v\nwant %+v", *c.Cloudflare, want)
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	c, err := Load("testdata/anchors.yml")
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Pipelines[0], c.Pipelines[1]
	if a.Name != "a" || b.Name != "b" || b.Workflow != "deploy.yml" || b.Branches[0] != "main" {
		t.Errorf("merge did not carry keys over: %+v", b)
	}
	if a.Timeout != model.Duration(2*time.Hour) || b.Timeout != model.Duration(3*time.Hour) {
		t.Errorf("timeouts = %v, %v; want 2h, 3h (a key in place overrides the merged one)", a.Timeout, b.Timeout)
	}
}

func TestExpand(t *testing.T) {
	t.Setenv("PE_SET", "value")
	t.Setenv("PE_EMPTY", "")
	t.Setenv("PE_NASTY", "a #b: 'c\" {d}")
	t.Setenv("PE_SIZE", "4096")
	t.Setenv("PE_INTERVAL", "90d")
	tests := []struct {
		name, yaml, want string
	}{
		{"braces", "${PE_SET}", "value"},
		{"bare", "x$PE_SET", "xvalue"},
		{"unset is empty", "a${PE_NOT_SET_ANYWHERE}b", "ab"},
		{"default when unset", "${PE_NOT_SET_ANYWHERE:-fallback}", "fallback"},
		{"default when empty", "${PE_EMPTY:-fallback}", "fallback"},
		{"default ignored when set", "${PE_SET:-fallback}", "value"},
		{"dollar escape", "pa$$word", "pa$word"},
		{"trailing dollar kept", "ok$", "ok$"},
		// Expansion happens after parsing, so YAML syntax in a value stays data.
		{"yaml syntax in the value", "${PE_NASTY}", "a #b: 'c\" {d}"},
		{"quoted", `"${PE_SET}"`, "value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte("webhooks:\n  github: { secret: "+tt.yaml+" }\npipelines: [{ name: p, workflow: w.yml }]\n"), "env.yml")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Webhooks.GitHub.Secret.Value(); got != tt.want {
				t.Errorf("secret = %q, want %q", got, tt.want)
			}
		})
	}

	// Non-string values resolve after expansion, and keys never expand.
	c, err := Parse([]byte(`
github: { owner: o, repo: r, token: t, poll_interval: ${PE_INTERVAL} }
webhooks: { github: { secret: s }, max_body_bytes: ${PE_SIZE} }
pipelines: [{ name: p, workflow: w.yml }]
`), "env.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Webhooks.MaxBodyBytes != 4096 || c.GitHub.PollInterval != model.Duration(90*24*time.Hour) {
		t.Errorf("max_body_bytes = %d, poll_interval = %v; want 4096, 90d", c.Webhooks.MaxBodyBytes, c.GitHub.PollInterval)
	}
	_, err = Parse([]byte("${PE_SET}: 1\n"), "key.yml")
	if want := "key.yml:1: ${PE_SET}: unknown key\nkey.yml:1: pipelines: at least one pipeline is required"; err == nil || err.Error() != want {
		t.Errorf("expanded key: err = %v, want %s", err, want)
	}
}

func TestDesignExample(t *testing.T) {
	// The contract writes `{ secret: ${VAR} }`: a bare ${VAR} in a flow
	// mapping must not end the mapping at its '}'.
	vars := map[string]string{
		"GITHUB_OWNER": "octo-org", "GITHUB_REPO": "octo-repo", "GITHUB_TOKEN": "ghp_x",
		"GITHUB_WEBHOOK_SECRET": "a{b}c", "SUPABASE_WEBHOOK_SECRET": "s", "MAILERLITE_WEBHOOK_SECRET": "m",
		"CLOUDFLARE_WEBHOOK_SECRET": "c", "CLOUDFLARE_API_TOKEN": "t",
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	c, err := Load("testdata/design.yml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.GitHub.Repositories(); len(got) != 1 || got[0] != "octo-org/octo-repo" {
		t.Errorf("Repositories() = %v", got)
	}
	if got := c.Webhooks.GitHub.Secret.Value(); got != "a{b}c" {
		t.Errorf("github secret = %q, want a{b}c", got)
	}
	if v := c.Pipelines[0].Verify; v.URL != "https://example.com/" || v.Timeout != model.Duration(10*time.Second) || v.Deadline != model.Duration(5*time.Minute) {
		t.Errorf("verify = %+v", *v)
	}

	// With a variable unset, the secret is explicitly empty: an error.
	t.Setenv("MAILERLITE_WEBHOOK_SECRET", "")
	_, err = Load("testdata/design.yml")
	if want := "testdata/design.yml:11: webhooks.mailerlite.secret: is empty: the environment variable ${MAILERLITE_WEBHOOK_SECRET} is unset or empty (set it, or remove the key to go without)"; err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
}

func TestExampleConfig(t *testing.T) {
	// `make run` uses the example on a fresh machine: no variables set.
	for _, v := range []string{"GITHUB_TOKEN", "GITHUB_OWNER", "GITHUB_REPO", "GITHUB_WEBHOOK_SECRET", "SUPABASE_WEBHOOK_SECRET", "MAILERLITE_WEBHOOK_SECRET", "CLOUDFLARE_API_TOKEN"} {
		t.Setenv(v, "")
	}
	c, err := Load("../examples/pipeline_exporter.yml")
	if err != nil {
		t.Fatal(err)
	}
	specs := c.Specs()
	if len(specs) != 1 {
		t.Fatalf("got %d pipelines, want 1", len(specs))
	}
	s := specs[0]
	// The published workflow_run fixtures run .github/workflows/test.yml on master.
	if s.Name != "site" || s.Workflow != "test.yml" || !reflect.DeepEqual(s.Branches, []string{"master"}) {
		t.Errorf("spec = %+v, want site on test.yml, branch master", s)
	}
	if r := s.Triggers[0]; r.Source != pipeline.SourceSupabase || r.Table != "posts" {
		t.Errorf("first trigger = %+v, want supabase on posts", r)
	}
	if c.GitHub != nil {
		t.Error("the example polls GitHub; a fresh machine has no token")
	}
	if c.Webhooks.GitHub.Secret == "" || c.Webhooks.Supabase.Secret == "" {
		t.Error("the example's demo secrets are missing: the demo's webhooks would answer 404")
	}

	t.Setenv("SUPABASE_WEBHOOK_SECRET", "from-env")
	if c, err = Load("../examples/pipeline_exporter.yml"); err != nil {
		t.Fatal(err)
	}
	if got := c.Webhooks.Supabase.Secret.Value(); got != "from-env" {
		t.Errorf("supabase secret = %q, want the environment's", got)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	const envSecret = "env-secret-4b1d"
	t.Setenv("PE_SECRET", envSecret)
	dir := t.TempDir()
	const fileSecret = "file-secret-7f2a"
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const literal = "literal-secret-9c3e"
	cfg := `
github: { owner: o, repo: r, token_file: token }
webhooks:
  github: { secret: ${PE_SECRET} }
  supabase: { secret: ` + literal + ` }
cloudflare: { account_id: a, api_token: ` + literal + `-cf }
pipelines: [{ name: p, workflow: w.yml }]
`
	path := filepath.Join(dir, "cfg.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.GitHub.Token.Value() != fileSecret || c.Webhooks.GitHub.Secret.Value() != envSecret {
		t.Fatal("secrets did not load; the checks below would prove nothing")
	}
	jsonOut, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	yamlOut, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	// A validation error after the secrets are loaded must not carry them.
	_, loadErr := Parse([]byte(strings.Replace(cfg, "workflow: w.yml", "workflow: bad/path", 1)), path)
	if loadErr == nil {
		t.Fatal("Parse accepted a bad workflow")
	}
	outputs := map[string]string{
		"%v":           fmt.Sprintf("%v", c),
		"%+v":          fmt.Sprintf("%+v", *c),
		"%+v github":   fmt.Sprintf("%+v", *c.GitHub),
		"%#v webhooks": fmt.Sprintf("%#v", c.Webhooks),
		"%s secret":    fmt.Sprintf("%s", c.Webhooks.Supabase.Secret),
		"%q secret":    fmt.Sprintf("%q", c.Webhooks.Supabase.Secret),
		"String":       c.Cloudflare.APIToken.String(),
		"json":         string(jsonOut),
		"yaml":         string(yamlOut),
		"error":        loadErr.Error(),
	}
	for name, out := range outputs {
		for _, s := range []string{envSecret, fileSecret, literal} {
			if strings.Contains(out, s) {
				t.Errorf("%s output contains a secret: %s", name, out)
			}
		}
	}
	var decoded struct {
		GitHub   struct{ Token string }
		Webhooks struct{ MailerLite struct{ Secret string } }
	}
	if err := json.Unmarshal(jsonOut, &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.GitHub.Token != "<secret>" || !strings.Contains(outputs["yaml"], "token: <secret>") {
		t.Errorf("marshalled secrets should read <secret>:\n%s\n%s", jsonOut, yamlOut)
	}
	// An unset secret prints empty, so a disabled source does not look set.
	if decoded.Webhooks.MailerLite.Secret != "" || fmt.Sprint(c.Webhooks.MailerLite.Secret) != "" {
		t.Errorf("unset secret prints %q in JSON, %q with %%v; want both empty", decoded.Webhooks.MailerLite.Secret, c.Webhooks.MailerLite.Secret)
	}
}

func TestParseLimits(t *testing.T) {
	// Each level merges the previous one twice: 2^40 mappings if walked naively.
	var b strings.Builder
	b.WriteString("webhooks: { github: { secret: s } }\npipelines:\n  - &l0 { name: a, workflow: w.yml }\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "  - &l%d { <<: [*l%d, *l%d] }\n", i, i-1, i-1)
	}
	tests := []struct {
		name, config, want string
	}{
		{"merge bomb", b.String(), "limits.yml:1: document contains excessive aliasing"},
		{"secret file not regular", "webhooks: { github: { secret_file: . } }\npipelines: [{ name: a, workflow: w.yml }]\n", "limits.yml:1: webhooks.github.secret_file: is not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.config), "testdata/limits.yml")
			if err == nil || err.Error() != "testdata/"+tt.want {
				t.Errorf("Parse error = %v, want testdata/%s", err, tt.want)
			}
		})
	}
}

// TestValuesNeverInErrors types a secret into fields where it does not
// belong: the error names the file, line and key, never the value.
func TestValuesNeverInErrors(t *testing.T) {
	for _, secret := range []string{"s3cr", "hunter2-0123456789abcdef"} {
		t.Setenv("PE_SECRET", secret)
		tests := []struct{ name, config, want string }{
			{"integer", "webhooks: { github: { secret: s }, max_body_bytes: ${PE_SECRET} }\npipelines: [{ name: p, workflow: w.yml }]\n", "leak.yml:1: webhooks.max_body_bytes: expected an integer, got a string"},
			{"literal in an integer", "webhooks: { github: { secret: s }, max_body_bytes: " + secret + " }\npipelines: [{ name: p, workflow: w.yml }]\n", "leak.yml:1: webhooks.max_body_bytes: expected an integer, got a string"},
			{"duration", "github: { owner: o, repo: r, token: t, poll_interval: ${PE_SECRET} }\nwebhooks: { github: { secret: s } }\npipelines: [{ name: p, workflow: w.yml }]\n", "leak.yml:1: github.poll_interval: must be a duration such as 90s, 15m, 6h or 2d"},
			{"status code", "webhooks: { github: { secret: s } }\npipelines: [{ name: p, workflow: w.yml, verify: { url: 'http://x/', expect_status: ${PE_SECRET} } }]\n", "leak.yml:2: pipelines[0].verify.expect_status: expected an integer, got a string"},
			{"regexp", "webhooks: { github: { secret: s } }\npipelines: [{ name: p, workflow: w.yml, verify: { url: 'http://x/', body_regexp: '(${PE_SECRET}' } }]\n", "leak.yml:2: pipelines[0].verify.body_regexp: is not a regular expression: missing closing )"},
			{"name", "webhooks: { github: { secret: s } }\npipelines: [{ name: '-${PE_SECRET}', workflow: w.yml }]\n", "leak.yml:2: pipelines[0].name: must match ^[a-zA-Z_][a-zA-Z0-9_-]*$"},
			{"repository", "webhooks: { github: { secret: s } }\npipelines: [{ name: p, repository: ${PE_SECRET}, workflow: w.yml }]\n", "leak.yml:2: pipelines[0].repository: must be owner/repo"},
			{"github event", "webhooks: { github: { secret: s } }\npipelines: [{ name: p, workflow: w.yml, triggers: [{ source: github, events: [${PE_SECRET}] }] }]\n", "leak.yml:2: pipelines[0].triggers[0].events[0]: is not an event that starts GitHub workflow runs"},
			{"secret file", "webhooks: { github: { secret_file: ${PE_SECRET} } }\npipelines: [{ name: p, workflow: w.yml }]\n", "leak.yml:1: webhooks.github.secret_file: no such file (a relative path is read from the config file's directory)"},
			{"header", "webhooks: { github: { secret: s }, supabase: { secret: x, header: '${PE_SECRET} x' } }\npipelines: [{ name: p, workflow: w.yml }]\n", "leak.yml:1: webhooks.supabase.header: is not a valid HTTP header name"},
		}
		for _, tt := range tests {
			t.Run(tt.name+"/"+secret[:4], func(t *testing.T) {
				_, err := Parse([]byte(tt.config), "testdata/leak.yml")
				if err == nil || err.Error() != "testdata/"+tt.want {
					t.Errorf("Parse error = %v, want testdata/%s", err, tt.want)
				}
				if err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("the error shows the value: %v", err)
				}
			})
		}
	}
}

func TestPatternPipelines(t *testing.T) {
	c, err := Parse([]byte(`
webhooks:
  github: { secret: s }
  supabase: { secret: s }
max_pipelines: 50
pipelines:
  - repository: acme/*
    workflow: deploy.yml
    triggers:
      - { source: supabase, table: posts, pipeline: blog }
      - { source: github, events: [push] }
  - name: "{{ .Repo }}-docs"
    repository: acme/*
    workflow: docs.yml
  - name: site
    repository: acme/site
    workflow: deploy.yml
`), "pattern.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxPipelines != 50 {
		t.Errorf("max_pipelines %d, want 50", c.MaxPipelines)
	}
	want := []struct {
		name, repo string
		discover   bool
	}{{"{{ .Repo }}", "acme/*", true}, {"{{ .Repo }}-docs", "acme/*", true}, {"site", "acme/site", false}}
	specs := c.Specs()
	if len(specs) != len(want) {
		t.Fatalf("specs %+v", specs)
	}
	for i, w := range want {
		if specs[i].Name != w.name || specs[i].Repository != w.repo || specs[i].Discover != w.discover {
			t.Errorf("spec %d: %q %q %v, want %+v", i, specs[i].Name, specs[i].Repository, specs[i].Discover, w)
		}
	}
	if got, want := specs[0].Triggers, []pipeline.TriggerRule{
		{Source: pipeline.SourceSupabase, Table: "posts", Pipeline: "blog"},
		{Source: pipeline.SourceGitHub, Events: []string{"push"}},
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("pattern's trigger rules %+v, want %+v", got, want)
	}
	d, err := Parse([]byte("webhooks:\n  github: { secret: s }\npipelines:\n  - { name: site, workflow: deploy.yml }\n"), "default.yml")
	if err != nil {
		t.Fatal(err)
	}
	if d.MaxPipelines != pipeline.DefaultMaxPipelines {
		t.Errorf("default max_pipelines %d, want %d", d.MaxPipelines, pipeline.DefaultMaxPipelines)
	}
}

// TestHooksOnly: a github section may name only the hooks whose missed
// deliveries are read back (an organization's webhook), no repository to
// poll; the contract's example of the section loads as written.
func TestHooksOnly(t *testing.T) {
	c, err := Parse([]byte(`
github:
  token: t
  poll_interval: 0
  hooks:
    - { repository: acme/site, id: 123456789 }
    - { organization: acme, id: 987654321 }
  reconcile_interval: 1s
webhooks: { github: { secret: s } }
pipelines: [{ name: p, repository: acme/site, workflow: w.yml }]
`), "hooks.yml")
	if err != nil {
		t.Fatal(err)
	}
	g := c.GitHub
	if len(g.Repositories()) != 0 || len(g.Hooks) != 2 || g.Hooks[1].Name() != "acme#987654321" || g.ReconcileInterval != model.Duration(time.Second) {
		t.Errorf("github = %+v", *g)
	}
	_, err = Parse([]byte("github: { token: t }\nwebhooks: { github: { secret: s } }\npipelines: [{ name: p, workflow: w.yml }]\n"), "none.yml")
	if want := "none.yml:1: github: set owner and repo, or repositories"; err == nil || err.Error() != want {
		t.Errorf("no repository and no hooks: %v, want %s", err, want)
	}
}
