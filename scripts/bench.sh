#!/usr/bin/env bash
# make bench: Go benchmarks of the tracker, store, webhook path, API and
# collector, then the measurements of ./bench against the real binary:
# ingest side by side with cpanato/github_actions_exporter and the null
# receiver, the cost of /api/events streams, API, scrape, memory and
# retention, the scrape at 10, 100 and 1,000 discovered pipelines (and what
# it costs a real Prometheus, when one is on PATH), and the GitHub API cost of
# polling 500 unchanged repositories. Prints one table (markdown).
# BENCH_ARGS passes flags to ./bench, e.g. BENCH_ARGS=--parts=scale,poll.
# PEER_BINARY is the peer's binary, built outside this repository, e.g.
#   git clone https://github.com/cpanato/github_actions_exporter /tmp/peer-src
#   (cd /tmp/peer-src && go build -o /tmp/peer/github_actions_exporter .)
# unset, the peer's columns read "not measured".
# BENCH_WORK keeps seeded histories between runs (default: a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
work=${BENCH_WORK:-$(mktemp -d)}
mkdir -p "$work"
trap 'rm -rf "$bin"' EXIT

echo "machine: $(nproc) cores, $(go version | cut -d' ' -f3-), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "peer: ${PEER_BINARY:-not measured (PEER_BINARY unset)}" >&2
for cmd in pipeline_exporter webhook-load null-receiver; do
  CGO_ENABLED=0 go build -o "$bin/$cmd" "./cmd/$cmd"
done

gobench=$(go test -run '^$' -bench . -benchmem -benchtime="${BENCHTIME:-1s}" \
  ./pipeline ./store ./webhook ./collector ./api ./poller ./web 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' || true)
echo "$gobench" >&2

go run ./bench --bin="$bin" --work="$work" --peer="${PEER_BINARY:-}" ${BENCH_ARGS:-}
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

echo
echo "| Go benchmark | ns/op | B/op | allocs/op | extra |"
echo "|---|---|---|---|---|"
echo "$gobench" | awk '/^Benchmark/ {
  extra=""; ns=""; b=""; a="";
  for (i=3; i<=NF; i+=2) {
    if ($(i+1)=="ns/op") ns=$i; else if ($(i+1)=="B/op") b=$i; else if ($(i+1)=="allocs/op") a=$i; else extra=extra $i " " $(i+1) " ";
  }
  printf "| %s | %s | %s | %s | %s |\n", $1, ns, b, a, extra }'
