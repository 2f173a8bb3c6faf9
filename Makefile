# The two commands a fresh machine needs (see README.md):
#   make        set up, release the student notebooks, build the book
#   make test   set up, run the whole test suite (what CI runs: .ci/run)
# Everything is created inside this checkout: the virtual environment in .venv/,
# build outputs in _build/. System packages (bubblewrap for the grading sandbox,
# chromium for the browser tests) come from the distribution's package manager.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
EXTRAS ?= torch,book,grader,dev,triton
MATHJAX_VERSION := 3.2.2
MATHJAX := $(VENV)/mathjax/node_modules/mathjax/es5/tex-chtml.js
SYSTEM_PACKAGES := bubblewrap chromium
PYTEST_ARGS ?=

.DEFAULT_GOAL := all
.PHONY: all test setup python system mathjax release book book-bench clean constraints

all: setup release book

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

setup: python system mathjax

python: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $@

# Debian packages: installed once, with sudo when not root; skipped when present.
system:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "error: need root or sudo to install:$$missing (or install them yourself)" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# MathJax served from the built site itself (no CDN): the npm package, outside the book's _static/.
mathjax: $(MATHJAX)

$(MATHJAX):
	npm install --silent --no-audit --no-fund --prefix $(VENV)/mathjax mathjax@$(MATHJAX_VERSION)
	@test -f $@

release: python
	$(PY) -m autograder release

# TMPDIR inside _build: what the chapters' code leaves in temporary folders (TorchInductor's
# kernels, for one) stays in the checkout, not in /tmp.
book: python mathjax
	@mkdir -p _build/tmp
	TMPDIR=$(CURDIR)/_build/tmp $(BIN)/jupyter-book build -W --keep-going .

# Build times of the book: from scratch, then unchanged (tests/bench_book.py; prints ratios).
book-bench: python mathjax release
	$(PY) tests/bench_book.py

constraints:
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf _build
