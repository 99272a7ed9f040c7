# `make run` and `make test` set everything up on first use: a .venv with the package installed editable.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: CPU-only torch wheels (a laptop without a GPU)
TORCH_INDEX ?=
INSTALL_LOG := $(VENV)/install.log
# make tensorboard PORT=6007 HOST=0.0.0.0 (reachable from other machines)
PORT ?= 6006
HOST ?= localhost

.PHONY: install run test test-fast lint format tensorboard bench clean

# pip's output goes to $(INSTALL_LOG); on failure its last lines are shown and make stops
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing apa_lightning and its dependencies into $(VENV) (pip's output: $(INSTALL_LOG)) ..."
	@{ $(PY) -m pip install --upgrade pip \
	  $(if $(TORCH_INDEX),&& $(PY) -m pip install torch torchvision --index-url $(TORCH_INDEX)) \
	  && $(PY) -m pip install -e '.[dev]'; } > $(INSTALL_LOG) 2>&1 \
	  || { tail -n 20 $(INSTALL_LOG); echo "make install failed: pip's whole output is in $(INSTALL_LOG)"; exit 1; }
	@touch $@
	@echo "Installed. Use it: source $(VENV)/bin/activate, or run $(PY) -m apa_lightning ..."

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

tensorboard: install  ## every run under outputs/, at http://$(HOST):$(PORT)/
	$(VENV)/bin/tensorboard --logdir outputs --host $(HOST) --port $(PORT) --load_fast=false

bench: install  ## data-loading (needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist), augmentation and training-loop benchmarks
	$(PY) benchmarks/loading.py
	$(PY) benchmarks/augmentation.py
	$(PY) benchmarks/loop_overhead.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
