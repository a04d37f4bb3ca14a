package main

import (
	"encoding/json"
	"testing"
)

// TestPlan checks that each mix sends, for one run, the published payloads
// with that run's id and distinct job ids, in the order GitHub sends them.
func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		ids  string
		jobs int      // distinct jobs per run
		want []string // "event action job-name" per delivery
	}{
		{"distinct", 1, []string{"workflow_run requested ", "workflow_job completed linters", "workflow_run completed "}},
		{"cycle", 3, []string{
			"workflow_run requested ", "workflow_run in_progress ",
			"workflow_job queued build", "workflow_job in_progress build", "workflow_job completed build",
			"workflow_job queued test", "workflow_job in_progress test", "workflow_job completed test",
			"workflow_job queued deploy", "workflow_job in_progress deploy", "workflow_job completed deploy",
			"workflow_run completed ",
		}},
	} {
		t.Run(tc.ids, func(t *testing.T) {
			steps, err := plan(tc.ids)
			if err != nil {
				t.Fatal(err)
			}
			if len(steps) != len(tc.want) {
				t.Fatalf("%d steps, want %d", len(steps), len(tc.want))
			}
			const first = 1000
			jobRun := map[int64]int64{}
			// Two runs, so that ids are checked across runs too.
			for i := 0; i < 2*len(steps); i++ {
				event, body := build(steps, first, i)
				var p struct {
					Action string `json:"action"`
					Run    *struct {
						ID int64 `json:"id"`
					} `json:"workflow_run"`
					Job *struct {
						ID    int64  `json:"id"`
						RunID int64  `json:"run_id"`
						Name  string `json:"name"`
					} `json:"workflow_job"`
				}
				if err := json.Unmarshal(body, &p); err != nil {
					t.Fatalf("delivery %d: %v", i, err)
				}
				run := int64(first + i/len(steps))
				got := event + " " + p.Action + " "
				switch {
				case p.Run != nil:
					if p.Run.ID != run {
						t.Errorf("delivery %d: run id %d, want %d", i, p.Run.ID, run)
					}
				case p.Job != nil:
					got += p.Job.Name
					if p.Job.RunID != run {
						t.Errorf("delivery %d: job's run id %d, want %d", i, p.Job.RunID, run)
					}
					if r, seen := jobRun[p.Job.ID]; seen && r != run {
						t.Errorf("delivery %d: job id %d used by runs %d and %d", i, p.Job.ID, r, run)
					}
					jobRun[p.Job.ID] = run
				}
				if want := tc.want[i%len(steps)]; got != want {
					t.Errorf("delivery %d = %q, want %q", i, got, want)
				}
			}
			if len(jobRun) != 2*tc.jobs {
				t.Errorf("%d job ids over two runs, want %d", len(jobRun), 2*tc.jobs)
			}
		})
	}
	if _, err := plan("random"); err == nil {
		t.Error(`plan("random") succeeded`)
	}
}
