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

.PHONY: demo test lint typecheck unit bench clean lock upgrade-lock mutation

# constraints.txt pins every package at the version the test suite last passed with, so a
# fresh machine installs exactly that; `make lock` rewrites it from the venv, `make
# upgrade-lock` resolves the newest versions pyproject.toml allows (README: upgrading).
LOCK := constraints.txt

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	touch $@

# The venv's versions, as tested, become the lock (after adding a dependency:
# pip install it into .venv, run make test, then make lock).
lock:
	@printf '%s\n' '# Versions the test suite passed with; installed by make (pip install -c).' \
	  '# Regenerate: make lock (from .venv) or make upgrade-lock (newest allowed), then make test.' \
	  "# Python $$($(PY) -c 'import platform; print(platform.python_version())')" > $(LOCK).tmp
	$(PY) -m pip freeze --exclude-editable >> $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

# Newest versions pyproject.toml allows, resolved in a scratch venv; run make test after.
upgrade-lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[dev]'
	$(MAKE) lock PY=.lock-venv/bin/python
	rm -rf .lock-venv
	rm -f $(VENV)/.installed

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

# The suite under coverage: daemon and CLI subprocesses are measured too, then combined
# and reported (the total is the last line). Tests run in TEST_WORKERS processes
# (pytest-xdist): most of a test's time is waiting on a daemon, a simulator or a socket, so
# four workers halve the suite's time even on two cores (docs/testing.md, "Suite time");
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 4
unit: $(VENV)/.installed
	rm -rf .coverage-data
	$(PY) -m coverage run -m pytest -q -n $(TEST_WORKERS)
	$(PY) -m coverage combine -q
	$(PY) -m coverage report

test: lint typecheck unit

# Mutation testing of the safety-critical modules ([tool.mutmut] in pyproject.toml);
# long (hours on 2 cores), so not part of make test. Scores: docs/testing.md. One
# module's mutants: make mutation MUTANTS='scheduler.planner.shedding*'
mutation: $(VENV)/.installed
	$(PY) -m pip install -q -c $(LOCK) 'mutmut>=3.3'
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(VENV)/bin/mutmut results

bench: $(VENV)/.installed
	$(PY) benchmarks/plan_latency.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache .coverage-data mutants
