# alignpipe — `make demo` and `make test` each install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= out/demo
# Extra prerequisites of `make test` (e.g. the checkov venv) are added by mk/*.mk.
TEST_DEPS :=
-include mk/*.mk

.PHONY: install demo test test-fast bench clean system-deps

# torch first, pinned to the CPU build, so that nothing pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL (Debian package) for the integration tests' MLflow backend.
system-deps:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing postgresql (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

demo: install
	$(VENV)/bin/alignpipe demo --workdir $(WORKDIR)

test: install system-deps $(TEST_DEPS)
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not integration and not slow"

bench: install
	$(PY) bench/bench_storage.py
	$(PY) bench/stages_vs_plain.py
	$(PY) bench/rl_engines.py

clean:
	rm -rf out .pytest_cache

