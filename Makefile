# Candor: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-quick test lint bench venv system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

demo: venv system-deps
	$(VENV)/bin/candor demo

demo-quick: venv system-deps
	$(VENV)/bin/candor demo --quick

test: venv system-deps
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict sidecar/candor_tracer sidecar/candor_sidecar sidecar/candor_cli operator/candor_operator demo/candor_demo

bench: venv system-deps
	@status=0; for b in bench/*.py; do echo "== $$b"; $(PY) $$b || status=1; done; exit $$status

clean:
	rm -rf $(VENV) demo-report .mypy_cache .ruff_cache .pytest_cache
