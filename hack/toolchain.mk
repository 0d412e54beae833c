# Local Go toolchain and throwaway control plane; see docs/toolchain.md.
# Included from the top-level Makefile:  include hack/toolchain.mk

YZ_HACK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

.PHONY: toolchain cluster cluster-down

## toolchain: build/verify the pinned etcd, kube-apiserver, kube-controller-manager, tofu, helm
toolchain:
	$(YZ_HACK_DIR)/tool all

## cluster: start (or reuse) the local control plane; prints the admin kubeconfig path
cluster:
	$(YZ_HACK_DIR)/cluster-up

## cluster-down: stop the local control plane and delete its state (.dev)
cluster-down:
	$(YZ_HACK_DIR)/cluster-down
