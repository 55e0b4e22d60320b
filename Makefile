# tunlab: see README.md. Every target installs what it needs first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAB_DIR ?= $(CURDIR)/tunlab-notebooks
LAB_PORT ?= 8888
# JupyterHub's proxy (configurable-http-proxy) comes from npm, installed here, not globally.
HUB_DIR := .hub
CHP := $(HUB_DIR)/node_modules/.bin/configurable-http-proxy

.PHONY: setup hub-proxy lab notebooks record test test-fast bench lint cleanup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) with tunlab and its lab, test and hub extras"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[lab,test,hub]'
	@$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tunlab)" >/dev/null
	@touch $(STAMP)

# tests/test_hub.py and deploy/ run JupyterHub (the `hub` extra) behind this proxy.
hub-proxy: $(CHP)

$(CHP):
	@echo "==> installing configurable-http-proxy into $(HUB_DIR) (npm)"
	@npm install --prefix $(HUB_DIR) --no-audit --no-fund --loglevel=error configurable-http-proxy@4 >/dev/null

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

test: setup hub-proxy
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not browser and not slow"

bench: setup
	$(VENV)/bin/tunlab bench

lint: setup
	$(VENV)/bin/ruff check tunlab tests notebooks/build.py

cleanup: setup
	$(VENV)/bin/tunlab cleanup

clean:
	rm -rf $(VENV) $(HUB_DIR) *.egg-info .pytest_cache .ruff_cache artifacts
