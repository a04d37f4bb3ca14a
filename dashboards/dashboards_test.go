// Package dashboards_test checks the Grafana dashboards of this directory:
// their shape (variables, data source, layout), units and links, the
// template variables their queries use, the queries' PromQL syntax (through
// promtool), and the Grafana provisioning that serves them. That every
// metric they use exists, and that every query runs, is proven against a real
// Prometheus scraping the real exporter in e2e/stack_test.go; the Recent runs
// table's JSON paths against a real /api/pipeline-runs answer in
// e2e/dashboards_test.go.
package dashboards_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Links  []dashboardLink `json:"links"`
	Panels []panel         `json:"panels"`
}

type variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Query      any         `json:"query"`
	Definition string      `json:"definition"`
	Datasource *datasource `json:"datasource"`
}

type dashboardLink struct {
	Title       string `json:"title"`
	Type        string `json:"type"`
	URL         string `json:"url"`
	IncludeVars bool   `json:"includeVars"`
	KeepTime    bool   `json:"keepTime"`
}

type dataLink struct {
	Title string `json:"title"`
	URL   string `json:"url"`
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
	Targets     []target `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit  string     `json:"unit"`
			Links []dataLink `json:"links"`
		} `json:"defaults"`
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options string `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
}

// target is a panel query: PromQL (Expr) for Prometheus panels, a URL and
// JSON paths for Infinity ones.
type target struct {
	Expr       string      `json:"expr"`
	RefID      string      `json:"refId"`
	Datasource *datasource `json:"datasource"`

	Type         string `json:"type"`
	Source       string `json:"source"`
	Format       string `json:"format"`
	Parser       string `json:"parser"`
	URL          string `json:"url"`
	RootSelector string `json:"root_selector"`
	Columns      []struct {
		Selector string `json:"selector"`
		Text     string `json:"text"`
		Type     string `json:"type"`
	} `json:"columns"`
}

// infinityType is the Infinity data source plugin's id.
const infinityType = "yesoreyeram-infinity-datasource"

