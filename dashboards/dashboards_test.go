// Package dashboards_test checks the Grafana dashboards of this directory:
// their shape (variables, data source, layout), the template variables their
// queries use, and the queries' PromQL syntax (through promtool). That every
// metric they use exists, and that every query runs, is proven against a real
// Prometheus scraping the real exporter in e2e/stack_test.go.
package dashboards_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Query      any         `json:"query"`
	Datasource *datasource `json:"datasource"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

func load(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob("*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[f] = d
	}
	return out
}

func TestDashboardShape(t *testing.T) {
	uids := map[string]string{}
	for file, d := range load(t) {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid and title are required", file)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q already used by %s", file, d.UID, other)
		}
		uids[d.UID] = file
		vars := map[string]variable{}
		for _, v := range d.Templating.List {
			vars[v.Name] = v
		}
		if v := vars["datasource"]; v.Type != "datasource" || v.Query != "prometheus" {
			t.Errorf("%s: want a datasource variable of type prometheus, got %+v", file, v)
		}
		for name, v := range vars {
			if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
				t.Errorf("%s: variable %s does not query ${datasource}", file, name)
			}
		}
		ids := map[int]bool{}
		for i, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", file, p.ID)
			}
			ids[p.ID] = true
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: panel %q is outside the 24-column grid: %+v", file, p.Title, g)
			}
			for _, q := range d.Panels[:i] {
				h := q.GridPos
				if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
					t.Errorf("%s: panels %q and %q overlap", file, q.Title, p.Title)
				}
			}
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q does not use ${datasource}", file, p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("%s: panel %q query %s does not use ${datasource}", file, p.Title, tg.RefID)
				}
			}
		}
	}
	if _, ok := load(t)["pipelines.json"]; !ok {
		t.Fatal("the overview dashboard pipelines.json is missing")
	}
	if v := variableNames(load(t)["pipelines.json"]); !slices.Contains(v, "pipeline") {
		t.Errorf("pipelines.json variables %v lack pipeline", v)
	}
}

func variableNames(d dashboard) []string {
	var names []string
	for _, v := range d.Templating.List {
		names = append(names, v.Name)
	}
	return names
}

var (
	templateVar = regexp.MustCompile(`\$\{?\w+\}?`)
	// Grafana's own interval variables, valid wherever a duration is.
	builtinVars = []string{"$__rate_interval", "$__interval", "$__range", "$__range_s"}
	recorded    = regexp.MustCompile(`\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b`)
)

// TestQueryVariables allows dashboard variables only as regex label
// matchers (label=~"$var"), so that "All" and multi-value selections work,
// and Grafana's interval variables anywhere.
func TestQueryVariables(t *testing.T) {
	for file, d := range load(t) {
		vars := variableNames(d)
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				for _, m := range templateVar.FindAllString(tg.Expr, -1) {
					name := strings.Trim(m, "${}")
					switch {
					case slices.Contains(builtinVars, m):
					case slices.Contains(vars, name) && name != "datasource":
						if !strings.Contains(tg.Expr, name+`=~"`+m+`"`) {
							t.Errorf("%s: panel %q: %s is used outside a %s=~\"%s\" matcher", file, p.Title, m, name, m)
						}
					default:
						t.Errorf("%s: panel %q uses unknown variable %s", file, p.Title, m)
					}
				}
			}
		}
	}
}

// substitute gives every variable a value Prometheus accepts, as Grafana
// would before sending the query.
func substitute(expr string) string {
	return strings.NewReplacer(
		`"$pipeline"`, `".+"`, `"$instance"`, `".+"`,
		"$__rate_interval", "1m", "$__interval", "15s", "$__range_s", "3600", "$__range", "1h",
	).Replace(expr)
}

// TestQueriesParse runs every query through promtool as the expression of a
// recording rule, which makes promtool parse it, and checks that the
// recording rules a dashboard shows are defined in alerting-rules/.
func TestQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	defined := map[string]bool{}
	files, _ := filepath.Glob("../alerting-rules/*.rules.yml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf struct {
			Groups []struct {
				Rules []struct {
					Record string `yaml:"record"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			t.Fatal(err)
		}
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				defined[r.Record] = true
			}
		}
	}
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	var names []string
	for file, d := range load(t) {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				rules = append(rules, rule{Record: fmt.Sprintf("dashboard_query_%d", len(rules)), Expr: substitute(tg.Expr)})
				names = append(names, fmt.Sprintf("dashboard_query_%d is %s panel %q query %s", len(names), file, p.Title, tg.RefID))
				for _, name := range recorded.FindAllString(tg.Expr, -1) {
					if !defined[name] {
						t.Errorf("%s: panel %q shows %s, which no rule in alerting-rules/ records", file, p.Title, name)
					}
				}
			}
		}
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queries.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("promtool rejects a dashboard query: %v\n%s\n%s", err, out, strings.Join(names, "\n"))
	}
}
