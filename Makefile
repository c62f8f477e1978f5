# Two entry points (README): `make serve` starts the service, `make test` runs the tests.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/local.yaml
# Extra pip arguments for torch alone, e.g. a CPU-only index on hosts without a GPU.
TORCH_PIP_ARGS ?=

.PHONY: install serve test bench models clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, pinned: resolving it inside the full install could pull a CUDA build.
	$(PY) -m pip install $(TORCH_PIP_ARGS) torch==2.13.0
	$(PY) -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

serve: install
	RAY_AUTH_MODE=disabled $(VENV)/bin/serve run $(CONFIG)

test: install
	$(PY) -m pytest -q -ra tests

bench: install
	$(PY) benchmarks/engine_batching.py

models: install
	$(PY) -m serve_app.tiny_models models/tiny

clean:
	rm -rf $(VENV) models build *.egg-info
