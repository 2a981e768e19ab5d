# The two commands of the quick start:
#   make book   set everything up, then build the whole book into _build/html
#   make test   set everything up, then run every test (unit, book build, browser)
# Both are idempotent: the environment is rebuilt only when requirements.txt,
# requirements-reference.txt or pyproject.toml change, the data and vendor files are
# fetched only once.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := book

PYTHON ?= $(shell command -v python3.11 || command -v python3)
# The lowest Python the pins install on: pyproject.toml's requires-python (">=3.11.5").
PYTHON_FLOOR := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' pyproject.toml)
VENV ?= .venv
PY := $(VENV)/bin/python
# TORCH=X.Y.Z (set by `make test-compat`, see there): the environment gets that torch and
# its torchvision instead of requirements.txt's, with every other pin as it is.
TORCH ?=
# torchvision 0.(Y+15).Z is built for torch 2.Y.Z (0.19.1 for 2.4.1, 0.29.1 for 2.14.1).
TORCHVISION ?= $(if $(TORCH),$(shell echo $(TORCH) | awk -F. '{print "0." $$2 + 15 "." $$3}'))
# CPU_TORCH=1: PyTorch's CPU build of the pinned torch (from download.pytorch.org, as on
# Binder): the lock less the CUDA-only packages (booktools/binder_requirements.py --cpu-lock),
# about 4.7 GB less than the CUDA build; for machines without a GPU that reach that index
# (GitHub's hosted runners, whose disk is small). Pages, tests and numbers are the same.
CPU_TORCH ?=
# The install stamp is named after a hash of what was installed, so a changed pin
# gives a new name and triggers a reinstall.
REQ_HASH := $(shell { cat requirements.txt requirements-reference.txt pyproject.toml; \
  $(if $(TORCH),echo "torch==$(TORCH) torchvision==$(TORCHVISION)";) \
  $(if $(CPU_TORCH),echo "CPU build of torch";) } | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
MATHJAX_VERSION := 3.2.2
MATHJAX := .vendor/mathjax/es5/tex-chtml.js
# Thebe 0.9 (Live Code), served with the book: it speaks ipywidgets 8 (see booktools/live_code.py).
THEBE_VERSION := 0.9.3
THEBE := .vendor/thebe-$(THEBE_VERSION)/lib/index.js
# What Thebe fetches from cdnjs when a widget needs it; the Live Code test serves this copy.
REQUIREJS_VERSION := 2.3.6
REQUIREJS := .vendor/requirejs-$(REQUIREJS_VERSION)/require.js
# plotly.js's official partial bundle with the trace types the book draws (scatter,
# heatmap, contour, histogram): 1.5 MB instead of the full bundle's 4.8 MB. Its version is
# the one the pinned Python plotly bundles (plotly.offline.get_plotlyjs_version()): the
# build looks for this folder by that version and fails without it.
PLOTLYJS_VERSION := 4.1.1
PLOTLYJS := .vendor/plotly.js-cartesian-$(PLOTLYJS_VERSION)/plotly-cartesian.min.js
# axe-core, the accessibility checker the browser tests run on every page (tests/test_a11y.py).
AXE_VERSION := 4.14.1
AXE := .vendor/axe-core-$(AXE_VERSION)/axe.min.js
# Trained grids are cached here (keyed by configuration, data and d2lcore's code), so a
# rebuild with nothing changed trains nothing; `make clean` empties it.
export D2L_CACHE_DIR ?= $(CURDIR)/.d2l_cache

# Debian packages, as root: the package index is refreshed only when the install fails.
APT_INSTALL = (apt-get install -y -q $(1) || (apt-get update -q && apt-get install -y -q $(1))) >/dev/null

.PHONY: book book-ci test $(TEST_STAGES) test-build test-binder-env test-compat setup env data vendor browser linters bench clean gpu-check gpu-wheels gpu-vendor gpu-book

# Pages execute through jupyter-cache: a page runs again when its cells change, and every
# page runs again when d2lcore, the pins, D2L_PROFILE or the device change
# (booktools/exec_cache.py). With nothing changed, nothing executes.
book: setup
	$(VENV)/bin/jupyter-book build . --all
	@$(PY) -m booktools.exec_report --quiet --markdown _build/exec_report.md --json _build/exec_report.json
	@echo "The book is in _build/html/index.html (execution times: _build/exec_report.md)"

# What CI runs: every cell of every page executed afresh, every warning an error, and
# the per-page execution times kept with the HTML. D2L_PROFILE=gpu selects the GPU profile.
book-ci: setup
	D2L_EXECUTE=force $(VENV)/bin/jupyter-book build . --all -W
	$(PY) -m booktools.exec_report --markdown _build/html/_exec_report.md --json _build/html/_exec_report.json

# The tests run in stages, each a target of its own that can run alone; `make test` runs
# them all at once, as make's parallel jobs (-k: a failed stage stops none of the others;
# each stage's output is printed whole when it ends).
#   test-unit     plain `pytest`: the unit suite (pyproject.toml's addopts deselect the
#                 markers below), no book build, no chapter run
#   test-build    the book built for the tests into $(TEST_BUILD), as CI builds it
#                 (booktools/test_build.py: stopped past its limit, saying what it waited for)
#   test-book     pytest -m book: the test build's pages, and small books built on purpose
#   test-browser  pytest -m browser: Chromium over the test build (two workers)
#   test-binder   pytest -m binder: Binder's environment built beside the book build, its
#                 grid cache seeded from the build's, then the pages run in it (two workers)
#   test-colab    pytest -m colab: a chapter's notebook in a stand-in for Colab
# TEST_BUILD=. tests the reader's own build (_build/html) instead, from its execution
# cache: the GPU workflow job, which has just built the book, does.
TEST_BUILD ?= _build/test
export D2L_TEST_BOOK := $(CURDIR)/$(TEST_BUILD)/_build/html
BINDER_ENV := _build/binder-rehearsal
TEST_STAGES := test-unit test-book test-browser test-binder test-colab
PYTEST := $(PY) -m pytest -q -p no:cacheprovider

test: setup browser linters
	$(MAKE) --no-print-directory -k -j$(words $(TEST_STAGES) x x) --output-sync=target $(TEST_STAGES)

test-unit: setup linters
	$(PYTEST) --durations=10

test-build: setup
	$(PY) -m booktools.test_build $(TEST_BUILD)

test-book: test-build
	$(PYTEST) -m book --durations=5

test-browser: test-build browser
	$(PYTEST) -m "browser and not binder" -n 2 --durations=5

test-binder-env: setup
	$(PY) -m tests.binder_env build $(BINDER_ENV)

test-binder: test-build browser test-binder-env
	$(PY) -m tests.binder_env seed $(BINDER_ENV)
	D2L_BINDER_ENV=$(CURDIR)/$(BINDER_ENV) $(PYTEST) -m binder -n 2 --durations=5 \
	  || { status=$$?; $(PY) -m tests.binder_env remove $(BINDER_ENV); exit $$status; }
	$(PY) -m tests.binder_env remove $(BINDER_ENV)

test-colab: test-build
	$(PYTEST) -m colab

# The lowest torch release d2lcore supports (pyproject.toml: torch>=...): the unit tests
# in a second environment, $(COMPAT_VENV), with that torch and every other pin of
# requirements.txt; `make test-compat TORCH=2.Y.Z` tries another release (a new one
# replaces the environment: CUDA builds take gigabytes). Not part of `make test`; CI runs
# it weekly. COLAB=1 adds the Colab rehearsal (pytest -m colab: the book built in that
# environment, then a chapter's notebook run beside its torch).
TORCH_FLOOR := 2.4.1
COMPAT_VENV := .venv-compat
COMPAT_TORCH := $(or $(TORCH),$(TORCH_FLOOR))
COLAB ?=

test-compat:
	@installed=$$($(COMPAT_VENV)/bin/python -c 'import torch; print(torch.__version__.split("+")[0])' \
	  2>/dev/null || true); \
	if [ -n "$$installed" ] && [ "$$installed" != "$(COMPAT_TORCH)" ]; then \
	  echo "$(COMPAT_VENV) has torch $$installed: replacing it"; rm -rf $(COMPAT_VENV); fi
	$(MAKE) --no-print-directory VENV=$(COMPAT_VENV) TORCH=$(COMPAT_TORCH) data $(if $(COLAB),vendor)
	$(COMPAT_VENV)/bin/python -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
	$(COMPAT_VENV)/bin/python -m pytest -q
ifneq ($(COLAB),)
	$(MAKE) --no-print-directory VENV=$(COMPAT_VENV) TORCH=$(COMPAT_TORCH) test-build
	$(COMPAT_VENV)/bin/python -m pytest -q -m colab
endif

setup: env data vendor

env: $(STAMP)

$(STAMP): requirements.txt requirements-reference.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -c 'import sys; floor = tuple(map(int, "$(PYTHON_FLOOR)".split("."))); \
	  sys.exit(0 if sys.version_info[:3] >= floor else \
	    f"{sys.executable} is Python {sys.version.split()[0]}; the pins need Python $(PYTHON_FLOOR) " \
	    "or newer (Debian 12 ships 3.11.2). Install a newer 3.11 (e.g. pyenv install 3.11, " \
	    "uv python install 3.11, or the python:3.11 Docker image) and run make PYTHON=/path/to/python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# pyproject.toml's [build-system] (the tests build the wheel with this environment's
	@# setuptools; python -m venv brings an older one, and only some torch releases ask
	@# for a newer one)
	$(PY) -m pip install --quiet "setuptools>=77"
ifneq ($(CPU_TORCH),)
	$(PY) -m booktools.binder_requirements --cpu-lock $(VENV)/requirements-cpu.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements-cpu.txt
else ifeq ($(TORCH),)
	$(PY) -m pip install --quiet -r requirements.txt
else
	@# requirements.txt less torch, torchvision and the CUDA wheels of that torch release
	@# (triton, nvidia-*, cuda-*): pip brings those of torch $(TORCH) itself.
	grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==' requirements.txt \
	  > $(VENV)/requirements-torch-$(TORCH).txt
	echo "torch==$(TORCH)" >> $(VENV)/requirements-torch-$(TORCH).txt
	echo "torchvision==$(TORCHVISION)" >> $(VENV)/requirements-torch-$(TORCH).txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements-torch-$(TORCH).txt
endif
	$(PY) -m pip install --quiet --no-deps -e .
	@# The d2l package, the reference that tests, benchmarks and two pages compare with:
	@# its own pins (numpy 1.23, pandas 2.0, ...) do not install beside today's stack.
	$(PY) -m pip install --quiet --no-deps -r requirements-reference.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (d2lcore)"
	rm -f $(VENV)/.installed-*
	touch $@

data: env
	@$(PY) -m d2lcore.data --check 2>/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing the Debian package dataset-fashion-mnist ..."; \
	    $(call APT_INSTALL,dataset-fashion-mnist); \
	  fi; \
	  $(PY) -m d2lcore.data --check; }

vendor: $(MATHJAX) $(THEBE) $(REQUIREJS) $(PLOTLYJS) $(AXE)

$(MATHJAX):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch MathJax $(MATHJAX_VERSION) (Debian: apt-get install npm)"; exit 1; }
	rm -rf .vendor/mathjax && mkdir -p .vendor/mathjax
	cd .vendor && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	tar -xzf .vendor/mathjax-$(MATHJAX_VERSION).tgz -C .vendor/mathjax --strip-components=1
	rm .vendor/mathjax-$(MATHJAX_VERSION).tgz

$(THEBE):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch Thebe $(THEBE_VERSION) (Debian: apt-get install npm)"; exit 1; }
	rm -rf .vendor/thebe-$(THEBE_VERSION) && mkdir -p .vendor/thebe-$(THEBE_VERSION)
	cd .vendor && npm pack --silent thebe@$(THEBE_VERSION) >/dev/null
	tar -xzf .vendor/thebe-$(THEBE_VERSION).tgz -C .vendor/thebe-$(THEBE_VERSION) --strip-components=1 package/lib
	rm .vendor/thebe-$(THEBE_VERSION).tgz

$(REQUIREJS):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch require.js $(REQUIREJS_VERSION) (Debian: apt-get install npm)"; exit 1; }
	rm -rf .vendor/requirejs-$(REQUIREJS_VERSION) && mkdir -p .vendor/requirejs-$(REQUIREJS_VERSION)
	cd .vendor && npm pack --silent requirejs@$(REQUIREJS_VERSION) >/dev/null
	tar -xzf .vendor/requirejs-$(REQUIREJS_VERSION).tgz -C .vendor/requirejs-$(REQUIREJS_VERSION) --strip-components=1 package/require.js
	rm .vendor/requirejs-$(REQUIREJS_VERSION).tgz

$(PLOTLYJS):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch plotly.js $(PLOTLYJS_VERSION) (Debian: apt-get install npm)"; exit 1; }
	rm -rf .vendor/plotly.js-cartesian-$(PLOTLYJS_VERSION) && mkdir -p .vendor/plotly.js-cartesian-$(PLOTLYJS_VERSION)
	cd .vendor && npm pack --silent plotly.js-cartesian-dist-min@$(PLOTLYJS_VERSION) >/dev/null
	tar -xzf .vendor/plotly.js-cartesian-dist-min-$(PLOTLYJS_VERSION).tgz -C .vendor/plotly.js-cartesian-$(PLOTLYJS_VERSION) --strip-components=1 package/plotly-cartesian.min.js package/LICENSE
	rm .vendor/plotly.js-cartesian-dist-min-$(PLOTLYJS_VERSION).tgz

$(AXE):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch axe-core $(AXE_VERSION) (Debian: apt-get install npm)"; exit 1; }
	rm -rf .vendor/axe-core-$(AXE_VERSION) && mkdir -p .vendor/axe-core-$(AXE_VERSION)
	cd .vendor && npm pack --silent axe-core@$(AXE_VERSION) >/dev/null
	tar -xzf .vendor/axe-core-$(AXE_VERSION).tgz -C .vendor/axe-core-$(AXE_VERSION) --strip-components=1 package/axe.min.js package/LICENSE
	rm .vendor/axe-core-$(AXE_VERSION).tgz

# Headless Chromium for the browser tests (Debian's packages; Playwright drives it).
browser:
	@command -v chromium >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    $(call APT_INSTALL,chromium chromium-driver); \
	  else echo "The browser tests need Chromium: sudo apt-get install chromium"; exit 1; fi; }

# ShellCheck for the workflows' run scripts (tests/test_workflow.py; Debian's package).
# Without root or apt-get the test says how to install it and is skipped.
linters:
	@command -v shellcheck >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    $(call APT_INSTALL,shellcheck); \
	  else echo "ShellCheck is not installed (sudo apt-get install shellcheck): its test is skipped"; fi; }

