package pipeline

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// patternSpec follows test.yml (the workflow of the published
// workflow_run payloads) in every repository of octo-org.
var patternSpec = Spec{Name: "{{ .Repo }}", Repository: "octo-org/*", Workflow: "test.yml", Discover: true, Timeout: time.Hour}

// runIn is the published completed run, moved to repository repo with its
// own run id.
func runIn(t *testing.T, repo string, id int64) WorkflowRunEvent {
	t.Helper()
	e := runEvent(t, "completed")
	e.Repository, e.RunID = repo, id
	return e
}

func TestDiscoveredPipelines(t *testing.T) {
	written := Spec{Name: "written", Repository: "octo-org/written", Workflow: "test.yml"}
	tests := []struct {
		name  string
		specs []Spec
		max   int
		// repos get one run each, in order; wantPipelines is the pipeline
		// of each run, "" for an ignored one, whose reason then holds
		// wantReason.
		repos         []string
		wantPipelines []string
		wantReason    string
		wantLimited   int
	}{
		{
			name:  "one pipeline per matching repository, made by its first run",
			specs: []Spec{patternSpec},
			repos: []string{"octo-org/site", "octo-org/docs", "octo-org/site", "other-org/site"},
			// The second run of site goes to the pipeline its first made.
			wantPipelines: []string{"site", "docs", "site", ""},
			wantReason:    "no pipeline for workflow test.yml in repository other-org/site",
		},
		{
			name:          "the pattern compares without regard to case; the name keeps GitHub's",
			specs:         []Spec{{Name: "{{ .Owner }}-{{ .Repo }}", Repository: "OCTO-ORG/Site-*", Workflow: "test.yml", Discover: true}},
			repos:         []string{"octo-org/site-blog", "Octo-Org/SITE-Shop", "octo-org/docs"},
			wantPipelines: []string{"octo-org-site-blog", "Octo-Org-SITE-Shop", ""},
			wantReason:    "no pipeline for workflow test.yml in repository octo-org/docs",
		},
		{
			name:          "a written pipeline of the repository comes first",
			specs:         []Spec{patternSpec, written},
			repos:         []string{"octo-org/written", "octo-org/other"},
			wantPipelines: []string{"written", "other"},
		},
		{
			name:          "a name taken by a written pipeline: ignored",
			specs:         []Spec{patternSpec, written},
			repos:         []string{"elsewhere/x", "octo-org/written2", "octo-org/written"},
			wantPipelines: []string{"", "written2", "written"},
			wantReason:    "no pipeline for workflow test.yml in repository elsewhere/x",
		},
		{
			name: "a name taken by another discovered pipeline: ignored",
			specs: []Spec{
				{Name: "{{ .Repo }}", Repository: "octo-org/*", Workflow: "test.yml", Discover: true},
				{Name: "{{ .Repo }}", Repository: "acme/*", Workflow: "test.yml", Discover: true},
			},
			repos:         []string{"octo-org/site", "acme/site"},
			wantPipelines: []string{"site", ""},
			wantReason:    `repository acme/site matches acme/*, but its pipeline name "site" is taken by the pipeline of repository octo-org/site`,
		},
		{
			name:          "a template that gives no valid name: ignored",
			specs:         []Spec{{Name: "{{ if eq .Repo \"skip\" }}{{ else }}{{ .Repo }}{{ end }}", Repository: "octo-org/*", Workflow: "test.yml", Discover: true}},
			repos:         []string{"octo-org/skip", "octo-org/site"},
			wantPipelines: []string{"", "site"},
			wantReason:    "repository octo-org/skip matches octo-org/*, but its name template gives no pipeline name: the name is empty",
		},
		{
			name:          "max_pipelines: the rest ignored and counted",
			specs:         []Spec{patternSpec},
			max:           2,
			repos:         []string{"octo-org/a", "octo-org/b", "octo-org/c", "octo-org/a", "octo-org/d"},
			wantPipelines: []string{"a", "b", "", "a", ""},
			wantReason:    "max_pipelines (2) reached: no pipeline made for repository octo-org/d",
			wantLimited:   2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: fixtureCreated}
			tr := NewTracker(tc.specs, clock.Now)
			if tc.max > 0 {
				tr.SetMaxPipelines(tc.max)
			}
			var reason string
			for i, repo := range tc.repos {
				ups, why := tr.Apply(runIn(t, repo, int64(1000+i)))
				got := ""
				if len(ups) > 0 {
					got = ups[0].Run.Pipeline
				} else {
					reason = why
				}
				if got != tc.wantPipelines[i] {
					t.Errorf("run %d in %s: pipeline %q (%s), want %q", i, repo, got, why, tc.wantPipelines[i])
				}
			}
			if reason != tc.wantReason {
				t.Errorf("last reason %q, want %q", reason, tc.wantReason)
			}
			if n := tr.TakeLimited(); n != tc.wantLimited {
				t.Errorf("limited %d, want %d", n, tc.wantLimited)
			}
			d, changed := tr.Discovered()
			var names []string
			for _, p := range tc.wantPipelines {
				if p != "" && p != "written" && !slices.Contains(names, p) {
					names = append(names, p)
				}
			}
			if len(d) != len(names) || (len(d) > 0) != changed {
				t.Fatalf("discovered %+v (changed %v), want %v", d, changed, names)
			}
			for i, p := range d {
				if p.Name != names[i] || !p.CreatedAt.Equal(fixtureCreated) || p.Template != tc.specs[0].Name && p.Template != tc.specs[len(tc.specs)-1].Name {
					t.Errorf("discovered[%d] = %+v, want %s", i, p, names[i])
				}
			}
			if _, again := tr.Discovered(); again {
				t.Error("Discovered reports a change twice")
			}
		})
	}
}

