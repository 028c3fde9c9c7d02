# mechnb — set-up, lab, tests, zoo and benchmarks.
#
#   make lab     create .venv (first time only), install mechnb, start JupyterLab on notebooks/
#   make test    same set-up, then the unit tests (incl. the browser test) and every notebook (fast mode),
#                then the notebooks and the numerically sensitive tests again under other CPU kernel
#                families and thread counts (see "make test runs the suite under several ..." below)
#   make exercises  write the learner notebooks (solutions replaced by stubs) to exercises/
#   make lab-exercises  the same, then start JupyterLab on exercises/
#
# Knobs (make VAR=value ...):
#   PYTHON         interpreter used to create .venv                 (default: python3)
#   TORCH_VERSION  the torch release installed first                 (default: 2.13.0)
#   TORCH_INDEX    if set, passed as --index-url for the torch install only, e.g. the
#                  PyTorch CPU wheel index on a CPU-only machine (see README.md)
#   PYTEST_ARGS    extra arguments for every pytest run of `make test` (e.g. -x, -k tms)
#   TEST_DURATIONS each pytest run of `make test` lists its slowest tests (default: 15; 0: all)
#   TEST_WORKERS   pytest-xdist workers of `make test`, one thread each (default: the number of cores;
#                  0: a single pytest process)
#   TEST_MATRIX    0: `make test` runs only the whole suite under the machine's best kernels (default: 1)
#   NUMERICS_PATHS test files/node ids `make test` reruns in full under each other configuration
#   NOTEBOOKS_PORTABLE 1: `make test` also runs nbval on notebooks/ under the portable kernels (default: 0;
#                  the learner notebooks are the notebooks' run there)
#   BROWSER_DEPS   1: `make test` apt-installs chromium for tests/browser/ when missing and root
#                  (default: 1; 0 skips the install, and the browser test is then skipped)
#   NBVAL_BEST     auto: `make test` runs nbval on notebooks/ under the best kernels only when the
#                  browser test cannot (no chromium at CHROMIUM, or no playwright): the browser test
#                  runs every notebook there and compares its checked cells; 1: always; 0: never
#   CHROMIUM       the chromium the browser test drives (default: $MECHNB_CHROMIUM or /usr/bin/chromium)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON        ?= python3
VENV          ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
PYTEST_ARGS   ?=
BROWSER_DEPS  ?= 1
NBVAL_BEST    ?= auto
CHROMIUM      ?= $(or $(MECHNB_CHROMIUM),/usr/bin/chromium)

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The set-up is redone only when pyproject.toml or the torch choice changes: the stamp's
# name carries a checksum of both, so an up-to-date venv costs nothing.
SETUP_KEY := $(shell { cat pyproject.toml; echo "$(TORCH_VERSION) $(TORCH_INDEX)"; } | cksum | cut -d' ' -f1)
STAMP     := $(VENV)/.mechnb-setup-$(SETUP_KEY)
TORCH_INDEX_ARG := $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)),)

.PHONY: help setup lab test bench zoo clean exercises lab-exercises browser-deps

help:
	@echo "mechnb — make targets:"
	@echo "  make lab     set up .venv (first time) and start JupyterLab on notebooks/ (127.0.0.1, token)"
	@echo "  make test    set up .venv, run pytest tests/ and every notebook under nbval (MECHNB_FAST=1), then"
	@echo "               the notebooks and the numerics tests under other CPU kernel families and 2 threads"
	@echo "  make exercises  write learner notebooks (solutions -> NotImplementedError stubs) to exercises/"
	@echo "  make lab-exercises  write them (your edited ones are kept), then start JupyterLab on exercises/"
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
	echo "==> installing the Hugging Face extras (transformers; TransformerLens for the tests), torch kept at $(TORCH_VERSION)"; \
	$(PIP) install --quiet -e ".[hf,tl]" "torch==$(TORCH_VERSION)"; \
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

lab-exercises: exercises
	$(PY) -m mechnb.lab --notebook-dir exercises

# The tests default to one torch thread: the zoo models are tiny, and on a 2-core machine torch's
# spin-waiting worker threads can slow a step tenfold as soon as anything else is busy
# (e.g. the browser test's kernel). Override with `make test TEST_THREADS=2`.
TEST_THREADS ?= 1
# ... and run TEST_WORKERS such single-threaded pytest processes side by side (pytest-xdist; one per
# core by default; `--dist loadscope`: each notebook, each test module and each test class stays on
# one worker, so a long module is split into classes to share it; see conftest.py).
# TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= $(shell getconf _NPROCESSORS_ONLN 2> /dev/null || echo 2)
XDIST = -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder
# Each pytest run of `make test` ends with its slowest tests (where the time goes; 0: all of them).
TEST_DURATIONS ?= 15
DURATIONS = --durations=$(TEST_DURATIONS)

