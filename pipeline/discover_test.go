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
