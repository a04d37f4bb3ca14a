# pipeline_exporter — the familiar Prometheus exporter targets.

GO        ?= go
BINARY    := pipeline_exporter
PKG       := github.com/pipeline-exporter/pipeline_exporter
VERSION   ?= $(shell cat VERSION 2>/dev/null || echo 0.0.0)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w \
	-X github.com/prometheus/common/version.Version=$(VERSION) \
	-X github.com/prometheus/common/version.Revision=$(REVISION) \
	-X github.com/prometheus/common/version.Branch=$(BRANCH) \
	-X github.com/prometheus/common/version.BuildUser=$(shell whoami)@$(shell hostname) \
	-X github.com/prometheus/common/version.BuildDate=$(shell date -u +%Y%m%d-%H:%M:%S)
GOBIN         := $(shell $(GO) env GOPATH)/bin
STATICCHECK   ?= $(GOBIN)/staticcheck
GOLANGCI_LINT ?= $(GOBIN)/golangci-lint

# Tool binaries built from the Go module proxy at pinned versions, once per
# machine, outside the checkout (make tools).
TOOLS_DIR          ?= $(HOME)/.cache/pipeline_exporter/tools
HELM_VERSION       := v3.22.0
GORELEASER_VERSION := v2.14.0
HELM               ?= $(TOOLS_DIR)/helm-$(HELM_VERSION)/helm
GORELEASER         ?= $(TOOLS_DIR)/goreleaser-$(GORELEASER_VERSION)/goreleaser
# Jaeger all-in-one for the tracing test, pinned in tools/jaeger/go.mod; the
# test looks for it here (e2e/tracing_test.go).
JAEGER             ?= $(HOME)/.cache/pipeline_exporter/jaeger/jaeger-v1.76.0
# What helm's own Makefile sets: its version, and the Kubernetes version of
# its client-go (v0.37 = 1.37) for capabilities and deprecation checks.
HELM_LDFLAGS := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37 \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37

.PHONY: all build run demo test test-unit test-e2e test-tools tools bench fuzz style vet lint checkmetrics checkrules k8s-rules helm-lint release-check

all: style vet lint build test

## build: the static binary (CGO_ENABLED=0, pure-Go SQLite).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BINARY) ./cmd/pipeline_exporter

## run: build and start on the example config, history under ./data.
run: build
	./$(BINARY) --config.file=examples/pipeline_exporter.yml --storage.path=data

## demo: sign and post the published example webhooks to a running exporter, serving the demo site (localhost:8081) the example config verifies.
demo:
	$(GO) run ./cmd/webhook-demo --url=http://localhost:8080 --secret=demo-github-secret-change-me

## test: everything CI proves: formatting, vet, unit, fuzz seeds, rules, end to end on real Prometheus/Alertmanager.
test: style vet
	$(GO) test -count=1 ./...

test-unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

test-e2e:
	$(GO) test -count=1 -v ./e2e/...

## fuzz: every fuzz target for FUZZTIME each (go test runs their seed corpora in `make test`).
FUZZTIME ?= 10s
fuzz:
	@set -e; for pkg in ./webhook ./config; do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: Go benchmarks and the webhook load test, printed as one table.
bench:
	./scripts/bench.sh

style:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## lint: staticcheck, and golangci-lint with the depguard rules of the import direction.
lint:
	@test -x "$(STATICCHECK)" || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	@test -x "$(GOLANGCI_LINT)" || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
	$(STATICCHECK) ./...
	$(GOLANGCI_LINT) run ./...

checkmetrics:
	promtool check metrics < collector/testdata/golden.prom

checkrules:
	promtool check rules alerting-rules/*.yml
	promtool test rules alerting-rules/tests/*.yml

## tools: build helm, goreleaser and Jaeger once per machine (skipped when already there).
tools: $(HELM) $(GORELEASER) $(JAEGER)

$(JAEGER):
	cd tools/jaeger && CGO_ENABLED=0 $(GO) build -trimpath -o $@ github.com/jaegertracing/jaeger/cmd/jaeger

$(HELM):
	GOBIN=$(dir $@) CGO_ENABLED=0 $(GO) install -trimpath -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(GORELEASER):
	GOBIN=$(dir $@) $(GO) install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)

## test-tools: the Helm chart and release config checks (module tools/, which
## holds the Kubernetes and prometheus-operator types the exporter does not need).
test-tools: tools
	cd tools && HELM=$(HELM) GORELEASER=$(GORELEASER) $(GO) test -count=1 ./...

## helm-lint: what the chart test runs first.
helm-lint: $(HELM)
	$(HELM) lint --strict deploy/helm/pipeline-exporter

## release-check: validate .goreleaser.yaml with GoReleaser itself.
release-check: $(GORELEASER)
	$(GORELEASER) check

## k8s-rules: regenerate the Kubernetes PrometheusRule and ConfigMap, and the chart's rules, from alerting-rules/ and deploy/, and write VERSION into the chart, compose and the Deployments.
k8s-rules:
	$(GO) run ./deploy/kubernetes/gen
