# Two commands set everything up on a fresh machine: `make dev` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLI := $(BIN)/inference-operator

.PHONY: .venv dev test soak lint controlplane binaries bench clean generate

# Only builds the virtualenv: the product with its test extras and, beside it, the
# development kit (devkit/: control plane, node, images, dev stack, generators), which adds
# the dev, cluster, controlplane and generate subcommands. Reinstalls when either
# pyproject.toml changes.
.venv: $(STAMP)

$(STAMP): pyproject.toml devkit/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e ./devkit
	@touch $@

# kube-apiserver, etcd, kubectl and helm, built once per pinned version into the user cache
# (or taken from KUBEBUILDER_ASSETS).
binaries: $(STAMP)
	$(CLI) controlplane --build-only

# The whole suite, the end-to-end tests on a local node included (they skip, saying why,
# where no node can run). Flux, Argo CD and Jaeger, which only some tests need, are built
# by the session in the background while the tests that need none run (tests/conftest.py,
# controlplane/prebuild.py); `make flux argocd jaeger` builds them ahead instead.
test: binaries node prometheus-packages argocd-packages
	$(BIN)/ruff check --no-cache operator devkit tests bench
	INFERENCE_OPERATOR_E2E=1 $(BIN)/pytest $(PYTEST_ARGS)

# What a local node needs. Debian's packages, installed with apt-get when missing (as root);
# elsewhere it says what to install and the end-to-end tests skip. Then the node binaries
# (kubelet, kube-proxy, kube-scheduler, CoreDNS) and the images, built once into the cache.
NODE_PACKAGES := containerd runc containernetworking-plugins iptables iproute2 buildah mmdebstrap
node-packages:
	@missing=""; for package in $(NODE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$package"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing; \
	else \
	  echo "a local node needs (as root, on Debian/Ubuntu): apt-get install$$missing;" \
	       "the end-to-end tests skip without it"; \
	fi

node: binaries node-packages
	$(CLI) cluster --build-only

# Flux's source-controller and kustomize-controller, for the GitOps tests (tests/gitops/):
# built once from the pinned Go modules in devkit/envtest/flux into the user cache, with
# the CRDs they serve copied beside them (controlplane/flux.py).
flux: binaries
	$(BIN)/python -m inference_devkit.controlplane.flux

# Debian's package $(1) (with the command $(2)), installed with apt-get when missing (as
# root), for $(3); elsewhere it says what to install and those tests skip. The package would
# start (and enable) its daemon: a policy-rc.d that refuses every start holds it off during
# the install (one already there, as in container images, is left alone), and the unit
# (named $(4)) is disabled again under systemd.
define apt-install-quiet
@if command -v $(2) >/dev/null; then exit 0; fi; \
if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
  echo "installing $(1) (apt-get, for $(3))"; \
  policy=/usr/sbin/policy-rc.d; made=""; \
  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy; \
    chmod +x $$policy; made=1; fi; \
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $(1); status=$$?; \
  if [ -n "$$made" ]; then rm -f $$policy; fi; \
  if [ -d /run/systemd/system ]; then systemctl disable --now $(4) >/dev/null 2>&1; fi; \
  exit $$status; \
else \
  echo "$(3) need $(2) (as root, on Debian/Ubuntu: apt-get install $(1)); they skip without it"; \
fi
endef

# Argo CD (its application controller and repo-server, one binary from
# devkit/envtest/argocd/main.go), for the Argo CD tests (tests/argocd/): built once from the
# pinned Go module in devkit/envtest/argocd into the user cache with the CRDs beside it
# (controlplane/argocd.py). v3.6 needs Go 1.27: that build alone sets GOTOOLCHAIN=go1.27.3,
# which the go command fetches from the module proxy. Argo CD keeps its cache in Redis:
# Debian's redis-server.
argocd: binaries argocd-packages
	$(BIN)/python -m inference_devkit.controlplane.argocd

argocd-packages:
	$(call apt-install-quiet,redis-server,redis-server,the Argo CD tests,redis-server)

# Jaeger v2 (its OTLP receiver and in-memory query API), the trace receiver of the tracing
# tests (tests/tracing/): built once from the pinned Go module in devkit/envtest/jaeger into
# the user cache (controlplane/jaeger.py).
jaeger: binaries
	$(BIN)/python -m inference_devkit.controlplane.jaeger

# promtool, for the alert and dashboard tests (tests/observability/): Debian's prometheus.
prometheus-packages:
	$(call apt-install-quiet,prometheus,promtool,the alert and dashboard tests,prometheus)

# The longer variants of the fault tests (docs/reliability.md): RELIABILITY_SCALE control-
# plane restarts in a row per test and a burst RELIABILITY_SCALE x 100 creates under SIGKILL.
RELIABILITY_SCALE ?= 5
soak: binaries
	RELIABILITY_SCALE=$(RELIABILITY_SCALE) $(BIN)/pytest tests/reliability tests/operator/test_recovery.py -p no:warnings -s $(PYTEST_ARGS)

# Re-renders every generated file (CRDs, admission policies, docs tables, docs/openapi.json,
# manifests/install.yaml from the chart, with helm built first if missing); tests fail when
# a checked-in copy differs from a fresh render.
generate: $(STAMP)
	$(CLI) generate

lint: $(STAMP)
	$(BIN)/ruff check --no-cache operator devkit tests bench

controlplane: binaries
	$(CLI) controlplane

# `make dev DEV_ARGS=--prometheus` also starts a Prometheus scraping the gateway and the
# operator (Debian's package, installed when missing) and prints its URL.
dev: binaries $(if $(findstring --prometheus,$(DEV_ARGS)),prometheus-packages)
	$(CLI) dev $(DEV_ARGS)

# Every benchmark (python -m bench.run), bounded in time; results into docs/benchmarks.md.
bench: binaries
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache

# A control plane plus one real node (kubelet, kube-proxy, kube-scheduler, the harness's own
# containerd) with the project's image loaded, until Ctrl-C (docs/node.md). Root, Linux.
cluster: binaries node-packages
	$(CLI) cluster

# The repository's Dockerfile built with buildah on a Debian base made locally (no registry).
image: $(STAMP) node-packages
	$(CLI) cluster --image-only

# The end-to-end suite alone, against a fresh local node (skipped, with the reason, where a
# node cannot start).
e2e: node
	INFERENCE_OPERATOR_E2E=1 $(BIN)/pytest tests/e2e $(PYTEST_ARGS)

.PHONY: argocd argocd-packages cluster image e2e flux jaeger node node-packages \
	prometheus-packages
