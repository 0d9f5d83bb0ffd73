# Two commands do everything on a fresh machine: `make book` and `make test`.
# Each creates the virtual environment .venv and installs requirements.txt the first time.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mrtutor-installed

.PHONY: setup test lab book student screenshots book-offline bench clean-book

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Unit tests, then every chapter executed in the quick tier by nbval: a chapter fails when a cell
# raises, so the assertions of its `# NBVAL_CHECK_OUTPUT` cells are its checks. tests/conftest.py
# times each chapter and the run fails if one takes 180 s or more.
CHAPTERS := $(wildcard notebooks/*.ipynb)
test: setup
	MRTUTOR_MODE=quick $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=180 tests $(CHAPTERS)

# JupyterLab on the chapters with their widgets live (ipywidgets 8 brings its JupyterLab extension), in the tier
# MRTUTOR_MODE names, quick unless set (the classroom tier). tests/test_lab.py drives this page in headless Chromium.
# JupyterLab refuses to run as root without --allow-root; containers often run as root.
lab: setup
	MRTUTOR_MODE=$${MRTUTOR_MODE:-quick} $(PY) -m jupyterlab --ServerApp.root_dir=notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# The website in book/_build/html: vendors MathJax, RequireJS and the widget manager the first time
# (npm), builds the demo data if missing, executes every chapter in MRTUTOR_MODE (default demo)
# with a per-tier execution cache, and fails if a page would load anything from the internet.
book: setup checkpoints/README.md
	$(PY) book/build.py

# The student edition in book/_build/student: every chapter with its solutions replaced by stubs (notebooks/),
# and their website (book/_build/student/book/_build/html), executed in MRTUTOR_MODE like the book. Grade a filled-in chapter with
# `$(PY) book/grade.py SUBMISSION.ipynb` (see book/teaching.md).
student: setup checkpoints/README.md
	$(PY) book/student.py

# The table of every checkpoint's record (name, recipe, command, epochs, time, device, validation score).
checkpoints/README.md: $(wildcard checkpoints/*.json) mrtutor/checkpoints.py | setup
	$(PY) -m mrtutor.checkpoints

# Screenshots of the front page and chapter 1 in headless Chromium (installed from Debian when
# missing) in book/_build/screenshots/; fails if a page requests anything from the internet.
screenshots: book
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) book/screenshots.py

# The book build inside a network namespace with no network at all: proves it builds offline.
book-offline: setup
	$(PY) book/vendor_assets.py
	unshare --net --map-root-user sh -c 'ip link set lo up && $(PY) book/build.py'

clean-book:
	rm -rf book/_build book/notebooks

# Speed of the SENSE normal operator against its floor and against sigpy, then the book's reconstructions against
# BART and sigpy at matched accuracy (BART is installed by apt-get when missing and possible); the tables are kept
# for the book's page on speed (book/speed.md).
bench: setup
	$(PY) benchmarks/sense_normal.py --record
	$(PY) benchmarks/peers.py --record
