# Two entry points, both self-contained on a fresh machine:
#   make demo   - create .venv, install, plan the shipped example site, then run the
#                 daemon on the simulated example fleet through a curtail signal
#   make test   - create .venv, install, lint, type-check and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?= ../shared/data
EXAMPLE := deploy/examples/west-texas-30mw.toml
DEMO_OUT ?= demo-out

.PHONY: demo test lint typecheck unit bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# With ../shared/data present the demo plans a real ERCOT day (HB_WEST, 2023-08-10,
# a heat-wave day with a price spike); without it, the example's labelled demo series.
demo: $(VENV)/.installed
	@mkdir -p $(DEMO_OUT)
	@if [ -f $(DATA)/ercot_rtm_spp_15min_hubs_2021_2025.csv ]; then \
	  set -x; $(VENV)/bin/gridsched plan --config $(EXAMPLE) \
	    --prices $(DATA)/ercot_rtm_spp_15min_hubs_2021_2025.csv --price-format ercot-rtm \
	    --price-column HB_WEST --start 2023-08-10T05:00:00Z --horizon 48h --step 5min \
	    --events deploy/examples/events-2023-08-10.json \
	    --csv $(DEMO_OUT)/plan.csv --plot $(DEMO_OUT)/plan.png --json-out $(DEMO_OUT)/plan.json; \
	else \
	  set -x; $(VENV)/bin/gridsched plan --config $(EXAMPLE) --start 2023-08-10T05:00:00Z \
	    --horizon 48h --step 5min --events deploy/examples/events-2023-08-10.json \
	    --csv $(DEMO_OUT)/plan.csv --plot $(DEMO_OUT)/plan.png --json-out $(DEMO_OUT)/plan.json; \
	fi
	@# The daemon on the shipped simulated site: discover, plan, apply, then a signed curtail.
	$(PY) -m scheduler.cli.demo --config deploy/examples/simulated-site.toml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	$(PY) -m pytest -q

test: lint typecheck unit

bench: $(VENV)/.installed
	$(PY) benchmarks/plan_latency.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
