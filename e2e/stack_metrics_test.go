package e2e

import (
	"slices"
	"testing"
)

func TestStackMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`pipeline_last_run_status{status=~"failed|timed_out"} == 1`, []string{"pipeline_last_run_status"}},
		{`up{job="pipeline_exporter"} == 0 or absent(up{job="pipeline_exporter"})`, []string{"up"}},
		{
			`histogram_quantile(0.95, sum by (pipeline, le) (rate(pipeline_run_duration_seconds_bucket{pipeline=~"$pipeline"}[1d])))`,
			[]string{"pipeline_run_duration_seconds_bucket"},
		},
		{
			`pipeline_runs_in_progress > 0 unless on (job, instance, pipeline) time() - pipeline_last_run_timestamp_seconds < 3600`,
			[]string{"pipeline_runs_in_progress", "pipeline_last_run_timestamp_seconds"},
		},
		{
			`count_over_time((time() - max by (pipeline) (pipeline_last_success_timestamp_seconds) < 86400)[30d:1d])`,
			[]string{"pipeline_last_success_timestamp_seconds"},
		},
		{`pipeline:deployments:rate7d{pipeline=~"$pipeline"} * 86400`, []string{"pipeline:deployments:rate7d"}},
		{`sum_over_time(pipeline:last_run_failed:max[30d]) * 60 / (resets(pipeline:last_run_failed:max[30d]) > 0)`, []string{"pipeline:last_run_failed:max"}},
		{`rate(process_cpu_seconds_total{job="a"}[$__rate_interval]) offset 5m and bool go_goroutines`, []string{"process_cpu_seconds_total", "go_goroutines"}},
		{`label_replace(x, "dst", "$1", "src", "(.*)")`, []string{"x"}},
	}
	for _, tt := range tests {
		if got := stackMetricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("stackMetricNames(%s) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}
