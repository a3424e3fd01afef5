# One-command entry points. Each target sets up .venv first (idempotent), so a fresh clone
# needs only Python 3.10+ and make. See README.md.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: setup book book-build student-book serve lab test lint unit notebooks student-notebooks browser normalize bench clean help

help:
	@echo "make book    - set up .venv, build the book (executing every chapter) and serve it on http://$(HOST):$(PORT)"
	@echo "make lab     - set up .venv and open JupyterLab on notebooks/"
	@echo "make test    - set up .venv and run every test (lint, unit/property, notebooks, grading, site and JupyterLab in Chromium)"
	@echo "make normalize - store notebooks/ the way JupyterLab saves them (run before committing a notebook)"
	@echo "make bench   - run the performance benchmarks (prints ratios against a same-process baseline)"
	@echo "make clean   - remove build output (keeps .venv)"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

setup: $(STAMP)

book-build: setup
	$(BIN)/python scripts/build_book.py

book: book-build serve

# The student edition (no solutions; downloads give the released notebooks).
student-book: setup
	BOOK_EDITION=student $(BIN)/python scripts/build_book.py

serve:
	@test -f _build/html/index.html || { echo "No site in _build/html: run 'make book-build' first"; exit 1; }
	@echo "Serving the book on http://$(HOST):$(PORT)/  (Ctrl-C to stop)"
	$(BIN)/python -m http.server $(PORT) --bind $(HOST) --directory _build/html

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: setup
	$(BIN)/python -m pytest tests -m "not browser" -q

notebooks: setup
	$(BIN)/python -m pytest --nbval-lax notebooks -q -p no:cacheprovider

student-notebooks: setup
	$(BIN)/python scripts/check_student_release.py

# Site tests (both editions) and the JupyterLab test, in Debian's Chromium.
browser: setup book-build student-book
	$(BIN)/python scripts/setup_browser.py
	$(BIN)/python -m pytest tests -m browser --ignore=tests/test_jupyterlab.py -q -rP -p no:cacheprovider --durations=8
	$(BIN)/python -m pytest tests/test_jupyterlab.py -m browser -q -s -p no:cacheprovider

normalize: setup
	$(BIN)/python scripts/normalize_notebooks.py

test: lint unit notebooks student-notebooks browser

bench: setup
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf _build artifacts .pytest_cache .hypothesis
