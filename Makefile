# The two commands: `make demo` and `make test`. Both set up everything they need first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rmswatch-installed
# torch==2.13.0 is a local CPU wheel on our machines; any other spec pulls gigabytes of CUDA.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test lint typecheck unit bench system-deps install clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e '.[dev,postgres,lightning,transformers]'
	touch $@

install: $(STAMP)

# Prometheus (with promtool), Alertmanager, Chromium and chromedriver from Debian's packages.
system-deps:
	@bash scripts/install-system-deps.sh

demo: $(STAMP)
	$(VENV)/bin/rmswatch demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The inner loop: no external program (PostgreSQL, Prometheus, Alertmanager, Chromium) and
# nothing slow (subprocess trainings, crash and multi-writer tests); `make test` runs them all.
unit: $(STAMP)
	$(PY) -m pytest -m "not integration and not slow"

test: $(STAMP) system-deps lint typecheck
	$(PY) -m pytest

docs: $(STAMP)
	$(PY) -m rmswatch.generators.metrics_docs --write docs/metrics.md
	$(PY) -m rmswatch.generators.grafana --write dashboards/grafana
	$(PY) -m rmswatch rules -o dashboards/prometheus/rules.yml \
		--tests-output dashboards/prometheus/rules.test.yml
	$(PY) benchmarks/assemble.py

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/bench_hooks.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
