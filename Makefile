# The two commands a fresh machine needs (see README.md):
#   make        set up, release the student notebooks, build the book (the student edition;
#               make book EDITION=instructor builds the instructor edition)
#   make test   set up, lint (ruff), run the whole test suite (what CI runs: .ci/run)
#   make gpu-check   on a CUDA machine: the cuda tests, Triton and a student layer against
#               nn.BatchNorm1d, the benchmark at the goal shapes (tests/gpu_check.py; < 5 min)
#   make publish   build, then push the site to the gh-pages branch (README.md, "Publishing")
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
.PHONY: all test setup python system mathjax release book book-bench results gpu-check publish publish-site clean constraints

all: setup release book

test: setup
	$(BIN)/ruff check .
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

# The book in one of its two editions (book/_ext/edition.py): EDITION=student (the default:
# derivations, graphs, worked numbers and checks, no code that answers a graded function)
# into _build/html, or EDITION=instructor (also the reference code's full listings, to
# publish after the deadline) into _build/instructor/_build/html. Both share one execution
# cache, _build/.jupyter_cache: the editions differ only in Markdown, so a chapter one of them
# has run is not run again for the other.
# TMPDIR inside _build: what the chapters' code leaves in temporary folders (TorchInductor's
# kernels, for one) stays in the checkout, not in /tmp.
EDITION ?= student
BOOK_OUTPUT_student := .
BOOK_OUTPUT_instructor := _build/instructor

book: python mathjax
	@test -n "$(BOOK_OUTPUT_$(EDITION))" || { echo "error: EDITION must be student or instructor, not '$(EDITION)'" >&2; exit 1; }
	@mkdir -p _build/tmp
	TMPDIR=$(CURDIR)/_build/tmp BN_EDITION=$(EDITION) BN_EXECUTION_CACHE=$(CURDIR)/_build/.jupyter_cache \
	  $(BIN)/jupyter-book build -W --keep-going --path-output $(BOOK_OUTPUT_$(EDITION)) .

# The book's multi-seed experiments, stored in book/results/*.json with a fingerprint of the
# code that made them (tests/test_committed_results.py fails when that code changes and the
# results are not made again). About forty-five minutes of one core; JOBS=2 (the default) uses two.
JOBS ?= 2
EXPERIMENTS := learning_rates label_noise eval_statistics forgot_train conv_digits batch_sizes why_it_helps
results: python
	cd book && for experiment in $(EXPERIMENTS); do ../$(PY) -m support.$$experiment --jobs $(JOBS) || exit 1; done

# Build times of the book: from scratch, then unchanged (tests/bench_book.py; prints ratios).
book-bench: python mathjax release
	$(PY) tests/bench_book.py

# The GPU check (tests/gpu_check.py): writes _build/gpu-check/gpu-check.json. Without a GPU,
# GPU_CHECK_ARGS=--cpu runs its small CPU version (the tests run it too).
GPU_CHECK_ARGS ?=
gpu-check: python
	$(PY) tests/gpu_check.py $(GPU_CHECK_ARGS)

# Publishing on GitHub Pages from a branch (the workflow in .github/workflows/book.yml is the
# other way): ghp-import commits SITE, plus a .nojekyll, to PUBLISH_BRANCH and force-pushes it
# to PUBLISH_REMOTE (a remote's name or a URL): the branch holds a build, not history anyone
# edits. `make publish` builds first (make: only what changed runs again); `make publish-site`
# pushes SITE as it is.
PUBLISH_REMOTE ?= origin
PUBLISH_BRANCH ?= gh-pages
SITE ?= _build/html

publish: all
	@$(MAKE) --no-print-directory publish-site

publish-site:
	@test -f $(SITE)/index.html || { echo "error: $(SITE)/index.html is missing: build the book first (make, or make publish)" >&2; exit 1; }
	@test -x $(BIN)/ghp-import || { echo "error: $(BIN)/ghp-import is missing: run make setup (the book extra installs it)" >&2; exit 1; }
	$(BIN)/ghp-import --no-jekyll --push --force --remote "$(PUBLISH_REMOTE)" --branch "$(PUBLISH_BRANCH)" \
	  --message "Publish the course book ($$(git rev-parse --short HEAD 2>/dev/null || echo a local build))" "$(SITE)"

constraints:
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf _build
