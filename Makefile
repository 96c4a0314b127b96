# lmmnotes: two commands do everything on a fresh machine.
#   make book   build the HTML book into _build/html
#   make test   unit tests, nbval over every notebook, and the book build with warnings as errors
# Both create the virtual environment .venv (from requirements/constraints.txt) when it is missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
NOTEBOOKS := $(sort $(wildcard book/*.ipynb))

.PHONY: help env book student test unit nbval book-check execute lab benchmark clean

help:
	@echo "make book     build the HTML book into _build/html (creates .venv if needed)"
	@echo "make test     run the unit tests, nbval over the notebooks and a strict book build"
	@echo "make student  build the student edition (no solutions) into _build/student/html"
	@echo "make execute  re-execute every notebook in place, in order"
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

student: $(STAMP)
	$(BIN)/python tools/student_config.py _config.yml _build/student_config.yml
	$(BIN)/jupyter-book build . --config _build/student_config.yml --path-output _build/student-tmp
	rm -rf _build/student && mkdir -p _build/student && mv _build/student-tmp/_build/html _build/student/html && rm -rf _build/student-tmp
	@echo "The student edition is at file://$(CURDIR)/_build/student/html/index.html"

test: unit nbval book-check

unit: $(STAMP)
	$(BIN)/python -m pytest tests

nbval: $(STAMP)
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout=300 -p no:randomly $(NOTEBOOKS)

book-check: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going --all --path-output _build/check
	@echo "Strict book build passed (output in _build/check/_build/html)"

execute: $(STAMP)
	for nb in $(NOTEBOOKS); do \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 \
			--ExecutePreprocessor.kernel_name=python3 "$$nb" || exit 1; \
	done

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) jupyterlab
	$(BIN)/jupyter lab book/

benchmark: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) _build .pytest_cache .hypothesis
