# Quick start:  make demo  (run the bridge fed by the bundled S-360 simulator)
#               make test  (lint and run the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python

# The project, its test tools and the simulator (a development tool, its own distribution);
# never the tests' plugins, which the tests install where only they look (earlier versions put
# tests/external_plugin here: it goes, or a user's `s360bridge plugins` would list it).
$(VENV)/.installed: setup.cfg pyproject.toml simulator/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=77"
	$(PY) -m pip install -q -e ".[test]" -e simulator
	$(PY) -m pip uninstall -qq -y s360bridge-surveys
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
