package collector

import (
	"testing"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// TestLiveBuild: the live-build gauges follow the pipeline's last success
// when it verified a build, and a run verified live observes its lead
// time from its commit's time.
func TestLiveBuild(t *testing.T) {
	verify := stage(pipeline.StageVerify, pipeline.StatusSuccess, t0.Add(9*time.Minute), t0.Add(10*time.Minute))
	run := finishedRun(2, "site", pipeline.StatusSuccess, pipeline.SourceGitHub, t0, verify)
	commitAt, verifiedAt, checkedAt := t0.Add(-20*time.Minute), t0.Add(10*time.Minute), t0.Add(25*time.Minute)
	run.GitHub = &pipeline.GitHubRun{RunID: 9, RunAttempt: 1, HeadSHA: "5d6e7f8a9b0c1d2e3f405162738495a6b7c8d9e0", HeadCommitAt: &commitAt}
	run.Verify = &pipeline.VerifyCheck{URL: "https://example.com/", Build: run.GitHub.HeadSHA, VerifiedAt: &verifiedAt, CheckedAt: checkedAt}
	unverified := finishedRun(3, "newsletter", pipeline.StatusSuccess, pipeline.SourceGitHub, t0, verify)

	cfg := &fakeConfig{}
	cfg.set(siteSpec, newsletterSpec)
	hist := &fakeHistory{}
	c := newCollector(t, cfg, hist, fakeStats{})
	before := samples(t, c)
	if n := count(before, "pipeline_live_") + count(before, "pipeline_lead_time"); n != 0 {
		t.Fatalf("%d live series before any build was verified", n)
	}

	c.Observe(pipeline.Update{Run: run, Finished: true})
	c.Observe(pipeline.Update{Run: unverified, Finished: true})
	hist.set(pipeline.PipelineSummary{Pipeline: "site", LastFinished: run, LastSuccess: run},
		pipeline.PipelineSummary{Pipeline: "newsletter", LastFinished: unverified, LastSuccess: unverified})
	got := samples(t, c)
	check(t, "fresh", got, map[string]float64{
		`pipeline_live_stale{pipeline="site"}`:                         0,
		`pipeline_live_last_check_timestamp_seconds{pipeline="site"}`:  float64(checkedAt.Unix()),
		`pipeline_live_build_timestamp_seconds{pipeline="site"}`:       float64(verifiedAt.Unix()),
		`pipeline_lead_time_seconds{pipeline="site"}`:                  1,
		`pipeline_live_stale{pipeline="newsletter"}`:                   -1,
		`pipeline_lead_time_seconds{pipeline="newsletter"}`:            -1,
		`pipeline_live_last_check_timestamp_seconds{pipeline="other"}`: -1,
	})
	mfs, err := registry(t, c).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pipeline_lead_time_seconds" {
			if h := mf.GetMetric()[0].GetHistogram(); h.GetSampleSum() != 1800 || len(h.GetBucket()) != len(leadBuckets) || h.GetSchema() == 0 && len(h.GetPositiveSpan()) == 0 {
				t.Errorf("lead time: sum %g, %d classic buckets, native spans %v; want 1800s (commit 20m before the trigger, live 10m after)", h.GetSampleSum(), len(h.GetBucket()), h.GetPositiveSpan())
			}
		}
	}

	stale := run.Clone()
	stale.Verify.Stale, stale.Verify.FailedRechecks = true, 2
	hist.set(pipeline.PipelineSummary{Pipeline: "site", LastFinished: stale, LastSuccess: stale})
	check(t, "stale", samples(t, c), map[string]float64{`pipeline_live_stale{pipeline="site"}`: 1})

	// A commit dated in the future or years ago is no lead time.
	for _, at := range []time.Time{verifiedAt.Add(time.Minute), verifiedAt.AddDate(-2, 0, 0)} {
		odd := run.Clone()
		odd.GitHub.HeadCommitAt = &at
		c.Observe(pipeline.Update{Run: odd, Finished: true})
	}
	check(t, "odd commit times", samples(t, c), map[string]float64{`pipeline_lead_time_seconds{pipeline="site"}`: 1})
}
