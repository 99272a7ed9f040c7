# `make run` and `make test` set everything up on first use: a .venv with the package installed editable.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install run test test-fast lint format tensorboard bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install  ## train the default experiment (conv autoencoder on the embedded digits); ARGS="model=vae ..."
	$(PY) -m apa_lightning $(ARGS)

test: install  ## the whole suite, offline
	$(PY) -m pytest $(ARGS)

test-fast: install  ## the suite without the slow subprocess, notebook and training tests
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

tensorboard: install  ## every run under outputs/
	$(VENV)/bin/tensorboard --logdir outputs

bench: install  ## data-loading benchmark (needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist)
	$(PY) benchmarks/loading.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
