# embedpipe: `make test` and `make run` work on a fresh clone (they create .venv themselves).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EMBEDPIPE := $(VENV)/bin/embedpipe
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test run bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $@

data/movielens.csv: | install
	$(PY) -m pipelines.tools.datasets movielens $@

data/words.txt: | install
	$(PY) -m pipelines.tools.datasets words $@

data/graph.csv: | install
	$(PY) -m pipelines.tools.datasets graph $@

test: install
	$(PY) -m pytest -q tests

run: install data/movielens.csv
	$(EMBEDPIPE) run examples/movielens.yaml --output runs/movielens
	$(EMBEDPIPE) neighbors runs/movielens/LATEST --entity movie --key "Toy Story (1995)" -k 10
	$(EMBEDPIPE) neighbors runs/movielens/LATEST --entity movie --key "Star Wars: Episode IV - A New Hope (1977)" -k 10

bench: install data/movielens.csv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs benchmarks/out
