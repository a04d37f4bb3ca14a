package config

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// FuzzParse checks that no input panics, that every error names the file
// and a line, and that an accepted config holds what validation promises.
func FuzzParse(f *testing.F) {
	for _, glob := range []string{"testdata/*.yml", "testdata/bad/*.yml", "../examples/*.yml"} {
		files, err := filepath.Glob(glob)
		if err != nil {
			f.Fatal(err)
		}
		for _, name := range files {
			data, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	// Relative *_file paths resolve against testdata, where the seeds' files are.
	const filename = "testdata/fuzz.yml"
	located := regexp.MustCompile(`^testdata/fuzz\.yml:[0-9]+: `)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, filename)
		if err != nil {
			if !located.MatchString(err.Error()) {
				t.Fatalf("error without file and line: %v", err)
			}
			return
		}
		specs := c.Specs()
		if len(specs) == 0 || len(specs) != len(c.Pipelines) {
			t.Fatalf("accepted config has %d specs for %d pipelines", len(specs), len(c.Pipelines))
		}
		seen := map[string]bool{}
		for _, s := range specs {
			if !pipelineName.MatchString(s.Name) || seen[s.Name] || s.Timeout <= 0 || s.DispatchTimeout <= 0 {
				t.Fatalf("accepted an invalid pipeline: %+v", s)
			}
			seen[s.Name] = true
		}
		if c.Webhooks.MaxBodyBytes <= 0 || c.Webhooks.MaxBodyBytes > MaxWebhookBodyBytes {
			t.Fatalf("accepted max_body_bytes %d", c.Webhooks.MaxBodyBytes)
		}
	})
}
