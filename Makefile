# Quick start: `make demo` opens napari with the plugin; `make test` runs the whole test suite.
# Both set up everything they need first: system packages (apt), then a virtual environment in .venv with a
# CPU build of torch pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test system-deps benchmark clean

$(VENV)/.installed: pyproject.toml constraints.txt
	bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

system-deps:
	bash scripts/system-deps.sh

demo: system-deps $(VENV)/.installed
	$(BIN)/napari-sam demo

test: system-deps $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra

benchmark: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/predictor.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
