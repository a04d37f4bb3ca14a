package verify

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	newSHA = "5d6e7f8a9b0c1d2e3f405162738495a6b7c8d9e0"
	oldSHA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
)

// buildRun is run id with the commit and, when deployment is set, a Pages
// deployment at that URL.
func buildRun(id int64, sha, deployment string) *pipeline.Run {
	r := &pipeline.Run{ID: id, Pipeline: "site", GitHub: &pipeline.GitHubRun{RunID: 9000 + id, RunAttempt: 1, HeadSHA: sha, HeadBranch: "main"}}
	if deployment != "" {
		r.Pages = &pipeline.PagesDeployment{DeploymentID: fmt.Sprintf("dep-%d", id), URL: deployment}
	}
	return r
}

func mustTemplate(t *testing.T, src string, asRegexp bool) *Template {
	t.Helper()
	tm, err := ParseTemplate(src, asRegexp)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// site is a fake live site: serve answers the n-th request (from 1).
func site(t *testing.T, serve func(n int, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve(int(n.Add(1)), w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func htmlPage(commit string) string {
	return `<html><head><meta name="commit" content="` + commit + `"></head><body>Welcome</body></html>`
}

func TestCheckBuild(t *testing.T) {
	earlier := buildRun(41, oldSHA, "")
	shortCommitInBody := func(t *testing.T, _ string) *Build {
		return &Build{BodyContains: mustTemplate(t, `{{ .ShortCommit }}`, false)}
	}
	commitHeader := func(*testing.T, string) *Build { return &Build{Header: "X-Commit"} }
	serveHeader := func(commit string) func(int, http.ResponseWriter, *http.Request) {
		return func(_ int, w http.ResponseWriter, _ *http.Request) { w.Header().Set("X-Commit", commit) }
	}
	tests := []struct {
		name  string
		build func(t *testing.T, srvURL string) *Build
		// serve answers the n-th request of the site.
		serve    func(n int, w http.ResponseWriter, r *http.Request)
		deadline time.Duration

		wantSuccess  bool
		wantAttempts int
		wantErr      string
		wantServed   string
		wantRun      int64
	}{
		{
			name:         "served commit",
			build:        shortCommitInBody,
			serve:        func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, htmlPage(newSHA[:7])) },
			deadline:     time.Minute,
			wantSuccess:  true,
			wantAttempts: 1,
			wantServed:   newSHA,
		},
		{
			name:  "stale CDN names the earlier run",
			build: shortCommitInBody,
			serve: func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, htmlPage(oldSHA[:7])) },
			// Attempts at 0, 1s, 3s and 7s.
			deadline:     10 * time.Second,
			wantAttempts: 4,
			wantErr:      "site serves 1a2b3c4 (run 41), not 5d6e7f8",
			wantServed:   oldSHA,
			wantRun:      41,
		},
		{
			name:  "propagation delay within the deadline",
			build: shortCommitInBody,
			serve: func(n int, w http.ResponseWriter, _ *http.Request) {
				if n < 3 {
					fmt.Fprint(w, htmlPage(oldSHA[:7]))
					return
				}
				fmt.Fprint(w, htmlPage(newSHA[:7]))
			},
			deadline:     time.Minute,
			wantSuccess:  true,
			wantAttempts: 3,
			wantServed:   newSHA,
		},
		{
			name:         "a page showing no known build",
			build:        shortCommitInBody,
			serve:        func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<h1>Welcome</h1>") },
			wantAttempts: 1,
			wantErr:      "site does not show 5d6e7f8",
		},
		{
			name: "body_regexp",
			build: func(t *testing.T, _ string) *Build {
				return &Build{BodyRegexp: mustTemplate(t, `<meta name="commit" content="{{ .Commit }}">`, true)}
			},
			serve:        func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, htmlPage(newSHA)) },
			wantSuccess:  true,
			wantAttempts: 1,
			wantServed:   newSHA,
		},
		{
			name: "body_regexp names the earlier run",
			build: func(t *testing.T, _ string) *Build {
				return &Build{BodyRegexp: mustTemplate(t, `content="{{ .Commit }}"`, true)}
			},
			serve:        func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, htmlPage(oldSHA)) },
			wantAttempts: 1,
			wantErr:      "site serves 1a2b3c4 (run 41), not 5d6e7f8",
			wantServed:   oldSHA,
			wantRun:      41,
		},
		{
			name:         "header with a short commit",
			build:        commitHeader,
			serve:        serveHeader(strings.ToUpper(newSHA[:9])),
			wantSuccess:  true,
			wantAttempts: 1,
			wantServed:   strings.ToUpper(newSHA[:9]),
		},
		{
			name:         "header with the earlier run's commit",
			build:        commitHeader,
			serve:        serveHeader(oldSHA),
			wantAttempts: 1,
			wantErr:      "site serves 1a2b3c4 (run 41), not 5d6e7f8",
			wantServed:   oldSHA,
			wantRun:      41,
		},
		{
			name:         "header with an unknown commit",
			build:        commitHeader,
			serve:        serveHeader("abc1234"),
			wantAttempts: 1,
			wantErr:      "site serves abc1234, not 5d6e7f8",
			wantServed:   "abc1234",
		},
		{
			name:         "header too short to name a commit",
			build:        commitHeader,
			serve:        serveHeader("5d6"),
			wantAttempts: 1,
			wantErr:      "site serves 5d6, not 5d6e7f8",
			wantServed:   "5d6",
		},
		{
			name:         "header missing",
			build:        commitHeader,
			serve:        func(int, http.ResponseWriter, *http.Request) {},
			wantAttempts: 1,
			wantErr:      "response has no X-Commit header",
		},
		{
			name: "json_url",
			build: func(_ *testing.T, u string) *Build {
				return &Build{JSONURL: u + "/version.json", JSONField: "build.commit"}
			},
			serve: func(_ int, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/version.json" {
					fmt.Fprintf(w, `{"build": {"commit": %q, "run": 9042}}`, newSHA)
				}
			},
			wantSuccess:  true,
			wantAttempts: 1,
			wantServed:   newSHA,
		},
		{
			name: "json_url with the earlier run's commit",
			build: func(_ *testing.T, u string) *Build {
				return &Build{JSONURL: u + "/version.json", JSONField: "commit"}
			},
			serve: func(_ int, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/version.json" {
					fmt.Fprintf(w, `{"commit": %q}`, oldSHA)
				}
			},
			wantAttempts: 1,
			wantErr:      "site serves 1a2b3c4 (run 41), not 5d6e7f8",
			wantServed:   oldSHA,
			wantRun:      41,
		},
		{
			name: "json_url answering HTML",
			build: func(_ *testing.T, u string) *Build {
				return &Build{JSONURL: u + "/version.json", JSONField: "commit"}
			},
			serve:        func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<html>") },
			wantAttempts: 1,
			wantErr:      "GET %s/version.json: not JSON: invalid character '<' looking for beginning of value",
		},
		{
			name: "json_url with a document past the first MiB",
			build: func(_ *testing.T, u string) *Build {
				return &Build{JSONURL: u + "/version.json", JSONField: "commit"}
			},
			serve: func(_ int, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/version.json" {
					fmt.Fprintf(w, `{"padding": "%s", "commit": %q}`, strings.Repeat("x", 2<<20), newSHA)
				}
			},
			wantAttempts: 1,
			wantErr:      "GET %s/version.json: not a JSON document within its first MiB",
		},
		{
			name: "json_url without the field",
			build: func(_ *testing.T, u string) *Build {
				return &Build{JSONURL: u + "/version.json", JSONField: "build.commit"}
			},
			serve:        func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"build": "x"}`) },
			wantAttempts: 1,
			wantErr:      "GET %s/version.json: no field build.commit",
		},
		{
			name: "json_url missing",
			build: func(_ *testing.T, u string) *Build {
				return &Build{JSONURL: u + "/version.json", JSONField: "commit"}
			},
			serve: func(_ int, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/version.json" {
					http.NotFound(w, r)
				}
			},
			wantAttempts: 1,
			wantErr:      "GET %s/version.json: status 404, want 200",
		},
		{
			name: "a template naming what the run lacks fails at once",
			build: func(t *testing.T, _ string) *Build {
				return &Build{BodyContains: mustTemplate(t, `{{ .DeploymentID }}`, false)}
			},
			serve:        func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, htmlPage(newSHA)) },
			deadline:     time.Minute,
			wantAttempts: 1,
			wantErr:      "verify.build.body_contains: run 42 has no Pages deployment (.DeploymentID)",
		},
		{
			name:         "same_as_deployment on a run without a Pages deployment fails at once",
			build:        func(*testing.T, string) *Build { return &Build{SameAsDeployment: true} },
			serve:        func(_ int, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, htmlPage(newSHA)) },
			deadline:     time.Minute,
			wantAttempts: 1,
			wantErr:      "run 42 has no Pages deployment URL to compare with (same_as_deployment)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := site(t, tc.serve)
			clock := newFakeClock()
			c := &Checker{Client: srv.Client(), Now: clock.Now, Sleep: clock.Sleep}
			target := Target{URL: srv.URL + "/", Deadline: tc.deadline, Build: tc.build(t, srv.URL)}

			got := c.Check(context.Background(), buildRun(42, newSHA, ""), target, []*pipeline.Run{earlier})

			wantErr := strings.ReplaceAll(tc.wantErr, "%s", srv.URL)
			if got.Success != tc.wantSuccess || got.Attempts != tc.wantAttempts || got.Error != wantErr {
				t.Errorf("success %v attempts %d error %q, want %v %d %q", got.Success, got.Attempts, got.Error, tc.wantSuccess, tc.wantAttempts, wantErr)
			}
			if got.Build != newSHA || got.Served != tc.wantServed || got.ServedRunID != tc.wantRun || got.URL != target.URL {
				t.Errorf("build %q served %q (run %d) url %q, want %q %q (run %d)", got.Build, got.Served, got.ServedRunID, got.URL, newSHA, tc.wantServed, tc.wantRun)
			}
		})
	}
}

// TestTemplateFields: each field renders the run's value, in a
// body_contains as in a body_regexp (quoted there).
func TestTemplateFields(t *testing.T) {
	run := buildRun(42, newSHA, "https://dep-42.site.pages.dev")
	run.GitHub.HeadBranch = "release/1.2+x"
	tests := []struct {
		field, want string
	}{
		{".Commit", newSHA},
		{".ShortCommit", newSHA[:7]},
		{".RunID", "9042"},
		{".Branch", "release/1.2+x"},
		{".DeploymentID", "dep-42"},
		{".DeploymentURL", "https://dep-42.site.pages.dev"},
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			body := []byte(`<meta name="build" content="` + tc.want + `">`)
			for _, asRegexp := range []bool{false, true} {
				tm := mustTemplate(t, `content="{{ `+tc.field+` }}"`, asRegexp)
				if ok, err := tm.matches(body, FieldsOf(run)); !ok || err != nil {
					t.Errorf("regexp %v: %s does not match %s: %v", asRegexp, tc.field, body, err)
				}
				other := []byte(strings.ReplaceAll(string(body), tc.want, tc.want[:len(tc.want)-1]+"_"))
				if ok, err := tm.matches(other, FieldsOf(run)); ok || err != nil {
					t.Errorf("regexp %v: %s matches %s: %v", asRegexp, tc.field, other, err)
				}
			}
		})
	}
	// Quoting: the branch's '.' and '+' are literal in a body_regexp.
	tm := mustTemplate(t, `{{ .Branch }}`, true)
	if ok, _ := tm.matches([]byte("release/1x2+x"), FieldsOf(run)); ok {
		t.Error("a branch's '.' matched any character in a body_regexp")
	}
}

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		src      string
		asRegexp bool
		wantErr  string
	}{
		{`{{ .ShortCommit }}`, false, ""},
		{`commit-{{ .Commit }}-{{ .RunID }}`, true, ""},
		{`{{ .Sha }}`, false, "unknown field Sha (fields: .Commit .ShortCommit .RunID .Branch .DeploymentID .DeploymentURL)"},
		{`{{ .Commit`, false, "1: unclosed action"},
		{`{{ if .Commit }}`, false, "1: unexpected EOF"},
		{`{{ "" }}`, false, "renders empty"},
		{`(({{ .Commit }}`, true, "error parsing regexp: missing closing ): `((0123456789abcdef0123456789abcdef01234567`"},
	}
	for _, tc := range tests {
		_, err := ParseTemplate(tc.src, tc.asRegexp)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.wantErr {
			t.Errorf("ParseTemplate(%q, %v) error %q, want %q", tc.src, tc.asRegexp, got, tc.wantErr)
		}
	}
}

// TestSameAsDeployment: the site must serve the bytes of the run's own
// Pages deployment; when it serves an earlier deployment's, the error names
// that run.
func TestSameAsDeployment(t *testing.T) {
	bodies := map[string]string{"/dep-41/": htmlPage("old"), "/dep-42/": htmlPage("new")}
	var live atomic.Value
	live.Store("/dep-41/")
	pages, _ := site(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			fmt.Fprint(w, bodies[live.Load().(string)])
			return
		}
		fmt.Fprint(w, bodies[r.URL.Path])
	})
	run := buildRun(42, newSHA, pages.URL+"/dep-42/")
	earlier := []*pipeline.Run{buildRun(41, oldSHA, pages.URL+"/dep-41/")}
	c := &Checker{Client: pages.Client()}
	target := Target{URL: pages.URL + "/", Build: &Build{SameAsDeployment: true}}

	got := c.Check(context.Background(), run, target, earlier)
	if got.Success || got.Error != "site serves 1a2b3c4 (run 41), not 5d6e7f8" || got.ServedRunID != 41 {
		t.Errorf("serving deployment 41: %+v", got)
	}
	live.Store("/dep-42/")
	if got := c.Check(context.Background(), run, target, earlier); !got.Success || got.Served != newSHA {
		t.Errorf("serving deployment 42: %+v", got)
	}
	live.Store("/elsewhere/")
	if got := c.Check(context.Background(), run, target, earlier); got.Success || got.Error != "site does not show 5d6e7f8" {
		t.Errorf("serving neither: %+v", got)
	}
}

// TestRecheck: one attempt, whatever the deadline; a hung site costs one
// timeout.
func TestRecheck(t *testing.T) {
	srv, n := site(t, func(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	clock := newFakeClock()
	c := &Checker{Client: srv.Client(), Now: clock.Now, Sleep: clock.Sleep}
	target := Target{URL: srv.URL + "/", Timeout: 50 * time.Millisecond, Deadline: time.Hour, Build: &Build{Header: "X-Commit"}}

	got := c.Recheck(context.Background(), buildRun(42, newSHA, ""), target, nil)

	if got.Success || got.Error != "timeout after 50ms" || n.Load() != 1 || len(clock.sleeps) != 0 || got.RunID != 42 || !got.CheckedAt.Equal(clock.Now()) {
		t.Errorf("recheck of a hung site: %+v after %d requests and sleeps %v", got, n.Load(), clock.sleeps)
	}
	srv2, _ := site(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.Header().Set("X-Commit", newSHA) })
	c.Client = srv2.Client()
	target.URL, target.Timeout = srv2.URL, 10*time.Second
	if got := c.Recheck(context.Background(), buildRun(42, newSHA, ""), target, nil); !got.Success || got.Served != newSHA || got.StatusCode != 200 {
		t.Errorf("recheck of the live build: %+v", got)
	}
}
