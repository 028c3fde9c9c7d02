# mechnb — set-up, lab, tests, zoo and benchmarks.
#
#   make lab     create .venv (first time only), install mechnb, start JupyterLab on notebooks/
#   make test    same set-up, then the unit tests (incl. the browser test) and every notebook (fast mode)
#   make exercises  write the learner notebooks (solutions replaced by stubs) to exercises/
#
# Knobs (make VAR=value ...):
#   PYTHON         interpreter used to create .venv                 (default: python3)
#   TORCH_VERSION  the torch release installed first                 (default: 2.13.0)
#   TORCH_INDEX    if set, passed as --index-url for the torch install only, e.g. the
#                  PyTorch CPU wheel index on a CPU-only machine (see README.md)
#   PYTEST_ARGS    extra arguments for both pytest runs of `make test` (e.g. -x, -k tms)
#   BROWSER_DEPS   1: `make test` apt-installs chromium for tests/browser/ when missing and root
#                  (default: 1; 0 skips the install, and the browser test is then skipped)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON        ?= python3
VENV          ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
PYTEST_ARGS   ?=
BROWSER_DEPS  ?= 1

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The set-up is redone only when pyproject.toml or the torch choice changes: the stamp's
# name carries a checksum of both, so an up-to-date venv costs nothing.
SETUP_KEY := $(shell { cat pyproject.toml; echo "$(TORCH_VERSION) $(TORCH_INDEX)"; } | cksum | cut -d' ' -f1)
STAMP     := $(VENV)/.mechnb-setup-$(SETUP_KEY)
TORCH_INDEX_ARG := $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)),)

.PHONY: help setup lab test bench zoo clean exercises browser-deps

help:
	@echo "mechnb — make targets:"
	@echo "  make lab     set up .venv (first time) and start JupyterLab on notebooks/ (127.0.0.1, token)"
	@echo "  make test    set up .venv, run pytest tests/ and every notebook under nbval (MECHNB_FAST=1)"
	@echo "  make exercises  write learner notebooks (solutions -> NotImplementedError stubs) to exercises/"
	@echo "  make browser-deps  install chromium with apt if /usr/bin/chromium is missing (root only)"
	@echo "  make setup   only create/update .venv (torch $(TORCH_VERSION) + mechnb editable + test tools)"
	@echo "  make zoo     retrain every zoo model and rewrite data/ (python -m mechnb.zoo build)"
	@echo "  make bench   run every benchmarks/bench_*.py, one after the other"
	@echo "  make clean   remove .venv and caches"

setup: $(STAMP)

$(STAMP):
	@set -e; \
	if [ ! -x "$(PY)" ]; then \
		echo "==> creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
		$(PYTHON) -m venv $(VENV); \
	fi; \
	rm -f $(VENV)/.mechnb-setup-*; \
	$(PIP) install --quiet "pip>=23"; \
	echo "==> installing torch==$(TORCH_VERSION) $(TORCH_INDEX_ARG)"; \
	$(PIP) install --quiet "torch==$(TORCH_VERSION)" $(TORCH_INDEX_ARG); \
	echo "==> installing mechnb (editable) with its dependencies and test tools"; \
	$(PIP) install --quiet -e ".[test]"; \
	$(PY) -c "import torch, mechnb; print('==> ready: torch', torch.__version__, '| mechnb', mechnb.__version__)"; \
	touch $@

lab: setup
	$(PY) -m mechnb.lab

# The browser test (tests/browser/) drives Debian's chromium; install it when missing and we may.
browser-deps:
	@if [ -x /usr/bin/chromium ] || [ "$(BROWSER_DEPS)" = 0 ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
		echo "==> installing chromium for the browser test (apt-get)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq chromium > /dev/null \
		|| { echo "!! apt-get could not install chromium (make test BROWSER_DEPS=0 skips the browser test)"; exit 1; }; \
	else \
		echo "!! /usr/bin/chromium missing and not root: tests/browser/ will be SKIPPED."; \
		echo "!! enable it with: sudo apt-get install -y chromium"; \
	fi

exercises: setup
	$(PY) -m mechnb.exercises.make

# The tests default to one torch thread: the zoo models are tiny, and on a 2-core machine torch's
# spin-waiting worker threads can slow a step tenfold as soon as anything else is busy
# (e.g. the browser test's kernel). Override with `make test TEST_THREADS=2`.
TEST_THREADS ?= 1
test: export OMP_NUM_THREADS = $(TEST_THREADS)
test: export MKL_NUM_THREADS = $(TEST_THREADS)
test: setup browser-deps
	MECHNB_FAST=1 $(PY) -m pytest tests/ $(PYTEST_ARGS)
	@set -e; \
	if compgen -G "notebooks/*.ipynb" > /dev/null; then \
		echo "MECHNB_STRICT_CHECKS=1 MECHNB_FAST=1 $(PY) -m pytest --nbval-lax --nbval-current-env notebooks/ $(PYTEST_ARGS)"; \
		MECHNB_STRICT_CHECKS=1 MECHNB_FAST=1 $(PY) -m pytest --nbval-lax --nbval-current-env notebooks/ $(PYTEST_ARGS); \
	else \
		echo "notebooks/: no notebooks yet, nothing to execute"; \
	fi

zoo: setup
	$(PY) -m mechnb.zoo build

bench: setup
	@set -e; \
	shopt -s nullglob; benches=(benchmarks/bench_*.py); \
	if [ $${#benches[@]} -eq 0 ]; then echo "benchmarks/: no bench_*.py yet"; exit 0; fi; \
	for b in "$${benches[@]}"; do echo "==> $$b"; $(PY) "$$b"; done

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
