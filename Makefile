# yunzhang — the two commands are `make demo` and `make test`; the rest are their parts.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
KUBECONFIG_LOCAL := $(CURDIR)/.dev/kubeconfig

include hack/toolchain.mk

.PHONY: demo test build crds crds-check lint unit integration install clean bench plugin

## demo: start a local control plane, install, run the operator and walk the examples through.
demo: toolchain build
	hack/demo

## test: the whole suite: format, lints, CRD drift, unit tests, integration tests on a real control plane.
test: toolchain lint build
	$(CARGO) test --workspace --no-fail-fast

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
	$(CARGO) test -p yunzhang

integration: toolchain build
	$(CARGO) test -p yunzhang-integration --no-fail-fast

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