// prometheusTargets returns the PromQL targets of p.
func prometheusTargets(p panel) []target {
	var out []target
	for _, tg := range p.Targets {
		if tg.Datasource == nil || tg.Datasource.Type == "prometheus" {
			out = append(out, tg)
		}
	}
	return out
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
			// Prometheus panels use ${datasource}; the Infinity panel a
			// data source variable of the Infinity type.
			want := "${datasource}"
			if p.Datasource != nil && p.Datasource.Type == infinityType {
				want = "${runs_datasource}"
				if v := vars["runs_datasource"]; v.Type != "datasource" || v.Query != infinityType {
					t.Errorf("%s: panel %q needs a runs_datasource variable of type %s, got %+v", file, p.Title, infinityType, v)
				}
			}
			if p.Datasource == nil || p.Datasource.UID != want {
				t.Errorf("%s: panel %q does not use %s", file, p.Title, want)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != want || tg.Datasource.Type != p.Datasource.Type {
					t.Errorf("%s: panel %q query %s does not use %s", file, p.Title, tg.RefID, want)
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

// jobQuery lists the scrape jobs that scrape a pipeline_exporter.
const jobQuery = "label_values(pipeline_exporter_build_info, job)"

// TestJobVariable: every dashboard selects exporters by job, and every
// other query variable is narrowed by it.
func TestJobVariable(t *testing.T) {
	for file, d := range load(t) {
		found := false
		for _, v := range d.Templating.List {
			switch {
			case v.Name == "job":
				found = true
				if v.Type != "query" || v.Definition != jobQuery {
					t.Errorf("%s: variable job is %s %q, want query %q", file, v.Type, v.Definition, jobQuery)
				}
			case v.Type == "query" && !strings.Contains(v.Definition, `job=~"$job"`):
				t.Errorf("%s: variable %s (%s) is not narrowed by job=~\"$job\"", file, v.Name, v.Definition)
			}
		}
		if !found {
			t.Errorf("%s: no job variable", file)
		}
	}
}

var (
	// selectorRE is a metric name with its label matchers.
	selectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	// What is left of a query once its selectors are gone and which cannot
	// be a bare metric name: strings, ranges, grouping clauses, numbers.
	notSelectorRE = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b`)
	identRE       = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	keywords      = []string{"and", "or", "unless", "bool", "offset", "inf", "nan"}
	// jobFilter keeps the pipelines the selected jobs export; recorded
	// series, aggregated by pipeline, have no job label of their own.
	jobFilter = regexp.MustCompile(`\band on \(pipeline\) pipeline_runs_in_progress\{job=~"\$job",pipeline=~"\$pipeline"\}$`)
)

// TestQueriesSelectJob: every metric selector of every PromQL query has the
// job=~"$job" matcher, or, for a recorded series (which has no job label),
// the query keeps only the pipelines of the selected jobs. No selector is a
// bare metric name, which would escape the job selection.
func TestQueriesSelectJob(t *testing.T) {
	n := 0
	for file, d := range load(t) {
		for _, p := range d.Panels {
			for _, tg := range prometheusTargets(p) {
				for _, m := range selectorRE.FindAllStringSubmatch(tg.Expr, -1) {
					n++
					name, matchers := m[1], strings.Split(m[2], ",")
					switch {
					case slices.Contains(matchers, `job=~"$job"`):
					case strings.Contains(name, ":") && jobFilter.MatchString(tg.Expr):
					default:
						t.Errorf("%s: panel %q query %s: %s is not narrowed by job=~\"$job\"", file, p.Title, tg.RefID, m[0])
					}
				}
				rest := notSelectorRE.ReplaceAllString(selectorRE.ReplaceAllString(tg.Expr, " "), " ")
				for _, m := range identRE.FindAllStringSubmatch(rest, -1) {
					if m[1] == "" && !slices.Contains(keywords, strings.ToLower(m[0])) {
						t.Errorf("%s: panel %q query %s selects %s without label matchers", file, p.Title, tg.RefID, m[0])
					}
				}
			}
		}
	}
	if n < 40 {
		t.Fatalf("found only %d metric selectors in the dashboards", n)
	}
}

// units are the units of Grafana's value formats these dashboards may use
// (packages/grafana-data/src/valueFormats/categories.ts, the list Grafana's
// dashboard linter checks units against).
var units = []string{
	"none", "string", "short", "percent", "percentunit",
	"bytes", "decbytes", "reqps", "ops", "cps",
	"ns", "µs", "ms", "s", "m", "h", "d", "dtdurations", "dateTimeAsIso", "dateTimeFromNow",
	"bool", "bool_yes_no",
}

// TestPanelUnits is the dashboard linter's panel-units-rule, on every panel
// that shows values (not only the types the linter looks at): a known unit
// in fieldConfig.defaults.unit, and known units in overrides.
func TestPanelUnits(t *testing.T) {
	for file, d := range load(t) {
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			if u := p.FieldConfig.Defaults.Unit; !slices.Contains(units, u) {
				t.Errorf("%s: panel %q (%s) has unit %q, want one of %v", file, p.Title, p.Type, u, units)
			}
			for _, o := range p.FieldConfig.Overrides {
				for _, prop := range o.Properties {
					var u string
					if prop.ID == "unit" && (json.Unmarshal(prop.Value, &u) != nil || !slices.Contains(units, u)) {
						t.Errorf("%s: panel %q override %s has unit %s", file, p.Title, o.Matcher.Options, prop.Value)
					}
				}
			}
		}
	}
}

// allowedLink is where links may go: another dashboard of this directory,
// the exporter at the exporter_url variable (never a host written into the
// dashboard), or a URL the exporter itself gave (the run JSON's page_url).
var allowedLink = regexp.MustCompile(`^(/d/[a-z0-9-]+|\$\{exporter_url\}/[^ ]*|\$\{__value\.raw\})$`)

// TestLinks: each dashboard links to the others, keeping time range and
// variables; every stat panel links to the exporter's runs or status; links
// go only where allowedLink says; exporter_url is a variable people can set.
func TestLinks(t *testing.T) {
	all := load(t)
	uids := map[string]string{}
	for file, d := range all {
		uids[d.UID] = file
	}
	for file, d := range all {
		var exporterURL *variable
		for i, v := range d.Templating.List {
			if v.Name == "exporter_url" {
				exporterURL = &d.Templating.List[i]
			}
		}
		if exporterURL == nil || exporterURL.Type != "textbox" {
			t.Errorf("%s: want a textbox variable exporter_url, got %+v", file, exporterURL)
		} else if q, _ := exporterURL.Query.(string); !strings.HasPrefix(q, "http://") && !strings.HasPrefix(q, "https://") {
			t.Errorf("%s: exporter_url defaults to %q, not an absolute URL", file, q)
		}

		linked := map[string]bool{}
		for _, l := range d.Links {
			if !allowedLink.MatchString(l.URL) {
				t.Errorf("%s: dashboard link %q goes to %q", file, l.Title, l.URL)
			}
			if uid, ok := strings.CutPrefix(l.URL, "/d/"); ok {
				if uids[uid] == "" || uid == d.UID {
					t.Errorf("%s: dashboard link %q to unknown or own uid %q", file, l.Title, uid)
				}
				if !l.IncludeVars || !l.KeepTime {
					t.Errorf("%s: dashboard link %q does not keep the time range and variables", file, l.Title)
				}
				linked[uid] = true
			}
		}
		for uid, other := range uids {
			if uid != d.UID && !linked[uid] {
				t.Errorf("%s: no link to %s (%s)", file, other, uid)
			}
		}

		for _, p := range d.Panels {
			links := p.FieldConfig.Defaults.Links
			for _, o := range p.FieldConfig.Overrides {
				for _, prop := range o.Properties {
					if prop.ID != "links" {
						continue
					}
					var ls []dataLink
					if err := json.Unmarshal(prop.Value, &ls); err != nil {
						t.Errorf("%s: panel %q override %s links: %v", file, p.Title, o.Matcher.Options, err)
					}
					links = append(links, ls...)
				}
			}
			if p.Type == "stat" && len(links) == 0 {
				t.Errorf("%s: stat panel %q has no data link", file, p.Title)
			}
			for _, l := range links {
				if !allowedLink.MatchString(l.URL) || l.Title == "" {
					t.Errorf("%s: panel %q links %q to %q", file, p.Title, l.Title, l.URL)
				}
				// A link naming a series label needs every query of the
				// panel to keep that label.
				for _, m := range regexp.MustCompile(`\$\{__field\.labels\.(\w+)`).FindAllStringSubmatch(l.URL, -1) {
					for _, tg := range prometheusTargets(p) {
						if !keepsLabel(tg.Expr, m[1]) {
							t.Errorf("%s: panel %q links with label %s, which query %s drops: %s", file, p.Title, m[1], tg.RefID, tg.Expr)
						}
					}
				}
			}
		}
	}
}

// keepsLabel tells whether a query's result keeps label: it does unless an
// aggregation groups by other labels.
func keepsLabel(expr, label string) bool {
	for _, m := range regexp.MustCompile(`\b(?:sum|max|min|avg|count|group) by \(([^)]*)\)`).FindAllStringSubmatch(expr, -1) {
		if !slices.Contains(strings.Split(strings.ReplaceAll(m[1], " ", ""), ","), label) {
			return false
		}
	}
	return true
}

// dotPath is the JSON path form both of Infinity's parsers read alike
// (gjson for the backend parser, lodash get for the frontend one): field
// names joined by dots.
var dotPath = regexp.MustCompile(`^[a-z_]+(\.[a-z_]+)*$`)

// recentRunsColumns are the run JSON fields the Recent runs table shows.
var recentRunsColumns = []string{"id", "pipeline", "status", "trigger.source", "duration_seconds", "created_at", "page_url"}

// TestRecentRunsPanel checks the Infinity table's query: the exporter's run
// list (relative to the data source URL), the list's runs array, the
// columns, and links from a run's id and page to its page. That the paths
// resolve on a real answer is e2e/dashboards_test.go's job.
func TestRecentRunsPanel(t *testing.T) {
	d := load(t)["pipelines.json"]
	var tables []panel
	for _, p := range d.Panels {
		if p.Datasource != nil && p.Datasource.Type == infinityType {
			tables = append(tables, p)
		}
	}
	if len(tables) != 1 || tables[0].Type != "table" || len(tables[0].Targets) != 1 {
		t.Fatalf("want one Infinity table panel with one query in pipelines.json, got %+v", tables)
	}
	p, tg := tables[0], tables[0].Targets[0]
	if tg.Type != "json" || tg.Source != "url" || tg.Format != "table" || tg.Parser != "backend" {
		t.Errorf("query is type %q source %q format %q parser %q, want json url table backend", tg.Type, tg.Source, tg.Format, tg.Parser)
	}
	if !strings.HasPrefix(tg.URL, "/api/pipeline-runs?") && tg.URL != "/api/pipeline-runs" {
		t.Errorf("query URL %q is not the exporter's run list under the data source URL", tg.URL)
	}
	if tg.RootSelector != "data.runs" {
		t.Errorf("root selector %q, want data.runs", tg.RootSelector)
	}
	var selectors []string
	names := map[string]string{} // column text -> selector
	for _, c := range tg.Columns {
		selectors = append(selectors, c.Selector)
		names[c.Text] = c.Selector
		if !dotPath.MatchString(c.Selector) || c.Text == "" || !slices.Contains([]string{"string", "number", "timestamp"}, c.Type) {
			t.Errorf("column %+v: want a dotted path, a title and a string, number or timestamp type", c)
		}
	}
	if !slices.Equal(selectors, recentRunsColumns) {
		t.Errorf("columns %v, want %v", selectors, recentRunsColumns)
	}
	linkOf := map[string]string{} // selector -> link URL
	for _, o := range p.FieldConfig.Overrides {
		sel, ok := names[o.Matcher.Options]
		if o.Matcher.ID != "byName" || !ok {
			t.Errorf("override for %q names no column", o.Matcher.Options)
		}
		for _, prop := range o.Properties {
			var ls []dataLink
			if prop.ID == "links" && json.Unmarshal(prop.Value, &ls) == nil && len(ls) == 1 {
				linkOf[sel] = ls[0].URL
			}
		}
	}
	if got := linkOf["id"]; got != "${exporter_url}/runs/${__value.raw}" {
		t.Errorf("the id column links to %q, want the run page", got)
	}
	if got := linkOf["page_url"]; got != "${__value.raw}" {
		t.Errorf("the page_url column links to %q, want the page_url itself", got)
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
		queries := map[string]string{} // query -> where it is
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				queries[v.Definition] = "variable " + v.Name
			}
		}
		for _, p := range d.Panels {
			for _, tg := range prometheusTargets(p) {
				queries[tg.Expr] = fmt.Sprintf("panel %q", p.Title)
			}
		}
		for q, where := range queries {
			for _, m := range templateVar.FindAllString(q, -1) {
				name := strings.Trim(m, "${}")
				switch {
				case slices.Contains(builtinVars, m):
				case slices.Contains(vars, name) && name != "datasource":
					if !strings.Contains(q, name+`=~"`+m+`"`) {
						t.Errorf("%s: %s: %s is used outside a %s=~\"%s\" matcher", file, where, m, name, m)
					}
				default:
					t.Errorf("%s: %s uses unknown variable %s", file, where, m)
				}
			}
		}
	}
}

// substitute gives every variable a value Prometheus accepts, as Grafana
// would before sending the query.
func substitute(expr string) string {
	return strings.NewReplacer(
		`"$pipeline"`, `".+"`, `"$instance"`, `".+"`, `"$job"`, `".+"`,
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
	labelValues := regexp.MustCompile(`^label_values\((.+), *\w+\)$`)
	for file, d := range load(t) {
		// A variable's label_values(selector, label) runs the selector.
		for _, v := range d.Templating.List {
			if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
				rules = append(rules, rule{Record: fmt.Sprintf("dashboard_query_%d", len(rules)), Expr: substitute(m[1])})
				names = append(names, fmt.Sprintf("dashboard_query_%d is %s variable %s", len(names), file, v.Name))
			} else if v.Type == "query" {
				t.Errorf("%s: variable %s: %q is not label_values(selector, label)", file, v.Name, v.Definition)
			}
		}
		for _, p := range d.Panels {
			for _, tg := range prometheusTargets(p) {
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

// TestProvisioning checks that the compose stack serves what the dashboards
// need: Grafana installs the Infinity plugin, and an Infinity data source
// reaches the exporter's compose service on the port the exporter listens
// on, allowing that host only.
func TestProvisioning(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Ports       []string          `yaml:"ports"`
		} `yaml:"services"`
	}
	decodeYAML(t, "../deploy/docker-compose.yml", &compose)
	plugins := strings.Split(compose.Services["grafana"].Environment["GF_INSTALL_PLUGINS"], ",")
	if !slices.Contains(plugins, infinityType) {
		t.Errorf("compose grafana GF_INSTALL_PLUGINS = %v, lacks %s", plugins, infinityType)
	}

	files, err := filepath.Glob("../deploy/grafana/provisioning/datasources/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no provisioned data sources: %v", err)
	}
	byType := map[string][]string{} // type -> URLs
	for _, f := range files {
		var prov struct {
			APIVersion  int `yaml:"apiVersion"`
			Datasources []struct {
				Name     string `yaml:"name"`
				UID      string `yaml:"uid"`
				Type     string `yaml:"type"`
				URL      string `yaml:"url"`
				JSONData struct {
					AllowedHosts []string `yaml:"allowedHosts"`
				} `yaml:"jsonData"`
			} `yaml:"datasources"`
		}
		decodeYAML(t, f, &prov)
		if prov.APIVersion != 1 {
			t.Errorf("%s: apiVersion %d, want 1", f, prov.APIVersion)
		}
		for _, ds := range prov.Datasources {
			if ds.Name == "" || ds.UID == "" || ds.URL == "" {
				t.Errorf("%s: data source %+v lacks a name, uid or url", f, ds)
			}
			byType[ds.Type] = append(byType[ds.Type], ds.URL)
			if ds.Type != infinityType {
				continue
			}
			u, err := url.Parse(ds.URL)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			exporter, ok := compose.Services[u.Hostname()]
			if !ok || !slices.ContainsFunc(exporter.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+u.Port()) }) {
				t.Errorf("%s: %s is not a compose service publishing port %s", f, ds.URL, u.Port())
			}
			if !slices.Equal(ds.JSONData.AllowedHosts, []string{ds.URL}) {
				t.Errorf("%s: allowedHosts %v, want only %s", f, ds.JSONData.AllowedHosts, ds.URL)
			}
		}
	}
	for _, typ := range []string{"prometheus", infinityType} {
		if len(byType[typ]) != 1 {
			t.Errorf("want one provisioned %s data source, got %v", typ, byType[typ])
		}
	}
}

func decodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
