# The two commands of the README, plus the checks CI runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python

.PHONY: help bootstrap demo test test-fast lint typecheck check engines docker

help:
	@echo "make demo       run the main job: simulated H100 fleet + scheduler vs engine-only (no GPU)"
	@echo "make test       install everything needed and run all tests (unit, llama.cpp, Docker)"
	@echo "make test-fast  unit tests only (no real engines, no Docker)"
	@echo "make lint       ruff + mypy"

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@.venv/bin/thunder-sim demo

engines:
	@bash scripts/setup_llama_server.sh >/dev/null

docker:
	@bash scripts/setup_docker.sh >/dev/null

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy packages/thunder-core/src packages/thunder-scheduling/src services/scheduler/src \
		services/sim-engine/src packages/thunder-langgraph/src packages/thunder-openhands/src \
		packages/thunder-testkit/src

test: bootstrap
	@bash scripts/test.sh

test-fast: bootstrap
	.venv/bin/pytest -q -m "not llama and not docker and not slow"
