package config

import (
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/verify"
)

// Build is how a site shows which build it serves (verify.build): exactly
// one of its ways is set.
type Build struct {
	// BodyContains and BodyRegexp are Go templates over the run (see
	// verify.Fields), parsed when the config loads.
	BodyContains string `yaml:"body_contains,omitempty"`
	BodyRegexp   string `yaml:"body_regexp,omitempty"`
	// Header names a response header holding the commit.
	Header string `yaml:"header,omitempty"`
	// JSONURL is a version document and JSONField the dotted path of the
	// commit in it.
	JSONURL   string `yaml:"json_url,omitempty"`
	JSONField string `yaml:"json_field,omitempty"`
	// SameAsDeployment compares the site with the run's own Cloudflare
	// Pages deployment URL.
	SameAsDeployment bool `yaml:"same_as_deployment,omitempty"`

	// compiled is what validation parsed, handed to the checks.
	compiled verify.Build
}

// UnmarshalYAML decodes strictly.
func (b *Build) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Build
	return decodeStruct(unmarshal, (*plain)(b))
}

// validateBuild parses the templates and checks that exactly one way is
// set, and that same_as_deployment has a Pages project to compare with.
func (d *decoder) validateBuild(b *Build, pagesProject, path string) error {
	ways := 0
	for _, set := range []bool{b.BodyContains != "", b.BodyRegexp != "", b.Header != "", b.JSONURL != "", b.SameAsDeployment} {
		if set {
			ways++
		}
	}
	if ways != 1 {
		return d.errorf(path, "set exactly one of body_contains, body_regexp, header, json_url, same_as_deployment")
	}
	b.compiled = verify.Build{Header: b.Header, JSONURL: b.JSONURL, JSONField: b.JSONField, SameAsDeployment: b.SameAsDeployment}
	var err error
	switch {
	case b.BodyContains != "":
		if b.compiled.BodyContains, err = verify.ParseTemplate(b.BodyContains, false); err != nil {
			return d.errorf(path+".body_contains", "%v", err)
		}
	case b.BodyRegexp != "":
		if b.compiled.BodyRegexp, err = verify.ParseTemplate(b.BodyRegexp, true); err != nil {
			return d.errorf(path+".body_regexp", "%v", err)
		}
	case b.Header != "":
		if !validHeaderName(b.Header) {
			return d.errorf(path+".header", "is not a valid HTTP header name")
		}
	case b.JSONURL != "":
		if _, err := d.httpURL(path+".json_url", b.JSONURL); err != nil {
			return err
		}
		if b.JSONField == "" {
			return d.errorf(path+".json_field", "is required with json_url: the dotted path of the commit in the document, such as commit or build.sha")
		}
	case b.SameAsDeployment && pagesProject == "":
		return d.errorf(path+".same_as_deployment", "needs the pipeline's pages_project: it compares the site with the run's own Pages deployment")
	}
	if b.JSONField != "" && b.JSONURL == "" {
		return d.errorf(path+".json_field", "goes with json_url")
	}
	return nil
}

// Target returns the check the verify stage and the rechecks make.
func (v *Verify) Target() verify.Target {
	t := verify.Target{
		URL:          v.URL,
		ExpectStatus: v.ExpectStatus,
		Timeout:      time.Duration(v.Timeout),
		BodyContains: v.BodyContains,
		Deadline:     time.Duration(v.Deadline),
	}
	if v.BodyRegexp != nil {
		t.BodyRegexp = v.BodyRegexp.Regexp
	}
	if v.Build != nil {
		b := v.Build.compiled
		t.Build = &b
	}
	return t
}
