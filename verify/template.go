package verify

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// shortLen is how many hex digits of a commit .ShortCommit and the error
// messages show: git's own default abbreviation.
const shortLen = 7

// Fields are what a verify.build template may name, read from one run:
// {{ .Commit }}, {{ .ShortCommit }}, {{ .RunID }}, {{ .Branch }},
// {{ .DeploymentID }}, {{ .DeploymentURL }}. Each is a method that fails
// when the run lacks the value, so a template never renders an empty
// string where a value was meant (an empty marker would match any page).
type Fields struct {
	commit, branch, deploymentID, deploymentURL string
	runID                                       int64
	// runDesc names the run in errors.
	runDesc string
	// quote makes every value a literal inside a regular expression.
	quote bool
}

// FieldsOf returns the template fields of a run.
func FieldsOf(r *pipeline.Run) Fields {
	f := Fields{runDesc: fmt.Sprintf("run %d", r.ID)}
	if g := r.GitHub; g != nil {
		f.commit, f.branch, f.runID = strings.ToLower(g.HeadSHA), g.HeadBranch, g.RunID
	}
	if p := r.Pages; p != nil {
		f.deploymentID, f.deploymentURL = p.DeploymentID, p.URL
	}
	return f
}

// sampleFields stand for a run with every value, to find templates that
// name unknown fields when the config loads.
var sampleFields = Fields{
	commit: "0123456789abcdef0123456789abcdef01234567", branch: "main", runID: 1,
	deploymentID: "f64788e9-fccd-4d4a-a28a-cb84f88f6", deploymentURL: "https://f64788e9.example.pages.dev",
	runDesc: "a sample run",
}

func (f Fields) value(name, v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("%s has no %s", f.runDesc, name)
	}
	if f.quote {
		return regexp.QuoteMeta(v), nil
	}
	return v, nil
}

// Commit is the full commit SHA the run built (GitHub's head_sha).
func (f Fields) Commit() (string, error) { return f.value("commit", f.commit) }

// ShortCommit is the commit's first 7 hex digits.
func (f Fields) ShortCommit() (string, error) {
	return f.value("commit", f.commit[:min(len(f.commit), shortLen)])
}

// RunID is GitHub's workflow run id, what a workflow writes from
// ${{ github.run_id }}.
func (f Fields) RunID() (int64, error) {
	if f.runID == 0 {
		return 0, fmt.Errorf("%s has no GitHub run", f.runDesc)
	}
	return f.runID, nil
}

// Branch is the branch the run built.
func (f Fields) Branch() (string, error) { return f.value("branch", f.branch) }

// DeploymentID is the id of the run's Cloudflare Pages deployment.
func (f Fields) DeploymentID() (string, error) {
	return f.value("Pages deployment (.DeploymentID)", f.deploymentID)
}

// DeploymentURL is the URL of the run's own Cloudflare Pages deployment.
func (f Fields) DeploymentURL() (string, error) {
	return f.value("Pages deployment URL (.DeploymentURL)", f.deploymentURL)
}

// Template is a verify.build body_contains or body_regexp: Go text/template
// over Fields.
type Template struct {
	t *template.Template
	// regexp marks a body_regexp: values are quoted, the result compiled.
	regexp bool
}

// ParseTemplate parses a body_contains template (asRegexp false) or a
// body_regexp one, and renders it once for a sample run, so that a field
// that does not exist, or a regular expression that cannot compile, fails
// the config load rather than the first verify.
func ParseTemplate(src string, asRegexp bool) (*Template, error) {
	t, err := template.New("build").Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "template: build:"))
	}
	tm := &Template{t: t, regexp: asRegexp}
	if _, err := tm.matches(nil, sampleFields); err != nil {
		return nil, err
	}
	return tm, nil
}

// String returns the template as written.
func (t *Template) String() string { return t.t.Root.String() }

// render executes the template for f. It fails when f lacks a value the
// template names, or the result is empty.
func (t *Template) render(f Fields) (string, error) {
	f.quote = t.regexp
	var b strings.Builder
	if err := t.t.Execute(&b, f); err != nil {
		return "", templateError(err)
	}
	if b.Len() == 0 {
		return "", errors.New("renders empty")
	}
	return b.String(), nil
}

// templateError keeps what text/template says after its position prefix:
// the field and why, not where in a one-line template.
func templateError(err error) error {
	var ee template.ExecError
	if errors.As(err, &ee) {
		err = ee.Err
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, "error calling "); i >= 0 {
		msg = msg[i+len("error calling "):]
		if j := strings.Index(msg, ": "); j >= 0 {
			msg = msg[j+2:]
		}
	} else if i := strings.Index(msg, "can't evaluate field "); i >= 0 {
		msg = "unknown field " + strings.Fields(msg[i+len("can't evaluate field "):])[0] +
			" (fields: .Commit .ShortCommit .RunID .Branch .DeploymentID .DeploymentURL)"
	}
	return errors.New(msg)
}

// matches reports whether the body shows what the template renders for f.
func (t *Template) matches(body []byte, f Fields) (bool, error) {
	want, err := t.render(f)
	if err != nil {
		return false, err
	}
	if t.regexp {
		re, err := regexp.Compile(want)
		if err != nil {
			return false, err
		}
		return re.Match(body), nil
	}
	return bytes.Contains(body, []byte(want)), nil
}
