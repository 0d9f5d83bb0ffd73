# Two commands do everything on a fresh machine: `make book` and `make test`.
# Each creates the virtual environment .venv and installs requirements.txt the first time.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mrtutor-installed

.PHONY: setup test book bench clean-book

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Unit tests, then every chapter executed in the quick tier by nbval.
test: setup
	MRTUTOR_MODE=quick $(PY) -m pytest -q -p no:cacheprovider tests

# Speed of the SENSE normal operator against its floor and against sigpy.
bench: setup
	$(PY) benchmarks/sense_normal.py
