package pipeline

import "testing"

// TestRecovered follows the recovered mark of deliveries read back from
// GitHub into the run: on the trigger a recovered delivery made, and on
// the run's github object once any of its workflow_run or workflow_job
// deliveries was recovered, never taken back by a later received one.
func TestRecovered(t *testing.T) {
	recoveredRun := func(name string) func(t testing.TB) Event {
		return func(t testing.TB) Event { e := runEvent(t, name); e.Recovered = true; return e }
	}
	receivedRun := func(name string) func(t testing.TB) Event {
		return func(t testing.TB) Event { return runEvent(t, name) }
	}
	recoveredJob := func(name string) func(t testing.TB) Event {
		return func(t testing.TB) Event { e := jobEvent(t, name); e.Recovered = true; return e }
	}
	receivedJob := func(name string) func(t testing.TB) Event {
		return func(t testing.TB) Event { return jobEvent(t, name) }
	}
	tests := []struct {
		name                    string
		events                  []func(t testing.TB) Event
		trigger, githubRecovery bool
	}{
		{"all received", []func(t testing.TB) Event{receivedRun("requested"), receivedJob("in_progress"), receivedRun("completed")}, false, false},
		{"opening delivery recovered", []func(t testing.TB) Event{recoveredRun("requested"), receivedJob("in_progress"), receivedRun("completed")}, true, true},
		{"a later run delivery recovered", []func(t testing.TB) Event{receivedRun("requested"), recoveredRun("completed")}, false, true},
		{"a job delivery recovered", []func(t testing.TB) Event{receivedRun("requested"), recoveredJob("in_progress"), receivedRun("completed")}, false, true},
		{"a recovered job held for its run", []func(t testing.TB) Event{recoveredJob("in_progress"), receivedRun("requested")}, false, true},
		{"a recovered job that changes nothing", []func(t testing.TB) Event{receivedRun("requested"), receivedJob("completed.success.with-organization"), recoveredJob("in_progress")}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTracker(&fakeClock{t: fixtureCreated}, siteSpec())
			var r *Run
			for _, ev := range tc.events {
				for _, u := range apply(t, tr, ev(t)) {
					if r != nil && u.Run.ID != r.ID {
						t.Fatalf("runs %d and %d, want one", r.ID, u.Run.ID)
					}
					r = u.Run
				}
			}
			if r == nil {
				t.Fatal("no run")
			}
			if r.Trigger.Recovered != tc.trigger || r.Triggers[0].Recovered != tc.trigger {
				t.Errorf("trigger recovered %v (triggers[0] %v), want %v", r.Trigger.Recovered, r.Triggers[0].Recovered, tc.trigger)
			}
			if r.GitHub == nil || r.GitHub.Recovered != tc.githubRecovery {
				t.Errorf("github %+v, want recovered %v", r.GitHub, tc.githubRecovery)
			}
		})
	}
}
