# redis-platform: `make up` starts the local twin, `make test` runs every check.
# Both work on a fresh Debian machine with Python 3.11 and are safe to run twice.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
REPORTS ?= reports

.PHONY: help venv redis-server shellcheck browser monitoring container-engine image plan-run up down status smoke lint unit chart infra integration alert-drills checks integration-rest netns runbooks image-plan-run policy policy-venv test bench bench-sse bench-backup chaos chaos-prod lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,infra]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project (pinned by constraints.txt)

redis-server: ## install Debian's redis-server and redis-tools when missing
	@if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then \
		echo "redis-server: $$(redis-server --version | cut -d' ' -f3)"; \
	else \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools; \
	fi

browser: ## install Debian's chromium when missing (the browser test drives it)
	@if command -v chromium >/dev/null; then \
		echo "chromium: $$(chromium --version 2>/dev/null | cut -d' ' -f2)"; \
	else \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

monitoring: ## install Debian's prometheus (promtool), prometheus-alertmanager and prometheus-redis-exporter when missing
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null && \
		command -v prometheus-alertmanager >/dev/null && command -v prometheus-redis-exporter >/dev/null; then \
		echo "monitoring: $$(prometheus --version 2>&1 | head -1 | cut -d' ' -f1-3)"; \
	else \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			prometheus prometheus-alertmanager prometheus-redis-exporter; \
	fi

container-engine: ## install Debian's docker.io, docker-compose and debootstrap when missing (the image build, the plan run)
	@# An engine already installed (Docker CE, Debian's) is kept: docker.io would replace docker-ce.
	@# A docker client alone is not an engine: install the daemon unless one exists or answers.
	@if ! command -v dockerd >/dev/null && ! [ -x /usr/sbin/dockerd ] && ! docker info >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io; \
	fi
	@if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose; \
	fi
	@if ! command -v debootstrap >/dev/null; then \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap; \
	fi
	@echo "container engine: $$(docker --version 2>/dev/null || /usr/bin/docker --version)"

image: venv container-engine ## build the platform image from the Dockerfile here (no registry: a local Debian base); cached by content
	$(BIN)/python -m devtools image

up: venv redis-server monitoring ## start the local twin (TLS + ACL Redis Cluster, the SSE proxy, Prometheus + Alertmanager on 127.0.0.1)
	$(BIN)/redisops local up --monitoring

down: venv ## stop the twin (data kept; `redisops local down --purge` deletes it)
	$(BIN)/redisops local down

status: venv ## the twin's nodes, roles, shards and slots
	$(BIN)/redisops local status

smoke: venv redis-server ## run the smoke suite against the running twin
	$(BIN)/redisops smoke --target local --report-dir $(REPORTS)

shellcheck: ## install Debian's shellcheck when missing (actionlint checks every workflow run: with it)
	@if command -v shellcheck >/dev/null; then \
		echo "shellcheck: $$(shellcheck --version | sed -n 's/^version: //p')"; \
	else \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck; \
	fi

lint: venv shellcheck ## ruff (lint + format check), mypy, and actionlint (with shellcheck) on .github/workflows
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/actionlint -shellcheck "$$(command -v shellcheck)"

unit: venv monitoring ## pure-logic tests, and promtool on the alert rules
	$(BIN)/pytest tests/unit -q

chart: venv ## the Helm chart with the real Helm engine: lint, schema, renders, Kubernetes schemas
	$(BIN)/pytest tests/chart -q

infra: venv monitoring ## the Pulumi program under the mock runtime: the recorded plan of dev and prod
	$(BIN)/pytest tests/infra -q

integration: venv redis-server browser monitoring ## real redis-server processes, the SSE proxy, a browser, the smoke suite, the alert drills
	$(BIN)/pytest tests/integration -q

ALERT_DRILLS := tests/integration/test_alerts_live.py
NETNS_TESTS := tests/integration/test_netns.py tests/integration/test_twin_netns.py tests/integration/test_chaos.py