# `make test` runs the suite under several numeric configurations, so that a result which
# depends on the CPU (a kernel family's rounding, a reduction order) fails here first rather
# than on a reader's laptop:
#   1. the whole suite, tests/ and notebooks/, under the machine's best kernels (torch's
#      ATEN_CPU_CAPABILITY unset, MKL's own choice), TEST_THREADS threads, except the learner
#      notebooks (step 2 runs them). The notebooks are run there by the browser test
#      (tests/browser/: every notebook in JupyterLab, every checked cell compared with its
#      reference within its tolerance, as nbval does), so nbval runs notebooks/ under the best
#      kernels only when the browser test cannot (NBVAL_BEST);
#   2. the numerics subset (NUMERICS_MARK) and the learner notebooks (tests/test_learner_notebooks.py:
#      every notebook with its exercises left as stubs, every checked cell the learner version keeps
#      compared with its reference) under KERNELS_DEFAULT (torch's portable kernels, MKL's SSE4.2
#      code path: what a machine without AVX computes), in one pytest run;
#   3. the quick numerics subset (NUMERICS_MARK_QUICK) with 2 threads (other reduction orders;
#      waiting threads sleep instead of spinning: a spinning pair made this step 8x slower on a
#      busy 2-core machine, and the wait policy does not change what is computed), and, when the
#      best family is AVX-512, under KERNELS_AVX2 (what an AVX2 machine computes) at the same
#      time: a third kernel family and a second thread count in one configuration.
# Every notebook thus runs twice: the facilitator version under the best kernels, the learner
# version under the portable ones (its exercise cells, stubs there, are checked under the best
# kernels only); `make test NOTEBOOKS_PORTABLE=1` adds nbval on notebooks/ under the portable kernels.
# torch's ATEN_CPU_CAPABILITY does not reach MKL's BLAS/LAPACK (matmul, eigh, svd), which
# dispatch on their own; MKL_ENABLE_INSTRUCTIONS does (it is ignored where torch has no MKL).
# The numerics subset: the tests marked @pytest.mark.numerics, plus NUMERICS_PATHS run in full;
# the quick subset leaves out those also marked slow (the SPD quality bars, minutes each). By
# default configuration 2 runs the quick subset too: on 2 cores the SPD bars took 575 s there
# (one module, one worker), and their seeds x kernel families are measured by
# `benchmarks/bench_spd.py --seeds` (benchmarks/results/spd_seeds.json: 20/20 runs each).
# `make test NUMERICS_MARK=numerics` reruns them under the portable kernels as well.
# A configuration that fails fails `make test`; every configuration runs, a summary with the
# time of each comes last. TEST_MATRIX=0 runs configuration 1 only (the learner notebooks included).
KERNELS_DEFAULT ?= ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2
KERNELS_AVX2    ?= ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
THREADS_2       ?= OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
NUMERICS_MARK       ?= numerics and not slow
NUMERICS_MARK_QUICK ?= numerics and not slow
NUMERICS_PATHS  ?=
NOTEBOOKS_PORTABLE ?= 0
TEST_MATRIX     ?= 1

PYTEST_UNIT      = MECHNB_FAST=1 $(PY) -m pytest $(DURATIONS) $(XDIST) "$${unit_mark[@]}" tests/ $(PYTEST_ARGS)
PYTEST_NOTEBOOKS = MECHNB_STRICT_CHECKS=1 MECHNB_FAST=1 $(PY) -m pytest $(DURATIONS) $(XDIST) --nbval-lax --nbval-current-env \
                   notebooks/ $(PYTEST_ARGS)
PYTEST_NUMERICS  = MECHNB_FAST=1 $(PY) -m pytest $(DURATIONS) $$xdist -m "$$mark" tests/ $(PYTEST_ARGS)
PYTEST_NUMERICS_PATHS = MECHNB_FAST=1 $(PY) -m pytest $(DURATIONS) $$xdist $(NUMERICS_PATHS) $(PYTEST_ARGS)
# pytest's exit code 5 (nothing collected) is a failure of the configuration, unless
# PYTEST_ARGS (e.g. -k) narrowed the run: then that configuration simply had nothing to run.
NARROWED := $(if $(strip $(PYTEST_ARGS)),1,0)

