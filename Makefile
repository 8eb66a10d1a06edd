# nodeshell — entry points. `make run` for the local demo, `make test` for the whole suite.
# Every target installs or builds what it needs (cached under ignored folders).

SHELL := /bin/bash
CARGO ?= cargo
export NODESHELL_CONTROLPLANE_BIN ?= $(CURDIR)/e2e/.bin
# Tests run `kubectl`: use the one built with the apiserver (same version), not whatever the
# machine may or may not have.
export PATH := $(CURDIR)/e2e/.bin:$(PATH)
# The interop tests and benchmarks drive AWS's plugin from here (built by `make ssm-plugin`).
export NODESHELL_SSM_PLUGIN ?= $(CURDIR)/e2e/.bin/session-manager-plugin
# `make test` builds the peers first (tools), so a missing one fails its interop test
# instead of skipping it.
export NODESHELL_REQUIRE_PEERS ?= 1
# The chart tests run helm built from the Go module proxy (`make helm`).
export NODESHELL_HELM ?= $(CURDIR)/e2e/.bin/helm
# The monitoring test checks metric names and alerts with promtool (`make promtool`).
export NODESHELL_PROMTOOL ?= $(CURDIR)/e2e/.bin/promtool
# The krew manifest test installs the plugin archive with krew (`make krew`).
export NODESHELL_KREW ?= $(CURDIR)/e2e/.bin/krew
# The S3 sink test runs versitygw, an S3-compatible server with Object Lock (`make versitygw`).
export NODESHELL_VERSITYGW ?= $(CURDIR)/e2e/.bin/versitygw
# The browser test drives Debian's Chromium (`make browser` installs it).
export NODESHELL_CHROMIUM ?= /usr/bin/chromium

.PHONY: all run test test-unit lint fmt crds check-crds bench e2e-up e2e-down tools controlplane ssm-plugin helm promtool krew versitygw browser terminal web image image-push plugin-archive fuzz clean-cache

all: test

## run: the local demo (control plane, simulator, controller, gateway and web console)
run: controlplane web
	$(CARGO) build --bin nodeshell
	./target/debug/nodeshell dev

## test: the whole suite — lint, fuzz smoke, unit, property, integration against a real apiserver
## and the simulator; ends with one "N passed, N failed" line over every test binary
test: tools web lint fuzz-smoke
	@mkdir -p target
	@# --no-fail-fast: every test binary runs even after one fails, so the closing line counts
	@# the whole suite; the target still fails when any test (or a build) failed.
	set -o pipefail; $(CARGO) test --workspace --no-fail-fast --all-targets -- --test-threads=$${NODESHELL_TEST_THREADS:-2} 2>&1 | tee target/test.log; \
	  status=$$?; \
	  awk '/^test result:/ {p+=$$4; f+=$$6} END {printf "nodeshell: %d passed, %d failed\n", p, f}' target/test.log; \
	  exit $$status

## test-unit: pure-logic tests only (no control plane)
test-unit:
	$(CARGO) test --lib

## lint: formatting and clippy with warnings denied
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --lib --bins -- -D warnings
	# Test and bench targets may unwrap: a panic there is a failed test, not a crash.
	$(CARGO) clippy --workspace --all-targets -- -D warnings -A clippy::unwrap_used
	# The production binary (the Dockerfile's) has no simulator and no `dev`.
	$(CARGO) check --no-default-features --bin nodeshell

fmt:
	$(CARGO) fmt --all

