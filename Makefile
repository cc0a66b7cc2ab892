# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv/ (via scripts/bootstrap.sh) when it is missing or stale.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Where the demo writes: the sample ImageNet tree, and the data root (OUT).
DEMO_SRC ?= data/sample
DEMO_OUT ?= data/out
# The demo's training length: 3 epochs of the smoke preset (measured: benchmarks/README.md).
DEMO_EPOCHS ?= 3

.PHONY: help install lint format test demo clean

help:
	@echo "make demo     install, write the sample ImageNet tree, run the pipeline on it"
	@echo "make test     install, lint (ruff), run the test suite"
	@echo "make install  only create/refresh .venv/"
	@echo "make format   apply ruff's formatter and safe fixes"
	@echo "make clean    remove .venv/ and data/"

$(VENV)/.installed: pyproject.toml setup.py shards/_sums.c scripts/bootstrap.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/bootstrap.sh
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# pytest exits non-zero (5) when it collected no test, so an empty run fails.
test: lint
	$(BIN)/python -m pytest

demo: install
	$(BIN)/alexnet sample-data $(DEMO_SRC)
	$(BIN)/alexnet pipeline $(DEMO_SRC) $(DEMO_OUT) --run demo --shard-size 200 \
	    --set epochs=$(DEMO_EPOCHS)
	@echo
	@echo "Sample ImageNet tree: $(DEMO_SRC); shards, stats, the smoke run and its evaluation:"
	@echo "$(DEMO_OUT) (run folder: $(DEMO_OUT)/runs/demo), made by the alexnet-pipeline Prefect"
	@echo "flow (state in $(DEMO_OUT)/.prefect). Run it again: every task is a cache hit. Each stage"
	@echo "is also a command: alexnet preprocess | stats | train | evaluate (--help)."
	@echo
	@echo "The run on one page: $(DEMO_OUT)/runs/demo/report.html (open it in a browser)"
	@echo
	@echo "Classify an image with the trained run:"
	$(BIN)/alexnet predict $(DEMO_OUT) --run demo --top 3 $$(ls $(DEMO_SRC)/val/*.JPEG | head -1)

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache build shards/*.so .whl
