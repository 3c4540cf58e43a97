# Langerhans — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY_SYS  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.stamp
GOBIN   ?= $(shell go env GOPATH 2>/dev/null)/bin
BUF     := $(GOBIN)/buf
BUF_VERSION := v1.75.0

PROTO_FILES := $(shell find proto -name '*.proto' 2>/dev/null)
PYX_FILES   := $(shell find kernels -name '*.pyx' -o -name '*.pxd' 2>/dev/null)
PROTO_STAMP := var/.proto.stamp
KERNEL_STAMP := var/.kernels.stamp

.PHONY: help
help: ## list every target with one line each
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

# ------------------------------------------------------------------ set-up
$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	@echo "==> installing Python dependencies into $(VENV)"
	@$(PIP) install -q --upgrade pip setuptools wheel
	@$(PIP) install -q cython numpy
	@$(PIP) install -q --no-build-isolation -e '.[dev,ble]' --config-settings editable_mode=compat
	@# generated protobuf modules import as `langerhans.*` from proto/: put it on the path
	@echo "$(CURDIR)/proto" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/langerhans-proto.pth"
	@mkdir -p var && touch $@

.PHONY: install
install: $(STAMP) ## create the virtualenv and install Langerhans with its dev tools

$(PROTO_STAMP): $(STAMP) $(PROTO_FILES) scripts/gen_proto.py
	@echo "==> generating protobuf code"
	@$(PY) scripts/gen_proto.py
	@mkdir -p var && touch $@

.PHONY: proto
proto: $(PROTO_STAMP) ## generate Python code and .pyi stubs from proto/

$(KERNEL_STAMP): $(STAMP) $(PYX_FILES) setup.py
	@echo "==> compiling Cython kernels"
	@$(PY) setup.py -q build_ext --inplace -j 2 >/dev/null
	@mkdir -p var && touch $@

.PHONY: kernels
kernels: $(KERNEL_STAMP) ## compile the Cython kernels in place

.PHONY: setup
setup: install proto kernels ## everything a fresh clone needs before running or testing

$(BUF):
	@echo "==> installing buf $(BUF_VERSION) with go install"
	@GOFLAGS=-mod=mod go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

.PHONY: buf-lint
buf-lint: $(BUF) ## lint the protobuf contracts with buf
	@cd proto && $(BUF) lint

# Compare against this ref's proto/ (override: make buf-breaking BUF_AGAINST_BRANCH=origin/main).
BUF_AGAINST_BRANCH ?= main
.PHONY: buf-breaking
buf-breaking: $(BUF) ## fail on wire-breaking proto changes against the main branch (buf breaking)
	@if git cat-file -e $(BUF_AGAINST_BRANCH):proto/buf.yaml 2>/dev/null; then \
	  cd proto && $(BUF) breaking --against '../.git#branch=$(BUF_AGAINST_BRANCH),subdir=proto'; \
	else echo "buf-breaking: $(BUF_AGAINST_BRANCH) has no proto/buf.yaml yet; nothing to compare"; fi

HELM := $(GOBIN)/helm
HELM_VERSION := v3.22.0
# checkov has a large dependency tree: its own cached virtualenv, outside the project's.
CHECKOV_VENV := var/tools/checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CHECKOV_VERSION := 3.3.30

$(HELM):
	@echo "==> installing helm $(HELM_VERSION) with go install (once; takes a few minutes)"
	@GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(CHECKOV):
	@echo "==> installing checkov $(CHECKOV_VERSION) into $(CHECKOV_VENV) (once)"
	@$(PY_SYS) -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/pip install -q checkov==$(CHECKOV_VERSION)

.PHONY: tools
tools: $(BUF) $(HELM) $(CHECKOV) ## build the Go/Python tools the checks need (buf, helm, checkov), once

.PHONY: helm-check
helm-check: setup $(HELM) $(CHECKOV) ## Helm chart: lint, render, offline schema validation, checkov
	@$(PY) scripts/helm_check.py --helm $(HELM) --checkov $(CHECKOV)
	@HELM=$(HELM) $(VENV)/bin/pytest -q tests/helm $(PYTEST_ARGS)

.PHONY: kafka-up
kafka-up: setup ## start the local single-node Kafka broker (KRaft) unless KAFKA_BOOTSTRAP_SERVERS is set
	@$(VENV)/bin/langerhans kafka up

.PHONY: kafka-down
kafka-down: setup ## stop the local Kafka broker
	@$(VENV)/bin/langerhans kafka down

# ------------------------------------------------------------------ run and test
.PHONY: run
run: setup ## run the whole platform with simulated people (Ctrl-C stops everything)
	@$(VENV)/bin/langerhans run

.PHONY: lint
lint: setup ## ruff and mypy (strict)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

BROWSER_STAMP := tests/browser/node_modules/.stamp

# playwright-core only (it never downloads a browser): the tests drive Debian's /usr/bin/chromium.
$(BROWSER_STAMP): tests/browser/package.json tests/browser/package-lock.json
	@echo "==> installing playwright-core for the browser tests (npm ci)"
	@cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent
	@touch $@

.PHONY: browser-deps
browser-deps: $(BROWSER_STAMP) ## npm install of playwright-core for the headless-Chromium UI tests

