#!/usr/bin/env bash
# make bench: Go benchmarks of the tracker, store, webhook path, API and
# collector, then the load, API, scrape, memory and retention measurements
# of ./bench against the real binary. Prints one table (markdown).
# BENCH_WORK keeps seeded histories between runs (default: a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
work=${BENCH_WORK:-$(mktemp -d)}
mkdir -p "$work"
trap 'rm -rf "$bin"' EXIT

echo "machine: $(nproc) cores, $(go version | cut -d' ' -f3-)" >&2
for cmd in pipeline_exporter webhook-load null-receiver; do
  CGO_ENABLED=0 go build -o "$bin/$cmd" "./cmd/$cmd"
done

gobench=$(go test -run '^$' -bench . -benchmem -benchtime="${BENCHTIME:-1s}" \
  ./pipeline ./store ./webhook ./collector ./api ./poller 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' || true)
echo "$gobench" >&2

go run ./bench --bin="$bin" --work="$work" ${BENCH_ARGS:-}

echo
echo "| Go benchmark | ns/op | B/op | allocs/op | extra |"
echo "|---|---|---|---|---|"
echo "$gobench" | awk '/^Benchmark/ {
  extra=""; ns=""; b=""; a="";
  for (i=3; i<=NF; i+=2) {
    if ($(i+1)=="ns/op") ns=$i; else if ($(i+1)=="B/op") b=$i; else if ($(i+1)=="allocs/op") a=$i; else extra=extra $i " " $(i+1) " ";
  }
  printf "| %s | %s | %s | %s | %s |\n", $1, ns, b, a, extra }'