test: export OMP_NUM_THREADS = $(TEST_THREADS)
test: export MKL_NUM_THREADS = $(TEST_THREADS)
# Python may cache the compiled (and pytest's assertion-rewritten) test modules in __pycache__
# (git-ignored): every pytest process of every configuration would otherwise compile them again.
test: export PYTHONDONTWRITEBYTECODE =
# the browser test drives the chromium that NBVAL_BEST=auto checked for, not another one
test: export MECHNB_CHROMIUM := $(CHROMIUM)
test: setup browser-deps
	@set -u; trap 'echo; echo "!! make test interrupted"; exit 130' INT; \
	best=$$(env -u ATEN_CPU_CAPABILITY -u MKL_ENABLE_INSTRUCTIONS $(PY) -c \
		"import torch; print(torch.backends.cpu.get_cpu_capability())" 2> /dev/null) || best=unknown; \
	here="$${ATEN_CPU_CAPABILITY:+ATEN_CPU_CAPABILITY=$$ATEN_CPU_CAPABILITY }"; \
	here="$$here$${MKL_ENABLE_INSTRUCTIONS:+MKL_ENABLE_INSTRUCTIONS=$$MKL_ENABLE_INSTRUCTIONS }"; \
	here="$${here:+$${here}(as exported)}"; here="$${here:-the best kernels of this machine ($$best)}"; \
	nbbest=1; \
	if [ "$(NBVAL_BEST)" = 0 ]; then nbbest=0; \
	elif [ "$(NBVAL_BEST)" = auto ] && [ -x "$(CHROMIUM)" ] && $(PY) -c "import playwright" > /dev/null 2>&1; then \
		nbbest=0; fi; \
	total=$$((1 + nbbest)); avx2=0; unit_mark=(); nbport=0; \
	if [ "$(TEST_MATRIX)" != 0 ]; then \
		total=$$((total + 2)); unit_mark=(-m 'not learner'); \
		if [ "$$best" = AVX512 ]; then avx2=1; fi; \
		if [ "$(NOTEBOOKS_PORTABLE)" = 1 ]; then nbport=1; total=$$((total + 1)); fi; \
	fi; \
	n=0; failed=0; summary=(); \
	begin() { n=$$((n + 1)); title="[$$n/$$total] $$1"; echo; echo "==> $$title"; t0=$$SECONDS; step_rc=0; note=""; }; \
	run() { \
		printf '%q ' "$$@"; echo; env "$$@"; local rc=$$?; \
		if [ $$rc = 5 ] && [ $(NARROWED) = 1 ]; then rc=0; note=", nothing selected by PYTEST_ARGS"; \
		elif [ $$rc = 5 ]; then echo "!! no test collected: this configuration's selection is empty"; fi; \
		[ $$rc = 0 ] || step_rc=$$rc; \
	}; \
	end() { \
		local dt=$$((SECONDS - t0)) res; \
		if [ $$step_rc = 0 ]; then res="passed$$note"; else res="FAILED (pytest exit $$step_rc)"; failed=1; fi; \
		echo "<== $$title: $$res, $${dt} s"; summary+=("$$title: $$res, $$dt s"); \
	}; \
	notebooks() { \
		if compgen -G "notebooks/*.ipynb" > /dev/null; then run "$$@" $(PYTEST_NOTEBOOKS); \
		else echo "notebooks/: no notebooks yet, nothing to execute"; fi; \
	}; \
	numerics() { \
		local mark=$$1 xdist=$$2; shift 2; \
		run "$$@" $(PYTEST_NUMERICS); \
		if [ -n "$(strip $(NUMERICS_PATHS))" ]; then run "$$@" $(PYTEST_NUMERICS_PATHS); fi; \
	}; \
	what="unit tests (tests/)"; [ $${#unit_mark[@]} = 0 ] || what="unit tests (tests/, the learner notebooks in step 2)"; \
	begin "$$what under $$here, $(TEST_THREADS) thread(s)"; run $(PYTEST_UNIT); end; \
	if [ $$nbbest = 1 ]; then begin "notebooks under $$here, $(TEST_THREADS) thread(s)"; notebooks; end; \
	else echo; echo "==> notebooks under $$here: run and checked by the browser test of step 1 (NBVAL_BEST=1: by nbval too)"; fi; \
	if [ "$(TEST_MATRIX)" != 0 ]; then \
		begin "numerics subset and learner notebooks under $(KERNELS_DEFAULT)"; \
		numerics "($(NUMERICS_MARK)) or learner" "$(XDIST)" $(KERNELS_DEFAULT); end; \
		if [ $$nbport = 1 ]; then begin "notebooks under $(KERNELS_DEFAULT)"; notebooks $(KERNELS_DEFAULT); end; fi; \
		if [ $$avx2 = 1 ]; then \
			begin "quick numerics subset with 2 threads ($(THREADS_2)) under $(KERNELS_AVX2)"; \
			numerics "$(NUMERICS_MARK_QUICK)" "-n 0" $(THREADS_2) $(KERNELS_AVX2); end; \
		else \
			echo; echo "==> no AVX2 kernels in the 2-thread configuration: the best kernel family here is $$best, not AVX512"; \
			begin "quick numerics subset with 2 threads ($(THREADS_2))"; \
			numerics "$(NUMERICS_MARK_QUICK)" "-n 0" $(THREADS_2); end; \
		fi; \
	fi; \
	echo; echo "==> make test: $$total step(s), $$SECONDS s in all (set-up not counted)"; printf '    %s\n' "$${summary[@]}"; \
	if [ $$failed != 0 ]; then echo "!! make test FAILED (see the FAILED step(s) above)"; exit 1; fi; \
	echo "==> make test passed"

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