.PHONY: test
test: setup buf-lint buf-breaking helm-check kafka-up browser-deps ## run the whole test suite (starts the local Kafka broker)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy
	@# tests/helm already ran in helm-check (with the helm binary it built)
	@$(VENV)/bin/pytest --ignore=tests/helm $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: setup ## unit tests only (no Kafka, PostgreSQL or browser)
	@$(VENV)/bin/pytest -m "not kafka and not postgres and not browser and not slow" $(PYTEST_ARGS)

# Whole-platform fault scenarios; figures collected in var/reliability/figures.json.
.PHONY: test-reliability
test-reliability: setup kafka-up ## whole platform under SIGKILL, broker restarts, partitions: RESULT reliability …
	@mkdir -p var/reliability && rm -f var/reliability/figures.json
	@# PostgreSQL for the gateway (scripts/postgres.sh starts it once; TEST_POSTGRES_URL wins).
	@url="$${TEST_POSTGRES_URL:-}"; if [ -z "$$url" ]; then bash scripts/postgres.sh start >/dev/null && url=$$(bash scripts/postgres.sh url); fi; \
	  TEST_POSTGRES_URL="$$url" LANGERHANS_RELIABILITY=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/reliability $(PYTEST_ARGS); \
	  status=$$?; $(PY) -m tests.reliability.report; exit $$status

.PHONY: fuzz
fuzz: setup ## fuzz every parser (BLE, envelopes, signed commands, CGM, Nightscout), ~25× make test's budget
	@LANGERHANS_FUZZ=long $(VENV)/bin/pytest -q -p no:cacheprovider tests/fuzz $(PYTEST_ARGS); \
	  status=$$?; $(PY) -m tests.reliability.report fuzz; exit $$status

# Supply-chain tools: their own cached virtualenv, like checkov's.
SUPPLY_VENV := var/tools/supply-chain
SUPPLY_TOOLS := $(SUPPLY_VENV)/bin/pip-audit

$(SUPPLY_TOOLS):
	@echo "==> installing cyclonedx-bom, bandit and pip-audit into $(SUPPLY_VENV) (once)"
	@$(PY_SYS) -m venv $(SUPPLY_VENV)
	@$(SUPPLY_VENV)/bin/pip install -q cyclonedx-bom==7.5.0 bandit==1.9.4 pip-audit==2.10.1

.PHONY: supply-chain
supply-chain: setup $(SUPPLY_TOOLS) ## CycloneDX SBOM (var/sbom.json), bandit, pip-audit: RESULT supply_chain …
	@$(PY) scripts/supply_chain.py --tools $(SUPPLY_VENV)/bin

# ------------------------------------------------------------------ benchmarks
.PHONY: bench-bus
bench-bus: setup kafka-up ## Kafka backbone throughput and latency: RESULT bus …
	@$(PY) -m bench.bus

.PHONY: bench-api
bench-api: setup kafka-up ## Gateway: last-24-h glucose under load and live fan-out: RESULT api … / RESULT stream …
	@$(PY) -m bench.api

.PHONY: bench-edge
bench-edge: setup kafka-up ## Edge agent RSS/CPU, device-gateway concurrent hub streams and command p99: RESULT edge …
	@$(PY) -m bench.edge

.PHONY: bench-ingest
bench-ingest: setup kafka-up ## raw CGM reading → validated reading (and alerts) over Kafka: RESULT ingest …
	@$(PY) -m bench.ingest

.PHONY: bench-infusion-set
bench-infusion-set: setup ## infusion-set failure alerts on the simulated cohort: RESULT infusion_set …
	@$(PY) -m bench.infusion_set

CONTROLLER ?= baseline

.PHONY: bench-kernels
bench-kernels: setup ## dosing kernels, full decisions (24 h history, 6 h forecast) on one core: RESULT kernels …
	@$(PY) -m bench.kernels

.PHONY: bench-sim
bench-sim: setup ## simulation speed, 30 virtual people × 14 days: RESULT sim …
	@$(PY) -m bench.sim

.PHONY: bench-clinical
bench-clinical: setup ## every in-silico scenario over the cohort (CONTROLLER=baseline): RESULT clinical …
	@$(PY) -m bench.clinical --controller $(CONTROLLER)

.PHONY: bench-clinical-bound
bench-clinical-bound: setup ## what a clairvoyant planner reaches in standard and pre_bolus: RESULT clinical_bound …
	@$(PY) -m bench.clinical_bound

.PHONY: bench-clinical-mpc
bench-clinical-mpc: setup ## the bound's planner as a controller reading the CGM, on exact and identified models: RESULT clinical_model_mpc …
	@$(PY) -m bench.clinical_model_mpc

.PHONY: clinical-plot
clinical-plot: setup ## docs/img/clinical_comparison.png: engine against baseline from the bench-clinical tables
	@$(PY) -m bench.clinical_plot

.PHONY: sim-plots
sim-plots: setup ## PNGs of a simulated day and the cohort AGP into docs/img/
	@$(PY) -m sim.plots

.PHONY: clean
clean: ## remove build products (keeps var/ data)
	rm -rf build $(PROTO_STAMP) $(KERNEL_STAMP)
	find kernels -name '*.so' -delete -o -name '*.c' -delete
