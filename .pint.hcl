// pint (github.com/cloudflare/pint) configuration for the rules in
// alerting-rules/. Run from the repository root:
//
//   PINT_PROMETHEUS_URL=http://127.0.0.1:9090 pint lint alerting-rules/
//   PINT_PROMETHEUS_URL=http://127.0.0.1:9090 pint ci
//
// PINT_PROMETHEUS_URL is the Prometheus that scrapes pipeline_exporter and
// evaluates these rules (the compose stack's listens on 127.0.0.1:9090); the
// online checks (promql/series, promql/range_query...) ask it whether the
// series the rules use exist. e2e/pint_test.go runs this file against a real
// Prometheus scraping a webhook-only exporter.

parser {
  // Only the rule files: alerting-rules/ also holds promtool tests and Go.
  include = ["alerting-rules/[^/]+[.]rules[.]yml"]
}

ci {
  baseBranch = "main"
}

prometheus "pipeline_exporter" {
  uri     = "${ENV_PINT_PROMETHEUS_URL}"
  timeout = "30s"
  include = ["alerting-rules/.*"]
}

// A webhook-only setup (no `github:` section in the exporter's config, the
// example config's default) never polls GitHub: the poll and rate-limit
// series do not exist there, and these two alerts, which read nothing else,
// rightly stay silent. Every other check still runs on them, and every other
// rule is still checked for missing series.
rule {
  match {
    name = "PipelineGitHubPollFailing|PipelineGitHubRateLimitLow"
  }
  disable = ["promql/series"]
}