alert-drills: venv redis-server monitoring ## every alert fired for real on a twin with Prometheus + Alertmanager (part of integration)
	$(BIN)/pytest $(ALERT_DRILLS) -q

# The policy pack runs in a virtualenv of its own, as `pulumi preview --policy-pack` runs
# it: pulumi-policy pins protobuf 5.29, the project's Google clients need protobuf 6.
POLICY_VENV := infra/policy/.venv
$(POLICY_VENV)/.installed: infra/policy/requirements.txt
	@test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r infra/policy/requirements.txt
	@touch $@

policy-venv: $(POLICY_VENV)/.installed ## the policy pack's own virtualenv (pulumi preview/up --policy-pack infra/policy runs from it)

policy: venv policy-venv ## the policy pack under the real pulumi-policy (own virtualenv), on the recorded dev and prod plans
	$(BIN)/python -m tests.policy.plans $(REPORTS)/policy-plans.json
	POLICY_PLANS=$(REPORTS)/policy-plans.json $(POLICY_VENV)/bin/python tests/policy/pack_check.py

checks: lint unit chart infra policy ## everything that needs no running server

integration-rest: venv redis-server browser ## the integration tests but the alert drills and the separate-hosts tests
	$(BIN)/pytest tests/integration -q --ignore=$(ALERT_DRILLS) $(addprefix --ignore=,$(NETNS_TESTS))

netns: venv redis-server ## separate hosts (network namespaces, root): the netns twin and the fastest chaos drills (part of integration)
	$(BIN)/pytest $(NETNS_TESTS) -q

runbooks: venv redis-server monitoring ## every runbook page checked; every procedure executed on a twin of its declared shape, inside a data guard (reports/runbooks.json)
	$(BIN)/pytest tests/runbooks -q

plan-run: venv redis-server container-engine ## the image built here; every pod of the recorded dev plan run as its container, as declared
	$(BIN)/pytest tests/containers -q

# Two lanes first (at most two jobs at once): the alert drills (which mostly wait on
# Prometheus' clock), then the runbook procedures; beside them the static checks, then
# the image and the plan run of its containers, then the separate-hosts tests. The rest
# of the integration tests after them, alone.
test: venv redis-server browser monitoring container-engine ## everything CI runs
	$(MAKE) --no-print-directory -j2 -O alert-drills checks image-plan-run runbooks
	$(MAKE) --no-print-directory integration-rest

image-plan-run: image ## the image, the plan run of its containers, the separate-hosts tests (one lane of make test)
	$(MAKE) --no-print-directory plan-run
	$(MAKE) --no-print-directory netns

bench: venv redis-server ## cold start and failover numbers, 5 runs each (not part of test)
	$(BIN)/python bench/twin_bench.py --runs 5

bench-sse: venv redis-server ## SSE proxy: 1000 clients x 50 events/s, 5000 idle (not part of test)
	$(BIN)/python bench/sse_bench.py --clients 1000 --rate 50 --seconds 30 --idle 5000

chaos: venv redis-server ## partitions, stopped and killed primaries, lost links on the netns twin (root): reports/chaos.json (not part of test)
	$(BIN)/python -m devtools.chaos run --with-min-replicas --runs 3 --json $(REPORTS)/chaos.json

chaos-prod: venv redis-server ## the partition drills on the prod shape (3 x 2, node-timeout 5 s), with and without min-replicas, 3 runs: reports/chaos-prod.json
	$(BIN)/python -m devtools.chaos run --drill partition-long --drill partition-short --with-min-replicas --replicas 2 --node-timeout 5000 --max-lag 2 --runs 3 --json $(REPORTS)/chaos-prod.json

bench-backup: venv redis-server ## backup and restore of ~1 GB: MB/s, keys/s, RTO (not part of test)
	$(BIN)/python bench/backup_bench.py --gb 1

lock: ## refresh constraints.txt from a clean resolve of pyproject.toml
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev,infra]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^redis-platform' > constraints.txt
	rm -rf .lock-venv

clean: ## remove the virtualenv and caches (not the twin's data)
	rm -rf $(VENV) $(POLICY_VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
