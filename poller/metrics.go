package poller

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the pollers' self-metrics. Both pollers (and the pollers built
// again on every config reload) register on the same registry, so
// registration is idempotent: a collector that is already registered is
// reused, which keeps counters counting across reloads.
type metrics struct {
	requests    *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	// rateRemaining and rateReset have no labels but are vectors so that
	// they stay absent until GitHub has answered once: no alert fires on a
	// zero that was never read.
	rateRemaining *prometheus.GaugeVec
	rateReset     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_exporter_poll_requests_total",
			Help: "Total number of API requests made by the pollers, by source, endpoint and HTTP status code (error when no answer came).",
		}, []string{"source", "endpoint", "code"})),
		lastSuccess: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipeline_exporter_poll_last_success_timestamp_seconds",
			Help: "Unix time of the last poll in which every request of a source succeeded.",
		}, []string{"source"})),
		rateRemaining: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipeline_exporter_github_rate_limit_remaining",
			Help: "GitHub API requests remaining in the current rate-limit window, as last reported by GitHub.",
		}, nil)),
		rateReset: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipeline_exporter_github_rate_limit_reset_timestamp_seconds",
			Help: "Unix time at which the current GitHub rate-limit window resets, as last reported by GitHub.",
		}, nil)),
	}
}

// register registers c, or returns the equal collector registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