// TestDiscoveredBurst sends runs of 10,000 new repositories: no more than
// max_pipelines pipelines are made, and the Tracker keeps nothing of the
// others.
func TestDiscoveredBurst(t *testing.T) {
	tr := NewTracker([]Spec{patternSpec}, (&fakeClock{t: fixtureCreated}).Now)
	ignored := 0
	e := runEvent(t, "completed")
	for i := range 10_000 {
		e.Repository, e.RunID = fmt.Sprintf("octo-org/repo-%d", i), int64(i+1)
		if _, why := tr.Apply(e); why != "" {
			ignored++
			if !strings.HasPrefix(why, "max_pipelines (1000) reached") {
				t.Fatalf("run %d ignored: %s", i, why)
			}
		}
	}
	d, _ := tr.Discovered()
	if len(d) != DefaultMaxPipelines || ignored != 10_000-DefaultMaxPipelines || tr.TakeLimited() != ignored {
		t.Errorf("%d discovered, %d ignored; want %d and %d", len(d), ignored, DefaultMaxPipelines, 10_000-DefaultMaxPipelines)
	}
	if len(tr.specs) != DefaultMaxPipelines+1 || len(tr.active)+len(tr.lastFinished) > DefaultMaxPipelines {
		t.Errorf("%d specs, %d active runs, %d last runs kept", len(tr.specs), len(tr.active), len(tr.lastFinished))
	}
}

func TestDiscoveredRestoreAndReload(t *testing.T) {
	clock := &fakeClock{t: fixtureCreated}
	d := []Discovered{{Name: "site", Repository: "octo-org/site", Pattern: "octo-org/*", Template: "{{ .Repo }}", CreatedAt: fixtureCreated}}

	// Restored: the repository's runs go to its pipeline; nothing new is
	// made or saved.
	tr := NewTracker([]Spec{patternSpec}, clock.Now)
	tr.RestoreDiscovered(d)
	ups, why := tr.Apply(runIn(t, "octo-org/site", 1))
	if len(ups) == 0 || ups[0].Run.Pipeline != "site" || ups[0].Run.GitHub.Repository != "octo-org/site" {
		t.Fatalf("run of a restored pipeline: %+v, %s", ups, why)
	}
	if got, changed := tr.Discovered(); changed || len(got) != 1 {
		t.Errorf("Discovered after restore: %+v, changed %v", got, changed)
	}

	// A pattern's triggers open runs in its discovered pipelines only.
	trigger := TriggerEvent{Trigger: Trigger{Source: SourceSupabase, ReceivedAt: fixtureCreated}, Type: "INSERT", Table: "posts"}
	withTrigger := patternSpec
	withTrigger.Triggers = []TriggerRule{{Source: SourceSupabase}}
	tr.SetSpecs([]Spec{withTrigger})
	ups, why = tr.Apply(trigger)
	if len(ups) != 1 || ups[0].Run.Pipeline != "site" || ups[0].Run.Status != StatusPending {
		t.Errorf("trigger: %+v, %s; want one pending run of site", ups, why)
	}

	// A reload without the pattern: its pipelines are no longer followed,
	// and are kept, to come back with it.
	tr.SetSpecs(nil)
	if _, why := tr.Apply(runIn(t, "octo-org/site", 2)); why == "" {
		t.Error("run of a pipeline whose pattern is gone was accepted")
	}
	if got := Instantiate([]Spec{patternSpec, {Name: "x", Workflow: "x.yml"}}, d); len(got) != 2 || got[1].Name != "site" || got[1].Discover || got[1].Workflow != "test.yml" {
		t.Errorf("Instantiate: %+v", got)
	}
	if got := Instantiate([]Spec{{Name: "{{ .Repository }}", Repository: "octo-org/*", Discover: true}}, d); len(got) != 0 {
		t.Errorf("Instantiate with another template: %+v", got)
	}
}

