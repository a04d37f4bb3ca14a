package config

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// TestBuildTarget: each way of showing a build reaches the verify check,
// templates parsed, with the recheck interval.
func TestBuildTarget(t *testing.T) {
	tests := []struct {
		build string
		check func(t *testing.T, v *Verify)
	}{
		{`{ body_contains: '{{ .ShortCommit }}' }`, func(t *testing.T, v *Verify) {
			if b := v.Target().Build; b == nil || b.BodyContains == nil || b.BodyContains.String() != "{{.ShortCommit}}" {
				t.Errorf("build %+v", b)
			}
		}},
		{`{ body_regexp: 'commit: {{ .Commit }}' }`, func(t *testing.T, v *Verify) {
			if b := v.Target().Build; b == nil || b.BodyRegexp == nil || b.BodyContains != nil {
				t.Errorf("build %+v", b)
			}
		}},
		{`{ header: X-Commit }`, func(t *testing.T, v *Verify) {
			if b := v.Target().Build; b == nil || b.Header != "X-Commit" {
				t.Errorf("build %+v", b)
			}
		}},
		{`{ json_url: 'https://example.com/version.json', json_field: build.commit }`, func(t *testing.T, v *Verify) {
			if b := v.Target().Build; b == nil || b.JSONURL != "https://example.com/version.json" || b.JSONField != "build.commit" {
				t.Errorf("build %+v", b)
			}
		}},
		{`{ same_as_deployment: true }`, func(t *testing.T, v *Verify) {
			if b := v.Target().Build; b == nil || !b.SameAsDeployment {
				t.Errorf("build %+v", b)
			}
		}},
	}
	for _, tc := range tests {
		c, err := Parse([]byte(`
webhooks:
  github: { secret: s }
  cloudflare: { secret: s }
cloudflare: { poll_interval: 0 }
pipelines:
  - name: site
    workflow: deploy.yml
    pages_project: site
    verify:
      url: https://example.com/
      recheck_interval: 1s
      build: `+tc.build+`
`), "build.yml")
		if err != nil {
			t.Fatalf("%s: %v", tc.build, err)
		}
		v := c.Pipelines[0].Verify
		if v.RecheckInterval != model1s {
			t.Errorf("%s: recheck_interval %v", tc.build, v.RecheckInterval)
		}
		tc.check(t, v)
	}
}

var model1s = model.Duration(time.Second)
