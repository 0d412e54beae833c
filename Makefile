# yunzhang — the two commands are `make demo` and `make test`; the rest are their parts.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
KUBECONFIG_LOCAL := $(CURDIR)/.dev/kubeconfig

include hack/toolchain.mk

.PHONY: demo test build crds crds-check lint unit unit-other-days integration integration-suite install clean bench plugin

## demo: start a local control plane, install, run the operator and walk the examples through.
demo: toolchain build
	hack/demo

## test: the whole suite: format, lints, CRD drift, unit tests (today and other days), and the
## integration tests twice on a control plane of the suite's own (hack/integration-suite).
test: toolchain lint build unit unit-other-days integration-suite

build:
	$(CARGO) build -p yunzhang --bins

## crds: regenerate crds/ and the chart's copy from the Rust types.
crds: build
	target/debug/yunzhang crd --out-dir crds --out-dir charts/yunzhang/crds

crds-check: build
	target/debug/yunzhang crd --out-dir crds --out-dir charts/yunzhang/crds --check

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test -p yunzhang --no-fail-fast

## unit-other-days: the unit tests with the system clock set to each of YZ_OTHER_DAYS (libfaketime).
unit-other-days:
	CARGO=$(CARGO) hack/unit-other-days

## integration-suite: fresh own control plane, the integration tests twice, settlement on other days.
integration-suite: toolchain build
	CARGO=$(CARGO) hack/integration-suite

## integration: the integration tests once, on the suite's control plane (started or reused).
integration: toolchain build
	set -a; source hack/test-cluster.env; set +a; $(CARGO) test -p yunzhang-integration --no-fail-fast

## install: apply the CRDs and the chart's cluster-level objects to $KUBECONFIG (default: the local cluster).
install: cluster
	KUBECONFIG="$${KUBECONFIG:-$(KUBECONFIG_LOCAL)}" hack/install

clean: cluster-down
	$(CARGO) clean

## bench: run the benchmarks against their baselines and rewrite docs/benchmarks.md.
bench:
	hack/bench

## plugin: build and install `kubectl yunzhang` (symlink in ~/.local/bin, which must be on PATH).
plugin: build
	mkdir -p $(HOME)/.local/bin
	ln -sf $(CURDIR)/target/debug/yunzhang $(HOME)/.local/bin/kubectl-yunzhang
	@echo "installed: kubectl yunzhang --help"
