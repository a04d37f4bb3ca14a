package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// The oracle: parseWorkflowRun and parseWorkflowJob as they were with
// encoding/json, kept verbatim but for the names. extractFields must agree
// with them on every input.

type oracleRepository struct {
	FullName string `json:"full_name"`
}

type oracleRunPayload struct {
	WorkflowRun *struct {
		ID           int64     `json:"id"`
		RunAttempt   int       `json:"run_attempt"`
		WorkflowID   int64     `json:"workflow_id"`
		Path         string    `json:"path"`
		Name         string    `json:"name"`
		HeadBranch   string    `json:"head_branch"`
		HeadSHA      string    `json:"head_sha"`
		Event        string    `json:"event"`
		Status       string    `json:"status"`
		Conclusion   string    `json:"conclusion"`
		HTMLURL      string    `json:"html_url"`
		CreatedAt    time.Time `json:"created_at"`
		UpdatedAt    time.Time `json:"updated_at"`
		RunStartedAt time.Time `json:"run_started_at"`
	} `json:"workflow_run"`
	Repository oracleRepository `json:"repository"`
}

type oracleJobPayload struct {
	WorkflowJob *struct {
		ID           int64     `json:"id"`
		RunID        int64     `json:"run_id"`
		RunAttempt   int       `json:"run_attempt"`
		Name         string    `json:"name"`
		WorkflowName string    `json:"workflow_name"`
		HeadBranch   string    `json:"head_branch"`
		HeadSHA      string    `json:"head_sha"`
		Status       string    `json:"status"`
		Conclusion   string    `json:"conclusion"`
		HTMLURL      string    `json:"html_url"`
		CreatedAt    time.Time `json:"created_at"`
		StartedAt    time.Time `json:"started_at"`
		CompletedAt  time.Time `json:"completed_at"`
	} `json:"workflow_job"`
	Repository oracleRepository `json:"repository"`
}

func oracleParseWorkflowRun(body []byte, deliveryID string) ([]pipeline.Event, error) {
	var p oracleRunPayload
	if err := decodeObject(body, &p); err != nil {
		return nil, err
	}
	run := p.WorkflowRun
	switch {
	case run == nil:
		return nil, errors.New("missing workflow_run object")
	case run.ID == 0:
		return nil, errors.New("missing workflow_run.id")
	case run.Status == "":
		return nil, errors.New("missing workflow_run.status")
	}
	return []pipeline.Event{pipeline.WorkflowRunEvent{
		Repository:   p.Repository.FullName,
		RunID:        run.ID,
		RunAttempt:   run.RunAttempt,
		WorkflowID:   run.WorkflowID,
		WorkflowPath: run.Path,
		Name:         run.Name,
		HeadBranch:   run.HeadBranch,
		HeadSHA:      run.HeadSHA,
		Event:        run.Event,
		Status:       run.Status,
		Conclusion:   run.Conclusion,
		HTMLURL:      run.HTMLURL,
		CreatedAt:    run.CreatedAt,
		UpdatedAt:    run.UpdatedAt,
		RunStartedAt: run.RunStartedAt,
		DeliveryID:   deliveryID,
	}}, nil
}

func oracleParseWorkflowJob(body []byte) ([]pipeline.Event, error) {
	var p oracleJobPayload
	if err := decodeObject(body, &p); err != nil {
		return nil, err
	}
	job := p.WorkflowJob
	switch {
	case job == nil:
		return nil, errors.New("missing workflow_job object")
	case job.ID == 0:
		return nil, errors.New("missing workflow_job.id")
	case job.RunID == 0:
		return nil, errors.New("missing workflow_job.run_id")
	case job.Status == "":
		return nil, errors.New("missing workflow_job.status")
	}
	return []pipeline.Event{pipeline.WorkflowJobEvent{
		Repository:   p.Repository.FullName,
		RunID:        job.RunID,
		RunAttempt:   job.RunAttempt,
		JobID:        job.ID,
		Name:         job.Name,
		WorkflowName: job.WorkflowName,
		HeadBranch:   job.HeadBranch,
		HeadSHA:      job.HeadSHA,
		Status:       job.Status,
		Conclusion:   job.Conclusion,
		HTMLURL:      job.HTMLURL,
		CreatedAt:    job.CreatedAt,
		StartedAt:    job.StartedAt,
		CompletedAt:  job.CompletedAt,
	}}, nil
}

