# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Both first create or reuse the environment (tools/setup_env.sh): the first
# run on a machine installs the pinned stack and compiles mmcv (~20 min on 2
# cores), later runs and fresh clones reuse it in seconds.
PYTHON ?= python3
VENV_PY := .venv/bin/python

.PHONY: env test demo

env:
	@PYTHON=$(PYTHON) bash tools/setup_env.sh

test: env
	$(VENV_PY) -m pytest tests

demo: env
	$(VENV_PY) tools/demo.py
