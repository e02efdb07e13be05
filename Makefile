# Everyday tasks; CI (.ci/run) runs the `quality` checks, the fast lane and `test` the same way.
.PHONY: style quality test-fast test docs notebooks

PYTHON ?= python

style:  ## format and fix what the linters can (Python and the notebooks' scripts)
	ruff format .
	ruff check --fix .
	jupytext --sync notebooks/[0-9][0-9]_*.py

quality:  ## what CI checks before the tests: lint, format, types, notebooks in sync, generated files current
	ruff check .
	ruff format --check .
	mypy nbhelpers
	$(PYTHON) -m nbhelpers.tutorials.bootstrap --check
	$(PYTHON) -m nbhelpers.tutorials.docs --check

test-fast:  ## the unit tests alone: no notebooks, no training runs, no servers (about 1.5 minutes on 2 cores)
	$(PYTHON) -m pytest tests -m "not slow"

test:  ## everything CI runs: unit tests, slow tests and every notebook under nbval
	$(PYTHON) -m pytest

docs:  ## regenerate the notebooks' first cells and badges and the figures in docs/ from their records
	$(PYTHON) -m nbhelpers.tutorials.bootstrap
	$(PYTHON) -m nbhelpers.tutorials.docs

notebooks:  ## run every notebook under nbval only
	$(PYTHON) -m pytest notebooks