// sameError reports whether got says what the oracle's want says. The one
// allowed difference: where encoding/json names the Go struct type a JSON
// value did not fit, extractFields says "object".
func sameError(got, want error) bool {
	if got.Error() == want.Error() {
		return true
	}
	g, ok := strings.CutSuffix(got.Error(), " where object was expected")
	w, _, _ := strings.Cut(want.Error(), " where ")
	return ok && strings.HasPrefix(w, "field ") && g == w
}

// diffOracle returns how both parsers' results for body differ from the
// oracle's, or "" if they agree.
func diffOracle(body []byte) string {
	var diffs []string
	check := func(event string, got []pipeline.Event, gotErr error, want []pipeline.Event, wantErr error) {
		switch {
		case (gotErr == nil) != (wantErr == nil):
			diffs = append(diffs, fmt.Sprintf("%s: error %v, oracle %v", event, gotErr, wantErr))
		case gotErr != nil && !sameError(gotErr, wantErr):
			diffs = append(diffs, fmt.Sprintf("%s: error\n  %v\noracle\n  %v", event, gotErr, wantErr))
		case !reflect.DeepEqual(got, want):
			diffs = append(diffs, fmt.Sprintf("%s:\n   got %+v\noracle %+v", event, got, want))
		}
	}
	got, gotErr := parseWorkflowRun(body, "d")
	want, wantErr := oracleParseWorkflowRun(body, "d")
	check("workflow_run", got, gotErr, want, wantErr)
	got, gotErr = parseWorkflowJob(body)
	want, wantErr = oracleParseWorkflowJob(body)
	check("workflow_job", got, gotErr, want, wantErr)
	return strings.Join(diffs, "\n")
}

