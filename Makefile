# The README's two commands are `make lab` (the main job on the built-in lab) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export PATH := $(CURDIR)/.venv/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/.cache/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
# Controller-side files (rendered bundle, compiled lab rules, fetched logs, the report).
export K3S_NETPOL_ARTIFACTS_DIR ?= $(CURDIR)/artifacts

.PHONY: help setup lab lab-down test lint pytest molecule bench

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## Install Debian packages, .venv, containers.conf and the local systemd image (idempotent).
	@bash scripts/setup.sh

lab: setup ## Run site.yml on the built-in lab: ulogd2, the policy bundle, the lab, verify.
	ansible-playbook site.yml
	@echo; echo "== The probe matrix ($(K3S_NETPOL_ARTIFACTS_DIR)/report.txt)"
	@cat "$(K3S_NETPOL_ARTIFACTS_DIR)/report.txt"
	@echo; echo "== The drops ulogd2 logged during verify, one event per packet ($(K3S_NETPOL_ARTIFACTS_DIR)/logs/)"
	@k3s-netpol logs "$(K3S_NETPOL_ARTIFACTS_DIR)"/logs/*.log \
	  --snapshot src/k3s_netpol/data/lab/workloads.yaml --snapshot "$(K3S_NETPOL_ARTIFACTS_DIR)/bundle.yaml"
	@echo; echo "== The report: $(K3S_NETPOL_ARTIFACTS_DIR)/report.html (and report.json, report.txt)"

lab-down: setup ## Remove the lab's node container.
	ansible-playbook playbooks/lab_down.yml

test: setup lint pytest molecule ## Run every check and test that can run on this machine.

lint: ## yamllint, ansible-lint (production profile), ruff and mypy.
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .
	mypy

pytest: ## The Python test suite.
	pytest -q

molecule: ## Every Molecule scenario that can run here (the others print SKIPPED and why).
	bash scripts/molecule-all.sh

bench: setup ## Benchmarks: print figures, assert nothing.
	bash benchmarks/run-all.sh
