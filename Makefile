# `make run` and `make test` set everything up on first use: a .venv with the package installed editable.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: CPU-only torch wheels (a laptop without a GPU)
TORCH_INDEX ?=
INSTALL_LOG := $(VENV)/install.log
# the exact versions the test suite passed with: `make install` installs them (docs/development.md: how to bump)
LOCK := requirements/lock.txt
# `make test-latest`: the newest releases within pyproject.toml's bounds, not the lock
LATEST_VENV ?= .venv-latest
# make tensorboard PORT=6007 HOST=0.0.0.0 (reachable from other machines)
PORT ?= 6006
HOST ?= localhost

.PHONY: install run test test-fast test-latest lock lint format docs tensorboard bench clean

# pip's output goes to $(INSTALL_LOG); on failure its last lines are shown and make stops. With TORCH_INDEX, torch
# and torchvision alone (--no-deps) come from that index, their dependencies from the usual one: the lock pins torch
# without a local version (2.14.1, not 2.14.1+cpu), which the CPU wheels satisfy, and the CPU index need not have
# the lock's numpy. Then the environment must prove itself (imports, one torchvision operator) to count as installed.
$(VENV)/.installed: pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing apa_lightning and the versions of $(LOCK) into $(VENV) (pip's output: $(INSTALL_LOG)) ..."
	@{ $(PY) -m pip install --upgrade pip \
	  $(if $(TORCH_INDEX),&& $(PY) -m pip install --no-deps -c $(LOCK) torch torchvision --index-url $(TORCH_INDEX)) \
	  && $(PY) -m pip install -c $(LOCK) -e '.[dev]'; } > $(INSTALL_LOG) 2>&1 \
	  || { tail -n 20 $(INSTALL_LOG); echo "make install failed: pip's whole output is in $(INSTALL_LOG)"; exit 1; }
	@$(PY) -m apa_lightning.cli.install_check
	@touch $@
	@echo "Installed. Use it: source $(VENV)/bin/activate, or run $(PY) -m apa_lightning ..."

install: $(VENV)/.installed

run: install  ## train the default experiment (conv autoencoder on the embedded digits); ARGS="model=vae ..."
	$(PY) -m apa_lightning $(ARGS)

test: install  ## the whole suite, offline
	$(PY) -m pytest $(ARGS)

test-fast: install  ## the suite without the slow subprocess, notebook and training tests
	$(PY) -m pytest -m "not slow" $(ARGS)

# a venv of its own, upgraded to the newest releases pyproject.toml allows (its upper bounds, not the lock; with
# TORCH_INDEX, 2.14.1+cpu ranks above 2.14.1); the versions it got are in $(LATEST_VENV)/versions.txt, and
# `make lock` makes them the lock once the suite passes
test-latest:  ## the suite on the newest allowed releases; ARGS="tests/test_x.py" for part of it
	@test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	@echo "Upgrading $(LATEST_VENV) to the newest releases within pyproject.toml's bounds (pip's output: $(LATEST_VENV)/install.log) ..."
	@{ $(LATEST_VENV)/bin/python -m pip install --upgrade pip \
	  && $(LATEST_VENV)/bin/python -m pip install --upgrade --upgrade-strategy eager -e '.[dev]' \
	  $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)); } \
	  > $(LATEST_VENV)/install.log 2>&1 \
	  || { tail -n 20 $(LATEST_VENV)/install.log; echo "make test-latest: pip failed, see $(LATEST_VENV)/install.log"; exit 1; }
	@$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^#' | sed -E 's/\+[A-Za-z0-9.]+$$//' \
	  > $(LATEST_VENV)/versions.txt
	@grep -v '^#' $(LOCK) | diff - $(LATEST_VENV)/versions.txt | grep '^[<>]' \
	  || echo "The newest allowed releases are the lock's."
	$(LATEST_VENV)/bin/python -m apa_lightning.cli.install_check
	$(LATEST_VENV)/bin/python -m pytest $(ARGS)

lock:  ## make $(LATEST_VENV)'s versions the lock (after make test-latest passed with them)
	@test -f $(LATEST_VENV)/versions.txt || { echo "make lock: run make test-latest first"; exit 1; }
	{ grep '^#' $(LOCK); cat $(LATEST_VENV)/versions.txt; } > $(LOCK).new && mv $(LOCK).new $(LOCK)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

docs: install  ## README.md and docs/ built as a site into site/ (mkdocs.yml); a broken link or anchor fails it
	$(VENV)/bin/mkdocs build --strict

tensorboard: install  ## every run under outputs/, at http://$(HOST):$(PORT)/
	$(VENV)/bin/tensorboard --logdir outputs --host $(HOST) --port $(PORT) --load_fast=false

bench: install  ## data-loading (needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist), augmentation and training-loop benchmarks
	$(PY) benchmarks/loading.py
	$(PY) benchmarks/augmentation.py
	$(PY) benchmarks/loop_overhead.py

clean:
	rm -rf outputs site .pytest_cache .ruff_cache
