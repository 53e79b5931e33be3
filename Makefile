# Two commands do everything on a fresh machine (README.md):
#   make demo   install, then validate, test and evaluate the default rule pack on demo data
#   make test   install, then run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AS_OF := 2026-11-01T00:00:00+08:00

.PHONY: install demo test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# Tests also need the test tools and PySpark (the Spark case runs in every test run).
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,spark]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/memberrules demo demo-data --members 10000
	$(BIN)/memberrules validate rules
	$(BIN)/memberrules test rules
	$(BIN)/memberrules evaluate rules --data demo-data --as-of $(AS_OF) --out out/results.jsonl

# The heavy cases (Spark, benchmarks) run here too, at a small size.
test: $(VENV)/.installed-test
	MEMBERRULES_SPARK=1 $(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/bench_validate.py
	$(BIN)/python bench/bench_python.py
	$(BIN)/python bench/bench_scale.py