// TestNamedTriggerRules: a pattern's rule that names a pipeline opens runs
// in that discovered pipeline only, one without a name in each; before the
// named pipeline is discovered the trigger is ignored and the reason says
// so. A GitHub trigger must come from the named pipeline's repository.
func TestNamedTriggerRules(t *testing.T) {
	pattern := patternSpec
	pattern.DispatchTimeout = 10 * time.Minute
	pattern.Triggers = []TriggerRule{
		{Source: SourceSupabase, Table: "posts", Events: []string{"INSERT"}, Pipeline: "site"},
		{Source: SourceMailerLite, Events: []string{"campaign.sent"}},
		{Source: SourceGitHub, Events: []string{"push"}, Pipeline: "site"},
		{Source: SourceGitHub, Events: []string{"repository_dispatch"}},
	}
	discovered := func(names ...string) []Discovered {
		var d []Discovered
		for _, n := range names {
			d = append(d, Discovered{Name: n, Repository: "octo-org/" + n, Pattern: pattern.Repository, Template: pattern.Name, CreatedAt: fixtureCreated})
		}
		return d
	}
	supabase := supabaseTrigger("s1", fixtureCreated)
	mailerlite := TriggerEvent{Trigger: Trigger{Source: SourceMailerLite, Event: "campaign.sent", DeliveryID: "m1", ReceivedAt: fixtureCreated}, Type: "campaign.sent"}
	push := func(repo string) TriggerEvent {
		return TriggerEvent{Trigger: Trigger{Source: SourceGitHub, Event: "push", DeliveryID: "p1", ReceivedAt: fixtureCreated}, Type: "push", Repository: repo, Branch: "master"}
	}
	dispatch := TriggerEvent{Trigger: Trigger{Source: SourceGitHub, Event: "repository_dispatch", DeliveryID: "r1", ReceivedAt: fixtureCreated}, Type: "repository_dispatch", Repository: "octo-org/docs"}
	update := supabaseTrigger("s2", fixtureCreated)
	update.Type = "UPDATE"
	tests := []struct {
		name       string
		discovered []Discovered
		ev         TriggerEvent
		opens      []string
		reason     string
	}{
		{name: "named rule: only its pipeline", discovered: discovered("docs", "site"), ev: supabase, opens: []string{"site"}},
		{name: "rule without a name: every pipeline", discovered: discovered("docs", "site"), ev: mailerlite, opens: []string{"docs", "site"}},
		{
			name: "named pipeline not discovered yet", discovered: discovered("docs"), ev: supabase,
			reason: "no pipeline for supabase trigger INSERT on table posts: pipeline site (octo-org/*) not discovered yet",
		},
		{
			name: "nothing discovered", ev: supabase,
			reason: "no pipeline for supabase trigger INSERT on table posts: pipeline site (octo-org/*) not discovered yet",
		},
		{
			name: "an event no rule takes: no word of the named pipeline", discovered: discovered("docs"), ev: update,
			reason: "no pipeline for supabase trigger UPDATE on table posts",
		},
		{name: "named GitHub rule: a push of its repository", discovered: discovered("docs", "site"), ev: push("octo-org/site"), opens: []string{"site"}},
		{
			name: "named GitHub rule: a push of another repository of the pattern", discovered: discovered("docs", "site"), ev: push("octo-org/docs"),
			reason: "no pipeline for github trigger push in repository octo-org/docs",
		},
		{
			name: "named GitHub rule: its repository's pipeline not discovered yet", discovered: discovered("docs"), ev: push("octo-org/site"),
			reason: "no pipeline for github trigger push in repository octo-org/site: pipeline site (octo-org/*) not discovered yet",
		},
		{
			name: "named GitHub rule: a push of a repository that is not its", discovered: discovered("docs"), ev: push("octo-org/docs"),
			reason: "no pipeline for github trigger push in repository octo-org/docs",
		},
		{name: "GitHub rule without a name: its repository's pipeline only", discovered: discovered("docs", "site"), ev: dispatch, opens: []string{"docs"}},
		{
			name: "named GitHub rule: a push outside the pattern", ev: push("other-org/site"),
			reason: "no pipeline for github trigger push in repository other-org/site",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker([]Spec{pattern}, (&fakeClock{t: fixtureCreated}).Now)
			tr.RestoreDiscovered(tc.discovered)
			ups, reason := tr.Apply(tc.ev)
			var opened []string
			for _, u := range ups {
				if u.Run.Status != StatusPending {
					t.Errorf("run of %s is %s, want pending", u.Run.Pipeline, u.Run.Status)
				}
				opened = append(opened, u.Run.Pipeline)
			}
			slices.Sort(opened)
			if !slices.Equal(opened, tc.opens) || reason != tc.reason {
				t.Errorf("opened runs in %v (%q), want %v (%q)", opened, reason, tc.opens, tc.reason)
			}
		})
	}
}

