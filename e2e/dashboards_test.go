package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// infinityPanel is the part of an Infinity table panel the test evaluates.
type infinityPanel struct {
	Title      string `json:"title"`
	Datasource struct {
		Type string `json:"type"`
	} `json:"datasource"`
	Targets []struct {
		URL          string `json:"url"`
		RootSelector string `json:"root_selector"`
		Columns      []struct {
			Selector string `json:"selector"`
			Text     string `json:"text"`
			Type     string `json:"type"`
		} `json:"columns"`
	} `json:"targets"`
	FieldConfig struct {
		Overrides []struct {
			Matcher struct {
				Options string `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
}

// recentRunsPanel returns the Pipelines dashboard's Infinity panel and the
// default of its exporter_url variable.
func recentRunsPanel(t *testing.T) (infinityPanel, string) {
	t.Helper()
	var d struct {
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []infinityPanel `json:"panels"`
	}
	b, err := os.ReadFile("../dashboards/pipelines.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var exporterURL string
	for _, v := range d.Templating.List {
		if v.Name == "exporter_url" {
			exporterURL, _ = v.Query.(string)
		}
	}
	for _, p := range d.Panels {
		if p.Datasource.Type == "yesoreyeram-infinity-datasource" {
			if len(p.Targets) != 1 || exporterURL == "" {
				t.Fatalf("panel %q: want one query and an exporter_url variable", p.Title)
			}
			return p, exporterURL
		}
	}
	t.Fatal("no Infinity panel in pipelines.json")
	return infinityPanel{}, ""
}

// jsonPath resolves a dotted path (data.runs, trigger.source) as both of
// Infinity's parsers do for that form (gjson, lodash get);
// dashboards_test.go keeps the panel's paths to that form.
func jsonPath(v any, path string) (any, bool) {
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// TestRecentRunsPanelOnLiveAPI evaluates the Recent runs table's query on
// the real exporter after a successful and a failed run: the URL (under the
// data source URL, which is the exporter) answers, the root selector finds
// the runs, every column resolves to a value of its declared type in every
// row, and a run id's link is the run page the API names, which answers.
func TestRecentRunsPanelOnLiveAPI(t *testing.T) {
	panel, exporterURL := recentRunsPanel(t)
	tg := panel.Targets[0]
	// The exporter's external URL is what the dashboard's exporter_url
	// says, as a deployment sets them both.
	e := startExporter(t, writeConfig(t, coreConfig), filepath.Join(t.TempDir(), "data"),
		"--storage.retention=0", "--web.external-url="+exporterURL)
	for i, conclusion := range []string{"success", "failure"} {
		for _, d := range exampleRun(t, exampleRunID+int64(i), conclusion) {
			e.mustPost(d, http.StatusAccepted)
		}
	}

	a := e.get(tg.URL)
	if a.code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", tg.URL, a.code, a.body)
	}
	var answer any
	a.decode(t, &answer)
	root, ok := jsonPath(answer, tg.RootSelector)
	rows, isList := root.([]any)
	if !ok || !isList || len(rows) != 2 {
		t.Fatalf("root selector %q gives %v, want the 2 runs of %s", tg.RootSelector, root, a.body)
	}

	linkOf := map[string]string{} // column title -> data link URL
	for _, o := range panel.FieldConfig.Overrides {
		for _, p := range o.Properties {
			var links []struct {
				URL string `json:"url"`
			}
			if p.ID == "links" && json.Unmarshal(p.Value, &links) == nil && len(links) == 1 {
				linkOf[o.Matcher.Options] = links[0].URL
			}
		}
	}
	var statuses []string
	for i, row := range rows {
		values := map[string]any{} // selector -> value
		for _, c := range tg.Columns {
			v, ok := jsonPath(row, c.Selector)
			values[c.Selector] = v
			switch s, isString := v.(string); {
			case !ok || v == nil:
				t.Errorf("run %d: column %s (%s) resolves to nothing", i, c.Text, c.Selector)
			case c.Type == "number":
				if _, isNumber := v.(float64); !isNumber {
					t.Errorf("run %d: column %s (%s) = %v, not a number", i, c.Text, c.Selector, v)
				}
			case c.Type == "timestamp":
				if _, err := time.Parse(time.RFC3339Nano, s); !isString || err != nil {
					t.Errorf("run %d: column %s (%s) = %v, not an RFC 3339 time", i, c.Text, c.Selector, v)
				}
			case !isString || s == "":
				t.Errorf("run %d: column %s (%s) = %v, not a string", i, c.Text, c.Selector, v)
			}
		}
		for _, c := range tg.Columns {
			if link, ok := linkOf[c.Text]; ok {
				// ${__value.raw} as Grafana writes the cell's value.
				raw, _ := values[c.Selector].(string)
				if n, isNumber := values[c.Selector].(float64); isNumber {
					raw = strconv.FormatFloat(n, 'f', -1, 64)
				}
				url := strings.NewReplacer("${exporter_url}", exporterURL, "${__value.raw}", raw).Replace(link)
				if page, _ := values["page_url"].(string); url != page {
					t.Errorf("run %d: column %s links to %s, the API names its page %s", i, c.Text, url, page)
				}
				path := strings.TrimPrefix(url, exporterURL)
				if p := e.get(path); p.code != http.StatusOK || !strings.Contains(string(p.body), "site") {
					t.Errorf("run %d: column %s links to %s, which answers %d", i, c.Text, path, p.code)
				}
			}
		}
		s, _ := values["status"].(string)
		statuses = append(statuses, s)
	}
	slices.Sort(statuses)
	if want := []string{"failed", "success"}; !slices.Equal(statuses, want) {
		t.Errorf("statuses %v, want %v", statuses, want)
	}
	if len(linkOf) < 2 {
		t.Errorf("column links %v: want the run id's and the page's", linkOf)
	}
}