## crds: regenerate crds/ from the Rust types, and the chart's copy the CRD template renders
crds:
	NODESHELL_UPDATE_CRDS=1 $(CARGO) test --quiet --lib api::tests::crds_dir_is_fresh
	rm -f charts/nodeshell/files/crds/*.yaml
	cp crds/*.yaml charts/nodeshell/files/crds/

## bench: benchmarks (print figures, write target/bench/*.json; never fail on time)
bench: tools
	$(CARGO) bench --bench '*'

## e2e-up / e2e-down: a local control plane you can point kubectl at
e2e-up: controlplane
	e2e/scripts/e2e-up.sh

e2e-down:
	e2e/scripts/e2e-down.sh

## tools: build the real kube-apiserver/etcd, AWS's session-manager-plugin, helm, promtool, krew
## and versitygw (cached), and install Chromium for the browser test and tmux for the kubectl plugin's terminal test
tools: controlplane ssm-plugin helm promtool krew versitygw browser terminal

controlplane:
	@e2e/scripts/build-controlplane.sh >/dev/null

ssm-plugin:
	@e2e/scripts/build-ssm-plugin.sh >/dev/null

helm:
	@e2e/scripts/build-helm.sh >/dev/null

promtool:
	@e2e/scripts/build-promtool.sh >/dev/null

krew:
	@e2e/scripts/build-krew.sh >/dev/null

versitygw:
	@e2e/scripts/build-versitygw.sh >/dev/null

browser:
	@e2e/scripts/install-browser.sh

terminal:
	@e2e/scripts/install-terminal.sh

## web: build the web console (npm packages, bundled into web/dist and embedded in the binary)
web:
	@web/build.sh

## plugin-archive: the kubectl plugin as krew installs it, for this machine (or PLUGIN_OS and
## PLUGIN_ARCH): target/krew/kubectl-nodeshell_<os>_<arch>.tar.gz holding `kubectl-nodeshell`
## (the release binary without `dev`, as the Dockerfile builds it) and LICENSE, and target/krew/nodeshell.yaml,
## config/krew/nodeshell.yaml with that archive's sha256; prints the sum. PLUGIN_BIN=FILE packs
## FILE instead of building.
PLUGIN_OS ?= $(shell uname -s | tr '[:upper:]' '[:lower:]')
PLUGIN_ARCH ?= $(shell uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
PLUGIN_OUT ?= target/krew
PLUGIN_FILE = kubectl-nodeshell_$(PLUGIN_OS)_$(PLUGIN_ARCH).tar.gz
plugin-archive: $(if $(PLUGIN_BIN),,web)
	@set -euo pipefail; \
	bin="$(PLUGIN_BIN)"; \
	if [ -z "$$bin" ]; then \
	  CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
	    $(CARGO) build --locked --release --no-default-features --bin nodeshell; \
	  bin="$${CARGO_TARGET_DIR:-target}/release/nodeshell"; \
	fi; \
	grep -q "/$(PLUGIN_FILE)$$" config/krew/nodeshell.yaml || \
	  { echo "config/krew/nodeshell.yaml has no platform $(PLUGIN_OS)/$(PLUGIN_ARCH)" >&2; exit 1; }; \
	stage="$$(mktemp -d)"; trap 'rm -rf "$$stage"' EXIT; \
	install -m 0755 "$$bin" "$$stage/kubectl-nodeshell"; \
	install -m 0644 LICENSE "$$stage/LICENSE"; \
	mkdir -p "$(PLUGIN_OUT)"; \
	tar -C "$$stage" -czf "$(PLUGIN_OUT)/$(PLUGIN_FILE)" kubectl-nodeshell LICENSE; \
	sum="$$(sha256sum "$(PLUGIN_OUT)/$(PLUGIN_FILE)" | cut -d' ' -f1)"; \
	awk -v file="/$(PLUGIN_FILE)" -v sum="$$sum" \
	  '$$1 == "uri:" && substr($$2, length($$2) - length(file) + 1) == file {hit = 1} \
	   hit && $$1 == "sha256:" {sub(/"[0-9a-f]*"/, "\"" sum "\""); hit = 0} {print}' \
	  config/krew/nodeshell.yaml > "$(PLUGIN_OUT)/nodeshell.yaml"; \
	echo "archive:  $(PLUGIN_OUT)/$(PLUGIN_FILE)"; \
	echo "sha256:   $$sum"; \
	echo "manifest: $(PLUGIN_OUT)/nodeshell.yaml"

## image: the container image (multi-stage Dockerfile; not built by this repository's CI),
## tagged as the chart's default image: $(IMAGE):<crate version> (= the chart's appVersion)
IMAGE ?= ghcr.io/periscope/nodeshell
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image:
	docker build -t $(IMAGE):$(IMAGE_TAG) .

## image-push: push what `make image` built (set IMAGE to your registry's repository)
image-push:
	docker push $(IMAGE):$(IMAGE_TAG)

## fuzz: run the frame-decoder fuzz target (needs a nightly toolchain and cargo-fuzz)
fuzz:
	e2e/scripts/fuzz.sh 300

fuzz-smoke:
	@e2e/scripts/fuzz.sh 30

clean-cache:
	rm -rf e2e/.bin e2e/.run
