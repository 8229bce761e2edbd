# Set-up and entry points. `make train` and `make test` work on a fresh machine
# with nothing but Python 3.11: they create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
# torch is installed before the package so that a pinned CPU wheel is used;
# override for a CUDA build, e.g. make test TORCH="torch==2.13.0 --index-url ..."
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-cluster lint bench mutation clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q $(TORCH)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

train: install
	$(BIN)/ippo train env=speaker_listener $(ARGS)

test: install
	$(BIN)/python -m pytest -n 2 -q tests

# SLURM, Ray and two-node torchrun on this machine, on loopback (root; installs slurm-wlm
# and munge with apt when missing): see tests/cluster/run.sh and docs/cluster.md
test-cluster: install
	$(BIN)/pip install --disable-pip-version-check -q -e '.[ray]'
	bash tests/cluster/run.sh

lint: install
	$(BIN)/ruff check ippo_cli tests benchmarks

# every benchmark (hours); `make bench ARGS=speed` for the speed tables alone (minutes)
bench: install
	$(BIN)/python -m benchmarks $(ARGS)

# mutation testing of the learning core (an hour or more; not in CI): see tests/mutation.py
mutation: install
	$(BIN)/pip install --disable-pip-version-check -q mutmut==3.8.1
	rm -rf mutants  # mutmut keeps results across runs but cannot see config or data changes
	$(BIN)/python -m tests.mutation

clean:
	rm -rf $(VENV) build *.egg-info mutants