// FuzzDecodeWorkflowRunDiff runs each input through both workflow_run and
// both workflow_job parsers: extractFields against encoding/json.
func FuzzDecodeWorkflowRunDiff(f *testing.F) {
	seedFiles(f, "github/*/*.json", func(_ string, body []byte) { f.Add(body) })
	// Small bodies let the mutator reach keys and values quickly.
	f.Add([]byte(`{"workflow_run":{"id":1,"status":"queued","created_at":"2020-10-05T16:33:24Z"},"repository":{"full_name":"o/r"}}`))
	f.Add([]byte(`{"workflow_job":{"id":1,"run_id":2,"status":"queued","name":"a\u00e9"},"repository":{"full_name":"o/r"}}`))
	for _, c := range edgeCases(f) {
		// The nesting cases would slow every mutation for little gain.
		if len(c.body) < 16<<10 {
			f.Add(c.body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if d := diffOracle(body); d != "" {
			t.Errorf("body %q\n%s", body, d)
		}
	})
}

type edgeCase struct {
	name string
	body []byte
	// want edits the event of the unedited body into the expected one.
	want func(ev *pipeline.WorkflowJobEvent)
	// err is the whole expected message, when the body is rejected.
	err string
}

// edgeCases edits a published workflow_job payload in the ways that
// differ between JSON decoders. The edits are textual because what they
// test (escapes, duplicate keys, key case, number spellings, nesting) does
// not survive decoding and encoding again.
func edgeCases(t testing.TB) []edgeCase {
	base := readTestdata(t, "github/workflow_job/completed.success.with-organization.json")
	// at is the index in base of old, which must occur there.
	at := func(old string) int {
		i := bytes.Index(base, []byte(old))
		if i < 0 {
			t.Fatalf("%q not in the payload", old)
		}
		return i
	}
	// edit replaces the first occurrence of old, which belongs to the
	// workflow_job object for every old used here.
	edit := func(old, new string) []byte {
		i := at(old)
		return append(append(append([]byte{}, base[:i]...), new...), base[i+len(old):]...)
	}
	const name = `"name": "linters",`
	const runID = `"run_id": 2202229078,`
	const status = `"status": "completed",`
	const nodeID = `"node_id": "MDExOldvcmtmbG93UnVuMjg5NzgyNDUx",`
	const repo = `"repository": {`
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	return []edgeCase{
		{name: "unedited", body: base, want: func(*pipeline.WorkflowJobEvent) {}},

		// Strings.
		{name: "latin escape", body: edit(name, `"name": "lint\u00e9rs",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "lintérs" }},
		{name: "quote, backslash, slash and controls", body: edit(name, `"name": "a\"b\\c\/d\b\f\n\r\t",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "a\"b\\c/d\b\f\n\r\t" }},
		{name: "surrogate pair", body: edit(name, `"name": "\ud83d\ude80 deploy",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "🚀 deploy" }},
		{name: "lone high surrogate", body: edit(name, `"name": "\ud83dx",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "\uFFFDx" }},
		{name: "high surrogate before a non-surrogate escape", body: edit(name, `"name": "\ud83d\u0041",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "\uFFFDA" }},
		{name: "reversed surrogates", body: edit(name, `"name": "\ude80\ud83d",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "\uFFFD\uFFFD" }},
		{name: "raw UTF-8", body: edit(name, `"name": "déploiement 🚀",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "déploiement 🚀" }},
		{name: "invalid UTF-8", body: edit(name, "\"name\": \"a\xffb\xe2\x82\",\n"),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "a\uFFFDb\uFFFD\uFFFD" }},
		{name: "control character in a string", body: edit(name, "\"name\": \"a\x01\","),
			err: fmt.Sprintf("malformed JSON at byte %d: invalid character '\\x01' in string literal", at(name)+11)},
		{name: "bad escape", body: edit(name, `"name": "a\x",`),
			err: fmt.Sprintf(`malformed JSON at byte %d: invalid character 'x' in string escape code`, at(name)+12)},
		{name: "short unicode escape", body: edit(name, `"name": "\u12",`),
			err: fmt.Sprintf(`malformed JSON at byte %d: invalid character '"' in \u hexadecimal character escape`, at(name)+14)},
		{name: "escaped time", body: edit(`"started_at": "2021-08-05T10:34:58Z"`, `"started_at": "2021-08-05T10:34:58\u005a"`),
			err: `malformed JSON: parsing time "2021-08-05T10:34:58\\u005a" as "2006-01-02T15:04:05Z07:00": cannot parse "\\u005a" as "Z07:00"`},

		// Numbers.
		{name: "id beyond 2^53", body: edit(runID, `"run_id": 9007199254740993,`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.RunID = 9007199254740993 }},
		{name: "largest int64", body: edit(runID, `"run_id": 9223372036854775807,`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.RunID = 9223372036854775807 }},
		{name: "int64 overflow", body: edit(runID, `"run_id": 9223372036854775808,`),
			err: "field workflow_job.run_id: JSON number 9223372036854775808 where int64 was expected"},
		{name: "exponent", body: edit(runID, `"run_id": 1e3,`),
			err: "field workflow_job.run_id: JSON number 1e3 where int64 was expected"},
		{name: "fraction", body: edit(runID, `"run_id": 2202229078.0,`),
			err: "field workflow_job.run_id: JSON number 2202229078.0 where int64 was expected"},
		{name: "negative zero", body: edit(runID, `"run_id": -0,`), err: "missing workflow_job.run_id"},
		{name: "negative", body: edit(runID, `"run_id": -7,`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.RunID = -7 }},
		{name: "int field", body: edit(`"run_attempt": 1,`, `"run_attempt": 3,`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.RunAttempt = 3 }},
		{name: "quoted number", body: edit(runID, `"run_id": "2202229078",`),
			err: "field workflow_job.run_id: JSON string where int64 was expected"},
		{name: "leading zero", body: edit(runID, `"run_id": 01,`),
			err: fmt.Sprintf("malformed JSON at byte %d: invalid character '1' after object key:value pair", at(runID)+12)},
		{name: "dangling exponent in a skipped member", body: edit(`"runner_id": 5,`, `"runner_id": 5e+,`),
			err: fmt.Sprintf("malformed JSON at byte %d: invalid character ',' in exponent of numeric literal", at(`"runner_id": 5,`)+17)},

		// Null and type mismatches.
		{name: "null string", body: edit(name, `"name": null,`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Name = "" }},
		{name: "null id", body: edit(runID, `"run_id": null,`), err: "missing workflow_job.run_id"},
		{name: "null time", body: edit(`"started_at": "2021-08-05T10:34:58Z",`, `"started_at": null,`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.StartedAt = time.Time{} }},
		{name: "null repository", body: edit(repo, `"repository": null, "x": {`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Repository = "" }},
		{name: "null job", body: edit(repo, `"workflow_job": null, "repository": {`), err: "missing workflow_job object"},
		{name: "null job then a new one", body: edit(repo, `"workflow_job": null, "workflow_job": {"id": 1, "run_id": 2, "status": "queued"}, "repository": {`),
			want: func(ev *pipeline.WorkflowJobEvent) {
				*ev = pipeline.WorkflowJobEvent{Repository: ev.Repository, JobID: 1, RunID: 2, Status: "queued"}
			}},
		{name: "job as a string", body: edit(repo, `"workflow_job": "x", "repository": {`),
			err: "field workflow_job: JSON string where object was expected"},
		{name: "bool for a string", body: edit(name, `"name": true,`),
			err: "field workflow_job.name: JSON bool where string was expected"},
		{name: "array for a string", body: edit(name, `"name": ["linters"],`),
			err: "field workflow_job.name: JSON array where string was expected"},
		{name: "number for a time", body: edit(`"started_at": "2021-08-05T10:34:58Z"`, `"started_at": 5`),
			err: "malformed JSON: Time.UnmarshalJSON: input is not a JSON string"},
		{name: "first type error wins", body: edit(runID, `"run_id": "x", "run_attempt": "y",`),
			err: "field workflow_job.run_id: JSON string where int64 was expected"},
		{name: "time error wins over an earlier type error", body: edit(runID, `"run_id": "x", "started_at": {},`),
			err: "malformed JSON: Time.UnmarshalJSON: input is not a JSON string"},
		{name: "syntax error wins over an earlier time error", body: edit(`"runner_id": 5,`, `"started_at": 5, "runner_id": 5,,`),
			err: fmt.Sprintf("malformed JSON at byte %d: invalid character ',' looking for beginning of object key string", at(`"runner_id": 5,`)+33)},

		// Keys.
		{name: "duplicate key, last wins", body: edit(status, `"status": "queued", "status": "completed", "status": "in_progress",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Status = "in_progress" }},
		{name: "duplicate object merges", body: edit(repo, `"workflow_job": {"status": "queued"}, "repository": {`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Status = "queued" }},
		{name: "upper-case key", body: edit(runID, `"RUN_ID": 7,`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.RunID = 7 }},
		{name: "mixed-case object key", body: edit(`"workflow_job": {`, `"Workflow_Job": {`),
			want: func(*pipeline.WorkflowJobEvent) {}},
		{name: "long s folds to s", body: edit(status, `"ſtatuſ": "queued",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Status = "queued" }},
		{name: "Kelvin sign folds to k", body: edit(`"workflow_job": {`, `"worKflow_job": {`),
			want: func(*pipeline.WorkflowJobEvent) {}},
		{name: "escaped key", body: edit(status, `"st\u0061tus": "queued",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Status = "queued" }},
		{name: "escaped folding key", body: edit(status, `"\u017ftatus": "queued",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Status = "queued" }},
		{name: "near miss", body: edit(status, `"status_": "queued", "stätus": "queued", "stat": "queued", "status": "completed",`),
			want: func(*pipeline.WorkflowJobEvent) {}},
		{name: "exact key wins over folded duplicate before it", body: edit(status, `"STATUS": "queued", "status": "completed",`),
			want: func(*pipeline.WorkflowJobEvent) {}},
		{name: "folded duplicate after the exact key wins", body: edit(status, `"status": "completed", "Status": "queued",`),
			want: func(ev *pipeline.WorkflowJobEvent) { ev.Status = "queued" }},

		// Layout.
		{name: "compact", body: compact(t, base), want: func(*pipeline.WorkflowJobEvent) {}},
		{name: "tabs and CRLF", body: bytes.ReplaceAll(base, []byte("\n  "), []byte("\r\n\t")), want: func(*pipeline.WorkflowJobEvent) {}},
		{name: "trailing whitespace", body: append(bytes.Clone(base), " \t\r\n"...), want: func(*pipeline.WorkflowJobEvent) {}},
		{name: "trailing garbage", body: append(bytes.Clone(base), " x"...),
			err: fmt.Sprintf("malformed JSON at byte %d: invalid character 'x' after top-level value", len(base)+2)},
		{name: "second object", body: append(bytes.Clone(base), "{}"...),
			err: fmt.Sprintf("malformed JSON at byte %d: invalid character '{' after top-level value", len(base)+1)},
		{name: "truncated", body: base[:len(base)/2], err: fmt.Sprintf("malformed JSON at byte %d: unexpected end of JSON input", len(base)/2)},
		{name: "truncated in an escape", body: edit(name, `"name": "a\`)[:at(name)+11],
			err: fmt.Sprintf(`malformed JSON at byte %d: invalid character ' ' in string escape code`, at(name)+11)},
		{name: "truncated in a literal", body: edit(`"runner_id": 5,`, `"runner_id": tr`)[:at(`"runner_id": 5,`)+15],
			err: fmt.Sprintf(`malformed JSON at byte %d: invalid character ' ' in literal true (expecting 'u')`, at(`"runner_id": 5,`)+15)},
		{name: "not an object", body: []byte(" [] "), err: "body is not a JSON object"},
		{name: "empty", body: nil, err: "body is not a JSON object"},

		// Depth: the payload and the job object are two levels, so 9998
		// arrays reach encoding/json's limit of 10000 and 9999 pass it.
		{name: "nesting at the limit", body: edit(nodeID, `"node_id": `+deep(9998)+`,`), want: func(*pipeline.WorkflowJobEvent) {}},
		{name: "nesting past the limit", body: edit(nodeID, `"node_id": `+deep(9999)+`,`),
			err: fmt.Sprintf("malformed JSON at byte %d: invalid character '[' exceeded max depth", at(nodeID)+11+9999)},
		{name: "depth bomb", body: edit(nodeID, `"node_id": `+strings.Repeat(`{"a":`, 20000)),
			err: fmt.Sprintf("malformed JSON at byte %d: invalid character '{' exceeded max depth", at(nodeID)+11+9998*5+1)},
	}
}

func compact(t testing.TB, body []byte) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, body); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestDecodeWorkflowJobEdgeCases checks each edge case against its
// expectation and against the oracle.
func TestDecodeWorkflowJobEdgeCases(t *testing.T) {
	cases := edgeCases(t)
	base, err := parseWorkflowJob(cases[0].body)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			events, err := parseWorkflowJob(c.body)
			switch {
			case c.err != "":
				if err == nil || err.Error() != c.err {
					t.Errorf("error = %v\n     want %s", err, c.err)
				}
			case err != nil:
				t.Errorf("error = %v", err)
			default:
				want := base[0].(pipeline.WorkflowJobEvent)
				c.want(&want)
				if !reflect.DeepEqual(events, []pipeline.Event{want}) {
					t.Errorf("events:\n got %+v\nwant %+v", events, want)
				}
			}
			if d := diffOracle(c.body); d != "" {
				t.Error(d)
			}
		})
	}
}
