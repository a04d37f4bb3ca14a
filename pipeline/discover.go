package pipeline

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxPipelines bounds the pipelines discovered from patterns when
// the config does not say (max_pipelines).
const DefaultMaxPipelines = 1000

// maxPipelineNameBytes bounds a discovered pipeline's name, a label value of
// every pipeline series.
const maxPipelineNameBytes = 128

// Discovered is a pipeline made from a pattern Spec (Spec.Discover) for one
// repository, when the Tracker first saw a run of the pattern's workflow
// there. The list is committed state: the Applier saves it with the runs,
// and Instantiate turns it back into Specs.
type Discovered struct {
	Name       string `json:"name"`
	Repository string `json:"repository"`
	// Pattern and Template are the pattern Spec's Repository and Name: the
	// written pipeline it was made from.
	Pattern   string    `json:"pattern"`
	Template  string    `json:"template"`
	CreatedAt time.Time `json:"created_at"`
}

// NameData is what a pattern's name template sees: .Repository is
// owner/repo as GitHub sends it, .Repo the part after the slash, .Owner the
// part before.
type NameData struct {
	Repository, Owner, Repo string
}

// ParseNameTemplate parses a pattern's name template; an unknown field is
// an error when it is executed (missingkey has no effect on struct data).
func ParseNameTemplate(text string) (*template.Template, error) {
	return template.New("name").Option("missingkey=error").Parse(text)
}

// DiscoveredName returns the name a pattern's template gives the
// repository, or why it gives none a pipeline can have.
func DiscoveredName(tmpl *template.Template, repository string) (string, error) {
	owner, repo, _ := strings.Cut(repository, "/")
	var b strings.Builder
	if err := tmpl.Execute(&b, NameData{Repository: repository, Owner: owner, Repo: repo}); err != nil {
		return "", err
	}
	name := b.String()
	return name, ValidPipelineName(name)
}

// ValidPipelineName says why name cannot be a pipeline's name (a label
// value of every pipeline series and a filter of the run API), or nil.
func ValidPipelineName(name string) error {
	switch {
	case name == "":
		return errors.New("the name is empty")
	case len(name) > maxPipelineNameBytes:
		return fmt.Errorf("the name is longer than %d bytes", maxPipelineNameBytes)
	case !utf8.ValidString(name):
		return errors.New("the name is not valid UTF-8")
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("the name %q begins or ends with white space", name)
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("the name %q holds a control character", name)
	}
	return nil
}

// matchesRepository reports whether the Spec follows runs of repo: its
// repository (any when empty), or one its pattern matches. GitHub compares
// repository names without regard to case, and so do both.
func (s *Spec) matchesRepository(repo string) bool {
	if s.Discover {
		ok, err := path.Match(strings.ToLower(s.Repository), strings.ToLower(repo))
		return ok && err == nil
	}
	return s.Repository == "" || strings.EqualFold(s.Repository, repo)
}

// Instantiate returns the written pipelines of specs, without the
// patterns, followed by the discovered pipelines whose pattern specs still
// has, in the order they were discovered: each a copy of its pattern with
// its own name and repository.
func Instantiate(specs []Spec, discovered []Discovered) []Spec {
	out := make([]Spec, 0, len(specs)+len(discovered))
	patterns := map[[2]string]*Spec{}
	for i := range specs {
		if specs[i].Discover {
			patterns[[2]string{specs[i].Repository, specs[i].Name}] = &specs[i]
			continue
		}
		out = append(out, specs[i])
	}
	for _, d := range discovered {
		p := patterns[[2]string{d.Pattern, d.Template}]
		if p == nil {
			continue
		}
		s := *p
		s.Discover, s.Name, s.Repository = false, d.Name, d.Repository
		out = append(out, s)
	}
	return out
}

// undiscovered names, for the answer to a trigger no pipeline took, the
// pipelines that rules of patterns taking it name and that are not
// discovered yet (": pipeline site (acme/*) not discovered yet"), or "".
// A GitHub trigger counts only for the pipeline its repository would get.
func (t *Tracker) undiscovered(e TriggerEvent) string {
	var waiting []string
	for i := range t.specs {
		p := &t.specs[i]
		if !p.Discover {
			continue
		}
		for _, rule := range p.Triggers {
			if rule.Pipeline == "" || t.byName[rule.Pipeline] != nil || !ruleMatches(p, rule, e) {
				continue
			}
			if e.Trigger.Source == SourceGitHub {
				tmpl, err := ParseNameTemplate(p.Name)
				if err != nil {
					continue
				}
				if name, err := DiscoveredName(tmpl, e.Repository); err != nil || name != rule.Pipeline {
					continue
				}
			}
			if w := fmt.Sprintf("pipeline %s (%s)", rule.Pipeline, p.Repository); !slices.Contains(waiting, w) {
				waiting = append(waiting, w)
			}
		}
	}
	if len(waiting) == 0 {
		return ""
	}
	return ": " + strings.Join(waiting, ", ") + " not discovered yet"
}

// discover makes the pipeline of repo from the pattern, or says why it
// makes none: the name template gives no valid name, the name is taken, or
// max_pipelines pipelines were discovered already (counted in limited).
func (t *Tracker) discover(pattern *Spec, repo string) (*Spec, string) {
	tmpl, err := ParseNameTemplate(pattern.Name)
	if err != nil {
		return nil, fmt.Sprintf("repository %s matches %s, whose name template does not parse: %v", repo, pattern.Repository, err)
	}
	name, err := DiscoveredName(tmpl, repo)
	if err != nil {
		return nil, fmt.Sprintf("repository %s matches %s, but its name template gives no pipeline name: %v", repo, pattern.Repository, err)
	}
	if other := t.byName[name]; other != nil {
		return nil, fmt.Sprintf("repository %s matches %s, but its pipeline name %q is taken by the pipeline of repository %s", repo, pattern.Repository, name, other.Repository)
	}
	if len(t.discovered) >= t.maxDiscovered {
		t.limited++
		return nil, fmt.Sprintf("max_pipelines (%d) reached: no pipeline made for repository %s", t.maxDiscovered, repo)
	}
	t.discovered = append(t.discovered, Discovered{
		Name: name, Repository: repo, Pattern: pattern.Repository, Template: pattern.Name, CreatedAt: t.now(),
	})
	t.discoveredChanged = true
	t.rebuildSpecs()
	return t.byName[name], ""
}

// SetMaxPipelines bounds the pipelines discovered from now on; those made
// already stay.
func (t *Tracker) SetMaxPipelines(n int) {
	t.maxDiscovered = n
}

// RestoreDiscovered loads the discovered pipelines kept in the store.
func (t *Tracker) RestoreDiscovered(d []Discovered) {
	t.discovered = append([]Discovered(nil), d...)
	t.rebuildSpecs()
}

// Discovered returns the discovered pipelines, and whether they changed
// since the last call (the Applier then saves them).
func (t *Tracker) Discovered() ([]Discovered, bool) {
	changed := t.discoveredChanged
	t.discoveredChanged = false
	return t.discovered, changed
}

// TakeLimited returns how many runs max_pipelines turned away since the
// last call.
func (t *Tracker) TakeLimited() int {
	n := t.limited
	t.limited = 0
	return n
}
