# One-command set-up: every target below creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
# torch first, pinned to the CPU build available here; override e.g. TORCH_SPEC="torch" on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HTML := docs/_build/html

# The second environment: the newest Python found (pyenv's or on PATH: 3.13, else 3.12, else python3; or NEWEST_PYTHON)
# with the newest release of every dependency, for the test suite only.
NEWEST_VENV ?= .venv-newest
NEWEST_PYTHON ?=
NEWEST_PY := $(NEWEST_VENV)/bin/python
NEWEST_STAMP := $(NEWEST_VENV)/.installed
VERSIONS := import sys, importlib.metadata as m; print("Python", sys.version.split()[0], "|", ", ".join( \
  f"{d} {m.version(d)}" for d in ("torch", "lightning", "anndata", "scanpy", "scvi-tools", "pandas", "numpy", "scipy")))

.PHONY: install demo test test-quick test-newest tutorials docs docs-check browser test-all lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,doc,bench]"
	touch $(STAMP)

install: $(STAMP)

# The newest torch from PyPI, a CUDA build on Linux (about 4.7 GB; the CPU-only builds are not on PyPI).
$(NEWEST_STAMP): pyproject.toml
	@py="$(NEWEST_PYTHON)"; \
	for v in 3.13 3.12; do \
	  [ -n "$$py" ] && break; \
	  for p in $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python3 2>/dev/null | sort -V | tail -n 1) \
	           $$(command -v python$$v); do \
	    [ "$$("$$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$$v" ] && { py="$$p"; break; }; \
	  done; \
	done; \
	[ -n "$$py" ] || { py=$$(command -v python3); echo "test-newest: no Python 3.13 or 3.12 found (NEWEST_PYTHON=... names one)"; }; \
	echo "test-newest: $$("$$py" --version) from $$py"; \
	rm -rf $(NEWEST_VENV) && "$$py" -m venv $(NEWEST_VENV)
	$(NEWEST_PY) -m pip install --quiet --upgrade pip
	$(NEWEST_PY) -m pip install --quiet --upgrade torch
	$(NEWEST_PY) -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]"
	touch $@

demo: $(STAMP)
	$(PY) -m sclatent.demo --output demo_output

# Everything CI checks: linters, the test suite, the tutorials run top to bottom, the docs built
# with warnings as errors, and the built pages opened in a headless browser.
test: test-quick tutorials docs docs-check

# Linters and the test suite only (a few minutes).
test-quick: lint
	$(PY) -m pytest

# The test suite in the second environment (newest Python and dependencies); CI runs it after `make test`.
test-newest: $(NEWEST_STAMP)
	@echo "test-newest: $$($(NEWEST_PY) -c '$(VERSIONS)')"
	$(NEWEST_PY) -m pytest

tutorials: $(STAMP)
	$(PY) -m pytest --nbmake --nbmake-timeout=1800 tutorials -o addopts="" -o filterwarnings=""

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W -n --keep-going -b html docs $(HTML)

docs-check: browser $(STAMP)
	SCLATENT_DOCS_HTML=$(HTML) $(PY) -m pytest tests/docs -m docs -o addopts=""

# Debian's Chromium and ChromeDriver for the docs test, installed when missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

test-all: $(STAMP)
	$(PY) -m pytest -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tutorials
	$(VENV)/bin/ruff format --check src tests benchmarks tutorials

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks tutorials
	$(VENV)/bin/ruff format src tests benchmarks tutorials

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(NEWEST_VENV) demo_output .pytest_cache .ruff_cache docs/_build docs/generated
