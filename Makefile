# tunlab: see README.md. Every target installs what it needs first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAB_DIR ?= $(CURDIR)/tunlab-notebooks
LAB_PORT ?= 8888

.PHONY: setup lab notebooks record test test-fast bench lint cleanup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) with tunlab and its lab and test extras"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[lab,test]'
	@$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tunlab)" >/dev/null
	@touch $(STAMP)

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

test: setup
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
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache artifacts
