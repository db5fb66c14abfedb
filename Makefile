# One-command set-up: every target below creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
# torch first, pinned to the CPU build available here; override e.g. TORCH_SPEC="torch" on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HTML := docs/_build/html

.PHONY: install demo test test-quick tutorials docs docs-check browser test-all lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,doc,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m sclatent.demo --output demo_output

# Everything CI checks: linters, the test suite, the tutorials run top to bottom, the docs built
# with warnings as errors, and the built pages opened in a headless browser.
test: test-quick tutorials docs docs-check

# Linters and the test suite only (a few minutes).
test-quick: lint
	$(PY) -m pytest

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
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache docs/_build docs/generated
