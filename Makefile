# Quick start:  make demo  (run the bridge fed by the bundled S-360 simulator)
#               make test  (lint and run the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python

# The project, its test tools and the simulator (a development tool, its own distribution).
$(VENV)/.installed: setup.cfg pyproject.toml simulator/pyproject.toml \
		tests/external_plugin/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]" -e simulator -e tests/external_plugin
	touch $@

.PHONY: install demo test bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/s360bridge demo --config config/myvenue.yaml

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/run.py
