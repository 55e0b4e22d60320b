# tunlab: see README.md. Every target installs what it needs first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAB_DIR ?= $(CURDIR)/tunlab-notebooks
LAB_PORT ?= 8888
# JupyterHub's proxy (configurable-http-proxy) comes from npm, installed here, not globally.
HUB_DIR := .hub
HUB_LOCK := deploy/hub-proxy
CHP := $(HUB_DIR)/node_modules/.bin/configurable-http-proxy
# Every Python package comes from requirements.lock (all extras, pip, setuptools, wheel, uv;
# every file checked against its sha256), tunlab itself then without dependencies and without
# build isolation (which would fetch an unpinned setuptools). `make lock` refreshes the locks.
LOCK := requirements.lock
IMAGE_LOCK := deploy/image/requirements.lock
LOCK_FLAGS ?=

.PHONY: setup hub-proxy lock lab notebooks record check test test-fast bench lint cleanup clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@echo "==> creating $(VENV) from $(LOCK) (hash-checked), then tunlab itself"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --require-hashes -r $(LOCK)
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tunlab)" >/dev/null
	@touch $(STAMP)

# tests/test_hub.py and deploy/ run JupyterHub (the `hub` extra) behind this proxy: exactly the
# packages of deploy/hub-proxy/package-lock.json (integrity-checked), none of their install
# scripts run (none has one; root runs this).
hub-proxy: $(CHP)

$(CHP): $(HUB_LOCK)/package.json $(HUB_LOCK)/package-lock.json
	@echo "==> installing configurable-http-proxy into $(HUB_DIR) (npm ci, locked)"
	@mkdir -p $(HUB_DIR)
	@cp $(HUB_LOCK)/package.json $(HUB_LOCK)/package-lock.json $(HUB_DIR)/
	@npm ci --prefix $(HUB_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
	@touch $(CHP)

# Re-resolve the locks after a change of pyproject.toml or requirements.in, keeping every
# version that still fits (LOCK_FLAGS=--upgrade takes the newest instead; the proxy moves
# within the range in deploy/hub-proxy/package.json). One universal lock for Python >= 3.11
# (markers choose per version); the image's lock (lab and hub extras) takes the same versions.
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml requirements.in --all-extras --universal \
	  --python-version 3.11 --generate-hashes $(LOCK_FLAGS) -o $(LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml requirements.in --extra lab --extra hub \
	  --universal --python-version 3.11 --generate-hashes --no-emit-package uv \
	  -c $(LOCK) -o $(IMAGE_LOCK)
	cd $(HUB_LOCK) && npm install --package-lock-only --ignore-scripts --no-audit --no-fund

# JupyterLab opens a copy of the course (LAB_DIR, made and kept by `tunlab notebooks`), never
# the shipped notebooks/: autosave would write outputs into them. `tunlab lab` passes the flags
# (--allow-root, 127.0.0.1, LAB_PORT, no browser, no news, tunlab/data/jupyter settings).
lab: setup
	@$(VENV)/bin/tunlab cleanup >/dev/null || true
	$(VENV)/bin/tunlab lab $(LAB_DIR) --port $(LAB_PORT)

# Lessons are written as MyST markdown (notebooks/NN-*.md); this writes each .ipynb from its .md.
notebooks: setup
	$(PY) notebooks/build.py

# Re-record what the lessons show participants without root (runs the real lab: needs root).
record: setup
	$(PY) notebooks/record.py

# The fast loop, as any user (no root, no browser, no hub): lint, types, the layers contract and
# every test that needs none of those (their markers come from the fixtures they use).
check: lint
	$(PY) -m pytest -q -p no:cacheprovider -m "not root and not browser and not hub"

# The whole suite (as root: labs, tunnels, every lesson, the browser, the hub); it ends with a
# summary per tier (tests/unit, kernel, tunnel, lab, fate, course, e2e).
test: setup hub-proxy
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not browser and not hub and not slow"

bench: setup
	$(VENV)/bin/tunlab bench

lint: setup
	$(VENV)/bin/ruff check tunlab tests notebooks/build.py
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

cleanup: setup
	$(VENV)/bin/tunlab cleanup

clean:
	rm -rf $(VENV) $(HUB_DIR) *.egg-info .pytest_cache .ruff_cache .mypy_cache artifacts