bench: setup
	$(PY) benchmarks/bench_epoch.py
	$(PY) benchmarks/bench_grid.py

# The GPU check (booktools/gpu_check.py): every page as a script and the benchmarks, on the
# device d2lcore picks, within a time budget; the report goes to gpu-check/.
gpu-check: setup
	$(PY) -m booktools.gpu_check gpu-check --profile gpu

# What a bare GPU machine (CPython $(GPU_PYTHON), no network) needs beyond torch, carried
# with the working tree (booktools/gpu_wheels.py; 64 MiB a call at most): the pages'
# wheels (~31 MB, .gpu-wheels/), Jupyter Book's (~25 MB, .gpu-book-wheels/), .vendor/ as a
# tarball (~5 MB, .gpu-vendor.tar.xz).
GPU_PYTHON ?= 3.12
gpu-wheels: env
	$(PY) -m booktools.gpu_wheels .gpu-wheels --python $(GPU_PYTHON)
	$(PY) -m booktools.gpu_wheels .gpu-book-wheels --book --python $(GPU_PYTHON)

gpu-vendor: vendor
	tar -cJf .gpu-vendor.tar.xz .vendor
	@du -h .gpu-vendor.tar.xz

# The book built with Jupyter Book in the gpu profile (booktools/gpu_book.py), here: the
# report goes to gpu-book/, the HTML to _build/gpu/_build/html.
gpu-book: setup
	$(PY) -m booktools.gpu_book gpu-book --profile gpu

clean:
	rm -rf _build .d2l_cache

