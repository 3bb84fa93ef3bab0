# One-command entry points. Both create .venv on a fresh machine (Python 3.11 only).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned, as a CPU build: an unpinned torch from PyPI is a multi-GB CUDA build.
# PyTorch's CPU wheel index is used explicitly (PyPI as the extra index). Where that index cannot
# be reached (an offline machine whose pip finds the pinned wheel on disk through its find-links
# or a mirror, as this project's build machines do: pip would retry the index per package, 78 s
# measured, then take the local wheel anyway), the pinned install runs with pip's own
# configuration, with a note. The reachability check is bounded: TORCH_INDEX_WAIT seconds for the
# whole look-up, name resolution included (a failed DNS look-up answers in under a second).
TORCH_PIN := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_WAIT ?= 5
PYPI_INDEX ?= https://pypi.org/simple
define install_torch
if timeout $(TORCH_INDEX_WAIT) $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/torch/', timeout=$(TORCH_INDEX_WAIT))" >/dev/null 2>&1; then \
  echo "$(TORCH_PIN) from $(TORCH_INDEX)"; \
  $(BIN)/python -m pip install --quiet $(TORCH_PIN) --index-url $(TORCH_INDEX) --extra-index-url $(PYPI_INDEX); \
else \
  echo "note: $(TORCH_INDEX) could not be reached within $(TORCH_INDEX_WAIT) s: $(TORCH_PIN) from pip's configured indexes and find-links"; \
  $(BIN)/python -m pip install --quiet $(TORCH_PIN); \
fi
endef

.PHONY: setup browser torch demo test test-all bench clean lint

# The project installs with the image's lock as constraints (infra/requirements.lock): a venv, CI
# and the image run the same versions (tests/test_image_lock.py).
LOCK := infra/requirements.lock

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(install_torch)
	$(BIN)/python -m pip install --quiet -e '.[teacher,student,tracking,dev]' -c $(LOCK)
	touch $(STAMP)

## torch: (re)install the pinned CPU torch into an existing venv, as the set-up does
torch:
	@$(install_torch)

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
	$(BIN)/python -m pytest -q --durations=25  # the slowest tests, printed for the suite-time budget

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
