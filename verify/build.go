package verify

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Build is how a site shows which build it serves; exactly one way is set.
type Build struct {
	// BodyContains must occur in the first MiB of the body once rendered
	// for the run (a meta tag or comment written at build time).
	BodyContains *Template
	// BodyRegexp must match the first MiB of the body once rendered for
	// the run, its fields inserted as literal text.
	BodyRegexp *Template
	// Header names a response header holding the commit, in full or a
	// prefix of at least 7 hex digits.
	Header string
	// JSONURL is a version document, and JSONField the dotted path of the
	// commit in it.
	JSONURL   string
	JSONField string
	// SameAsDeployment needs the URL to serve the same first MiB as the
	// run's own Cloudflare Pages deployment URL.
	SameAsDeployment bool
}

// errPermanent marks a failure no retry can mend: the check ends at once.
var errPermanent = errors.New("permanent")

type permanentError struct{ msg string }

func (e permanentError) Error() string        { return e.msg }
func (e permanentError) Is(target error) bool { return target == errPermanent }

func permanent(format string, args ...any) error {
	return permanentError{fmt.Sprintf(format, args...)}
}

// page is the site's answer the build is read from.
type page struct {
	header http.Header
	body   []byte
}

// maxServedLen bounds what a header or version document may put into an
// error message and the run's JSON as the served commit.
const maxServedLen = 64

// build checks that the page shows the build of the run f describes. It
// returns what the site serves, when it could tell, and the run of the
// pipeline (from others) that built it.
func (c *Checker) build(ctx context.Context, client *http.Client, b *Build, p page, f Fields, others []*pipeline.Run) (string, int64, error) {
	if f.commit == "" {
		return "", 0, permanent("%s has no commit to look for", f.runDesc)
	}
	var (
		shows   func(o Fields) (bool, error)
		served  string
		readErr error
	)
	switch {
	case b.BodyContains != nil || b.BodyRegexp != nil:
		tmpl, key := b.BodyContains, "body_contains"
		if tmpl == nil {
			tmpl, key = b.BodyRegexp, "body_regexp"
		}
		shows = func(o Fields) (bool, error) {
			ok, err := tmpl.matches(p.body, o)
			if err != nil {
				return false, permanent("verify.build.%s: %v", key, err)
			}
			return ok, nil
		}
	case b.Header != "":
		served = printable(p.header.Get(b.Header))
		if served == "" {
			readErr = fmt.Errorf("response has no %s header", b.Header)
		}
	case b.JSONURL != "":
		served, readErr = c.jsonField(ctx, client, b.JSONURL, b.JSONField)
	case b.SameAsDeployment:
		sum := sha256.Sum256(p.body)
		shows = func(o Fields) (bool, error) {
			if o.deploymentURL == "" {
				return false, permanent("%s has no Pages deployment URL to compare with (same_as_deployment)", o.runDesc)
			}
			_, body, err := c.get(ctx, client, o.deploymentURL)
			if err != nil {
				return false, err
			}
			return sha256.Sum256(body) == sum, nil
		}
	}
	if readErr != nil {
		return "", 0, readErr
	}
	if shows == nil {
		shows = func(o Fields) (bool, error) { return sameCommit(o.commit, served), nil }
	}
	ok, err := shows(f)
	if err != nil {
		return "", 0, err
	}
	if ok {
		return cmp.Or(served, f.commit), 0, nil
	}
	// Which other run's build is it? Each commit once, newest run first;
	// runs whose build looks the same as this one's tell nothing. Same
	// bytes are compared with the newest deployment only: each costs a
	// request.
	seen := map[string]bool{f.commit: true}
	for _, r := range others {
		o := FieldsOf(r)
		if o.commit == "" || seen[o.commit] || (b.SameAsDeployment && o.deploymentURL == "") {
			continue
		}
		seen[o.commit] = true
		if match, err := shows(o); err == nil && match {
			return o.commit, r.ID, mismatch(f.commit, o.commit, r.ID)
		}
		if b.SameAsDeployment {
			break
		}
	}
	return served, 0, mismatch(f.commit, served, 0)
}

// mismatch says what the site shows instead of want.
func mismatch(want, served string, run int64) error {
	switch {
	case run != 0:
		return fmt.Errorf("site serves %s (run %d), not %s", short(served), run, short(want))
	case served != "":
		return fmt.Errorf("site serves %s, not %s", short(served), short(want))
	}
	return fmt.Errorf("site does not show %s", short(want))
}

func short(commit string) string {
	if len(commit) == 40 {
		return commit[:shortLen]
	}
	return commit
}

// sameCommit reports whether shown names commit: the full SHA or a prefix
// of at least 7 hex digits, in any case.
func sameCommit(commit, shown string) bool {
	shown = strings.ToLower(shown)
	return len(shown) >= shortLen && commit != "" && strings.HasPrefix(commit, shown)
}

// printable keeps a value read from the site fit for an error message:
// trimmed, at most 64 bytes, no control characters.
func printable(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxServedLen {
		s = s[:maxServedLen]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
}

// jsonField reads the commit at the dotted path field of the JSON document
// at target.
func (c *Checker) jsonField(ctx context.Context, client *http.Client, target, field string) (string, error) {
	resp, body, err := c.get(ctx, client, target)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d, want 200", target, resp.StatusCode)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		if len(body) == maxBodyBytes {
			return "", fmt.Errorf("GET %s: not a JSON document within its first MiB", target)
		}
		return "", fmt.Errorf("GET %s: not JSON: %w", target, err)
	}
	v := doc
	for _, key := range strings.Split(field, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return "", fmt.Errorf("GET %s: no field %s", target, field)
		}
		if v, ok = obj[key]; !ok {
			return "", fmt.Errorf("GET %s: no field %s", target, field)
		}
	}
	switch v := v.(type) {
	case string:
		return printable(v), nil
	case json.Number:
		return v.String(), nil
	}
	return "", fmt.Errorf("GET %s: field %s is not a string", target, field)
}
