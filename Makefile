# The pipeline's entry points. `make demo` and `make test` are all a new user needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export MPLBACKEND := Agg

.PHONY: setup test demo clean

# The stamp is newer than requirements.txt once the environment holds it: setup then does nothing.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) data-extraction.py --synthetic --out demo/MICRO --n-images 40 --seed 42
	$(PY) data-preprocessing.py --input demo/MICRO --output demo/processed_MICRO

clean:
	rm -rf demo results processed_MICRO
