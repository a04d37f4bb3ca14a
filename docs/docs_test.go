package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// metricName is the shape of every metric the exporter registers.
var metricName = regexp.MustCompile(`^pipeline(_exporter)?_[a-z0-9_]+$`)

// notExporter are the parts of the repository that are not the exporter
// binary: their string literals are no metrics it registers.
var notExporter = []string{"bench", "docs", "e2e", "tools", "cmd/webhook-demo", "cmd/webhook-load", "cmd/null-receiver"}

// codeMetrics returns every metric name the exporter's Go code (tests
// excluded) gives client_golang: the string literal of an Opts' Name or of
// NewDesc's first argument. versioncollector builds
// pipeline_exporter_build_info from the program name.
func codeMetrics(t *testing.T) map[string][]string {
	t.Helper()
	found := map[string][]string{"pipeline_exporter_build_info": {"versioncollector"}}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." || slices.Contains(notExporter, filepath.ToSlash(rel)) || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		add := func(e ast.Expr) {
			if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && metricName.MatchString(s) {
					found[s] = append(found[s], rel)
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.KeyValueExpr: // prometheus.*Opts{Name: "…"}
				if k, ok := n.Key.(*ast.Ident); ok && k.Name == "Name" {
					add(n.Value)
				}
			case *ast.CallExpr: // prometheus.NewDesc("…", …)
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewDesc" && len(n.Args) > 0 {
					add(n.Args[0])
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// docMetric is the first cell of a metrics.md table row: `name{labels}`.
var docMetric = regexp.MustCompile("^\\| `(pipeline[a-z0-9_]*)(\\{[^}]*\\})?` \\|")

// docMetrics returns the metric names of docs/metrics.md's tables.
func docMetrics(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := docMetric.FindStringSubmatch(line); m != nil {
			if out[m[1]] {
				t.Errorf("metrics.md lists %s twice", m[1])
			}
			out[m[1]] = true
		}
	}
	return out
}

// TestMetricsReference: docs/metrics.md lists exactly the metrics the
// exporter's code registers.
func TestMetricsReference(t *testing.T) {
	code, doc := codeMetrics(t), docMetrics(t)
	if len(code) < 20 {
		t.Fatalf("found only %d metric names in the code: %v", len(code), code)
	}
	for name, where := range code {
		if !doc[name] {
			t.Errorf("%s (registered in %v) is not in docs/metrics.md", name, slices.Compact(where))
		}
	}
	for name := range doc {
		if _, ok := code[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which the code does not register", name)
		}
	}
}

// mdLink is a Markdown link target.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsStandAlone: every relative link of the docs points at a file of
// the repository (and an anchor at a heading there); the docs point at no
// file outside it and name no document the repository does not ship.
func TestDocsStandAlone(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil || len(files) < 6 {
		t.Fatalf("docs: %v %v", files, err)
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if strings.Contains(text, "DESIGN") {
			t.Errorf("%s mentions a design document the repository does not ship", f)
		}
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") {
				continue // an outside site (GitHub, Kubernetes docs), not a file
			}
			path, anchor, _ := strings.Cut(target, "#")
			if path == "" {
				path = f
			}
			full, err := filepath.Abs(filepath.Join(filepath.Dir(f), path))
			if err != nil {
				t.Fatal(err)
			}
			if rel, err := filepath.Rel(repo, full); err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s links to %s, outside the repository", f, target)
				continue
			}
			body, err := os.ReadFile(full)
			if err != nil {
				if fi, serr := os.Stat(full); serr == nil && fi.IsDir() {
					continue
				}
				t.Errorf("%s links to %s: %v", f, target, err)
				continue
			}
			if anchor != "" && !slices.Contains(anchors(string(body)), anchor) {
				t.Errorf("%s links to %s: no heading with anchor #%s", f, target, anchor)
			}
		}
	}
}

// anchors returns GitHub's anchors of a Markdown file's headings.
func anchors(md string) []string {
	var out []string
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		out = append(out, b.String())
	}
	return out
}
