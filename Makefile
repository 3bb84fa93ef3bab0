# One-command entry points. Both create .venv on a fresh machine (Python 3.11 only).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser demo test test-all bench clean lint

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[teacher,student,dev]'
	touch $(STAMP)

## browser: Debian's chromium for the report's browser test, installed as root where missing
browser:
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "note: apt-get could not install chromium: the report's browser test will be skipped"; \
	else echo "note: chromium is missing and this is not root with apt-get: the report's browser test will be skipped (install Debian's chromium package)"; fi; }

setup: $(STAMP) browser

## demo: set up and run the main job on embedded defaults (a local folder under ./runs/demo)
demo: $(STAMP)
	$(BIN)/s2dit demo

## test: set up and run the default test suite (well under 20 minutes on 2 cores)
test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
