# Quick start: `make train` (main job on the embedded corpus) and `make test` (the test suite).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
OUTPUT_DIR ?= runs/ems-default

.PHONY: setup train test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	# CPU wheel first, so the dependency range below never pulls a multi-GB CUDA build
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[test,faiss,st,onnx,mteb]"
	touch $@

setup: $(VENV)/.installed

train: setup
	$(VENV)/bin/accelerate launch --config_file accelerate.yaml scripts/train.py --output_dir $(OUTPUT_DIR)

test: setup
	$(PYTHON) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(PYTHON) scripts/import_graph.py
