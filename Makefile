# lmmnotes: two commands do everything on a fresh machine.
#   make book   build the HTML book into _build/html
#   make test   unit tests, nbval over every notebook, strict builds of the book and of the
#               student edition (with a search for leaked solutions); every part runs and is reported
# Both create the virtual environment .venv (from requirements/constraints.txt) when it is missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
NOTEBOOKS := $(sort $(wildcard book/*.ipynb))

.PHONY: help env book student test unit nbval book-check student-check test-portable browser-test \
	execute mutation-probe lab benchmark clean pdf pdf-student pdf-check

help:
	@echo "make book     build the HTML book into _build/html (creates .venv if needed)"
	@echo "make test     unit tests, nbval, strict builds of the book and of the student edition"
	@echo "make test-portable  nbval under several OpenBLAS kernels and with theta moved by 1e-6"
	@echo "make browser-test   open every page of both editions in headless Chromium"
	@echo "make student  build the student edition (no solutions) into _build/student/html"
	@echo "make pdf      build the book as one PDF, _build/pdf/lmmnotes.pdf (needs TeX Live, see README)"
	@echo "make pdf-student  the student edition's PDF, _build/pdf/lmmnotes-student.pdf"
	@echo "make pdf-check    build both PDFs strictly and check them (tools/check_pdf.py)"
	@echo "make execute  re-execute every notebook in place, in order"
	@echo "make mutation-probe  plant one-line bugs in a copy of the package; the tests must catch each"
	@echo "make lab      open the notebooks in JupyterLab"
	@echo "make benchmark  print the speed figures"
	@echo "make clean    remove .venv and _build"

env: $(STAMP)

# The environment: exact versions from the constraints file, so that nbval compares the
# committed outputs with outputs of the very same library versions.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[book,test]"
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build .
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

# The student edition is built from a copy of the sources without the solutions (see
# tools/student_edition.py), so neither its pages nor its downloadable notebooks contain them.
student: $(STAMP)
	$(BIN)/python tools/student_edition.py sources _build/student-src  # empties it first
	$(BIN)/jupyter-book build _build/student-src $(JB_FLAGS)
	rm -rf _build/student && mkdir -p _build/student
	cp -r _build/student-src/_build/html _build/student/html
	@echo "The student edition is at file://$(CURDIR)/_build/student/html/index.html"

# The PDF editions: Sphinx's LaTeX builder, then XeLaTeX through the Makefile Sphinx writes next
# to the .tex (Debian's TeX Live: see the README). Each edition builds in a directory of its own,
# apart from the HTML build, so the two never share Sphinx's cached environment.
PDF_DIR := _build/pdf
LATEXMKOPTS := -interaction=nonstopmode -halt-on-error -file-line-error
pdf: $(STAMP)
	$(BIN)/jupyter-book build . --builder latex --path-output _build/pdf-full $(JB_FLAGS)
	$(MAKE) -C _build/pdf-full/_build/latex all-pdf LATEXMKOPTS="$(LATEXMKOPTS)"
	mkdir -p $(PDF_DIR) && cp _build/pdf-full/_build/latex/lmmnotes.pdf $(PDF_DIR)/lmmnotes.pdf
	@echo "The PDF is at $(CURDIR)/$(PDF_DIR)/lmmnotes.pdf"

# From the same stripped sources as make student (tools/student_edition.py).
pdf-student: $(STAMP)
	$(BIN)/python tools/student_edition.py sources _build/student-src  # empties it first
	$(BIN)/jupyter-book build _build/student-src --builder latex $(JB_FLAGS)
	$(MAKE) -C _build/student-src/_build/latex all-pdf LATEXMKOPTS="$(LATEXMKOPTS)"
	mkdir -p $(PDF_DIR) && cp _build/student-src/_build/latex/lmmnotes.pdf $(PDF_DIR)/lmmnotes-student.pdf
	@echo "The student PDF is at $(CURDIR)/$(PDF_DIR)/lmmnotes-student.pdf"

# Both PDFs built strictly, then checked against the sources (tools/check_pdf.py), and the student
# PDF searched for the text of each solution (the full HTML edition supplies the fingerprints).
pdf-check: book
	$(MAKE) --no-print-directory pdf JB_FLAGS="--warningiserror --keep-going --all"
	$(MAKE) --no-print-directory pdf-student JB_FLAGS="--warningiserror --keep-going --all"
	@failed=0; \
	$(BIN)/python tools/check_pdf.py $(PDF_DIR)/lmmnotes.pdf --latex-dir _build/pdf-full/_build/latex || failed=1; \
	$(BIN)/python tools/check_pdf.py $(PDF_DIR)/lmmnotes-student.pdf --student \
		--latex-dir _build/student-src/_build/latex || failed=1; \
	$(BIN)/python tools/student_edition.py check-pdf _build/html $(PDF_DIR)/lmmnotes.pdf \
		$(PDF_DIR)/lmmnotes-student.pdf || failed=1; \
	exit $$failed

# make test runs every part, even after one has failed, and reports each.
TEST_PARTS := unit nbval book-check student-check
test: $(STAMP)
	@failed=0; report=""; \
	for part in $(TEST_PARTS); do \
		echo "=== make $$part"; start=$$(date +%s); \
		if $(MAKE) --no-print-directory $$part; then result=passed; else result=FAILED; failed=1; fi; \
		report="$$report  make $$part: $$result ($$(( $$(date +%s) - start )) s)\n"; \
	done; \
	printf '\nmake test:\n%b' "$$report"; exit $$failed

unit: $(STAMP)
	$(BIN)/python -m pytest tests

NBVAL := -m pytest --nbval --nbval-current-env --nbval-cell-timeout=300 -p no:randomly $(NOTEBOOKS)
nbval: $(STAMP)
	$(BIN)/python $(NBVAL)

# The strict build writes where make book does, so the browser test reads what it checked.
book-check: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going --all
	@echo "Strict book build passed (output in _build/html)"

# Builds the student edition strictly and compares it with the full edition (a build takes seconds).
student-check: book
	$(MAKE) --no-print-directory student JB_FLAGS="--warningiserror --keep-going --all"
	$(BIN)/python tools/student_edition.py check _build/html _build/student

# nbval under each OpenBLAS kernel and with every fitted theta moved by 1e-6 (tools/portability.py).
test-portable: $(STAMP)
	$(BIN)/python tools/portability.py $(NBVAL)

# Every page of both editions in headless Chromium (Debian's chromium package), after MathJax,
# at 1280 px (equations and code fit their column) and at 390 px (no sideways scrolling).
browser-test: book student
	$(BIN)/python tools/browser_check.py _build/html _build/student/html --screenshots _build/screenshots

execute: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py $(NOTEBOOKS)

# One-line bugs planted in a copy of the package; the unit tests must catch each (a few minutes).
mutation-probe: $(STAMP)
	$(BIN)/python tools/mutation_probe.py

# Jupyter refuses to start as root (as in many containers) unless told it may.
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) jupyterlab
	$(BIN)/jupyter lab book/ $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

# The peers (lme-python, mixedlm, statsmodels) live in their own venv, never in .venv: make
# benchmark compares with them when it exists (benchmarks/peers.py --setup creates it).
PEERS_VENV ?= /work/peers-venv
benchmark: $(STAMP)
	$(BIN)/python benchmarks/run.py
	@if [ -x $(PEERS_VENV)/bin/python ]; then PEERS_VENV=$(PEERS_VENV) $(BIN)/python benchmarks/peers.py; \
	else echo "no peers' venv at $(PEERS_VENV): $(BIN)/python benchmarks/peers.py --setup creates it"; fi

clean:
	rm -rf $(VENV) _build .pytest_cache .hypothesis