// TestNamedGitHubRuleLimitsOwnRuns: a github rule's events limit the runs
// a workflow run opens itself only in the pipeline the rule names.
func TestNamedGitHubRuleLimitsOwnRuns(t *testing.T) {
	pattern := patternSpec
	pattern.Triggers = []TriggerRule{{Source: SourceGitHub, Events: []string{"push"}, Pipeline: "site"}}
	tests := []struct {
		repo   string
		event  string
		reason string
	}{
		{"octo-org/site", "push", ""},
		{"octo-org/site", "schedule", "pipeline site does not start on schedule events"},
		{"octo-org/docs", "schedule", ""},
	}
	for i, tc := range tests {
		t.Run(tc.repo+" "+tc.event, func(t *testing.T) {
			tr := NewTracker([]Spec{pattern}, (&fakeClock{t: fixtureCreated}).Now)
			e := runIn(t, tc.repo, int64(i+1))
			e.Event = tc.event
			ups, reason := tr.Apply(e)
			if reason != tc.reason || (reason == "") != (len(ups) == 1) {
				t.Errorf("%d updates, reason %q; want reason %q", len(ups), reason, tc.reason)
			}
		})
	}
}

// TestNamedTriggerReload: a reload that names a pipeline on a rule takes
// effect for the pipelines discovered already.
func TestNamedTriggerReload(t *testing.T) {
	tr := NewTracker([]Spec{patternSpec}, (&fakeClock{t: fixtureCreated}).Now)
	tr.RestoreDiscovered([]Discovered{
		{Name: "docs", Repository: "octo-org/docs", Pattern: patternSpec.Repository, Template: patternSpec.Name},
		{Name: "site", Repository: "octo-org/site", Pattern: patternSpec.Repository, Template: patternSpec.Name},
	})
	for _, tc := range []struct {
		rule  TriggerRule
		opens int
	}{
		{TriggerRule{Source: SourceSupabase}, 2},
		{TriggerRule{Source: SourceSupabase, Pipeline: "docs"}, 1},
	} {
		reloaded := patternSpec
		reloaded.Triggers = []TriggerRule{tc.rule}
		tr.SetSpecs([]Spec{reloaded})
		ups, reason := tr.Apply(supabaseTrigger(fmt.Sprintf("after-%d", tc.opens), fixtureCreated))
		// The second trigger joins docs' pending run from the first.
		if len(ups) != tc.opens || ups[0].Run.Pipeline != "docs" {
			t.Fatalf("rule %+v: %d updates (%q), want %d starting with docs", tc.rule, len(ups), reason, tc.opens)
		}
	}
}
