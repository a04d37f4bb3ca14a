package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// Summaries groups the fake history's runs the way the store does: each
// pipeline's latest finished and latest successful run.
func (f *fakeRuns) Summaries(ctx context.Context) ([]pipeline.PipelineSummary, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	if f.err != nil {
		return nil, f.err
	}
	byName := map[string]*pipeline.PipelineSummary{}
	var out []pipeline.PipelineSummary
	for _, r := range f.runs {
		s := byName[r.Pipeline]
		if s == nil {
			out = append(out, pipeline.PipelineSummary{Pipeline: r.Pipeline})
			s = &out[len(out)-1]
			byName[r.Pipeline] = s
		}
		if r.Status.Terminal() {
			s.LastFinished = r
		}
		if r.Status == pipeline.StatusSuccess {
			s.LastSuccess = r
		}
	}
	return out, nil
}

func TestPipelines(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	later := at.Add(time.Hour)
	live := &pipeline.Run{ID: 41, Pipeline: "site", Status: pipeline.StatusSuccess, FinishedAt: &at,
		GitHub: &pipeline.GitHubRun{Repository: "acme/site", HeadSHA: "1a2b3c4d"},
		Verify: &pipeline.VerifyCheck{Build: "1a2b3c4d", VerifiedAt: &at, CheckedAt: later, Stale: true, Served: "0f0f0f0", ServedRunID: 40}}
	failed := &pipeline.Run{ID: 42, Pipeline: "site", Status: pipeline.StatusFailed, FinishedAt: &later}
	unverified := &pipeline.Run{ID: 7, Pipeline: "docs", Status: pipeline.StatusSuccess, FinishedAt: &at,
		GitHub: &pipeline.GitHubRun{Repository: "acme/docs"}, Verify: &pipeline.VerifyCheck{URL: "https://docs.example.com/", VerifiedAt: &at}}
	gone := &pipeline.Run{ID: 3, Pipeline: "old", Status: pipeline.StatusCancelled, FinishedAt: &at}
	specs := []pipeline.Spec{{Name: "site", Repository: "acme/site"}, {Name: "shop"}, {Name: "docs"}, {Name: "{{ .Repo }}", Repository: "acme/*", Discover: true}}
	sums := []pipeline.PipelineSummary{
		{Pipeline: "docs", LastFinished: unverified, LastSuccess: unverified},
		{Pipeline: "old", LastFinished: gone},
		{Pipeline: "blog", InProgress: 1},
		{Pipeline: "site", InProgress: 1, LastFinished: failed, LastSuccess: live},
	}

	got := Pipelines(specs, sums)

	want := []Pipeline{
		{Name: "site", Repository: "acme/site",
			LastRun:     &LastRun{ID: 42, Status: pipeline.StatusFailed, FinishedAt: &later},
			LastSuccess: &LastSuccess{ID: 41, FinishedAt: &at},
			Live:        &Live{RunID: 41, Commit: "1a2b3c4d", VerifiedAt: at, CheckedAt: later, Stale: true, Served: "0f0f0f0", ServedRunID: 40}},
		{Name: "shop"},
		{Name: "docs", Repository: "acme/docs",
			LastRun:     &LastRun{ID: 7, Status: pipeline.StatusSuccess, FinishedAt: &at},
			LastSuccess: &LastSuccess{ID: 7, FinishedAt: &at}},
		// A pipeline discovered from the pattern, with a run in progress.
		{Name: "blog"},
		{Name: "old", LastRun: &LastRun{ID: 3, Status: pipeline.StatusCancelled, FinishedAt: &at}},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("Pipelines:\n got %s\nwant %s", g, w)
	}
	data, _ := json.Marshal(got[1])
	if string(data) != `{"name":"shop","last_run":null,"last_success":null,"live":null}` {
		t.Errorf("a pipeline that never ran: %s", data)
	}
}

func TestListPipelines(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	runs := &fakeRuns{runs: []*pipeline.Run{{ID: 1, Pipeline: "site", Status: pipeline.StatusSuccess, FinishedAt: &at}}}
	h := newHandlerWith(runs, Options{Specs: func() []pipeline.Spec { return []pipeline.Spec{{Name: "site"}} }})
	code, body := get(t, h, "/api/pipelines")
	want := `{"status":"success","data":{"pipelines":[{"name":"site","last_run":{"id":1,"status":"success","finished_at":"2026-12-07T10:00:00Z"},"last_success":{"id":1,"finished_at":"2026-12-07T10:00:00Z"},"live":null}]}}`
	if code != http.StatusOK || body != want {
		t.Errorf("GET /api/pipelines = %d %s\nwant 200 %s", code, body, want)
	}
	runs.err = errors.New("database is locked")
	if code, body := get(t, h, "/api/pipelines"); code != http.StatusServiceUnavailable || body != `{"status":"error","errorType":"unavailable","error":"run history unavailable"}` {
		t.Errorf("a failing history: %d %s", code, body)
	}
}
