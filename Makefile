# The README's two commands are `make lab` (the main job on the built-in lab) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The virtualenv, as a user who activated it has it. Nothing else is exported: the plays, the
# Molecule scenarios and the package find the project's podman settings, ansible.cfg and roles
# themselves, so what passes here passes for a user who types the same commands.
export PATH := $(CURDIR)/.venv/bin:$(PATH)
# Controller-side files (rendered bundle, compiled lab rules, fetched logs, the report): the
# roles' default, artifacts/ beside site.yml, unless K3S_NETPOL_ARTIFACTS_DIR says otherwise.
artifacts_dir := $(or $(K3S_NETPOL_ARTIFACTS_DIR),$(CURDIR)/artifacts)

.PHONY: help setup lab lab-down test lint pytest molecule bench

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## Install Debian packages, .venv, containers.conf and the local systemd image (idempotent).
	@bash scripts/setup.sh

lab: setup ## Run site.yml on the built-in two-node lab: ulogd2, the policy bundle, the lab, verify.
	ansible-playbook site.yml
	@echo; echo "== The probe matrix ($(artifacts_dir)/report.txt)"
	@cat "$(artifacts_dir)/report.txt"
	@echo; echo "== The drops ulogd2 logged during verify, one event per packet ($(artifacts_dir)/logs/)"
	@k3s-netpol logs "$(artifacts_dir)"/logs/*.log \
	  --snapshot src/k3s_netpol/data/lab/workloads.yaml --snapshot "$(artifacts_dir)/bundle.yaml"

lab-down: setup ## Remove the lab's node containers and their podman network.
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
