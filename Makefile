# The two commands a newcomer runs: `make demo` and `make test` (README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU wheel this kind of machine carries; the project only asks torch>=2.4.
TORCH ?= torch==2.13.0
EXTRAS ?= ray,spark,dev

.PHONY: install demo test test-slow lint format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/lvd demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -q

test-slow: install  # the long end-to-end checks the default suite leaves out (minutes each)
	$(BIN)/pytest -q -m slow

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache
