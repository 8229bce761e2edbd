# Set-up and entry points. `make train` and `make test` work on a fresh machine
# with nothing but Python 3.11: they create .venv and install everything first,
# at the exact versions of requirements.lock (`make lock` refreshes it).
PYTHON ?= python3
VENV ?= .venv
# The lock pins torch==2.13.0 (a local CPU wheel where the machine has one); elsewhere,
# for the CPU build: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: install lock train test test-cluster lint docs docs-serve bench mutation clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.lock $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PIP) install --no-deps -e .
	touch $(STAMP)

# the exact versions of everything `.[dev,docs,video]` needs, as installed in .venv
lock: install
	$(PIP) install -e '.[dev,docs,video]'
	{ echo "# make lock: pip freeze of .venv with .[dev,docs,video] installed"; \
	  $(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock

train: install
	$(BIN)/ippo train env=speaker_listener $(ARGS)

test: install
	$(BIN)/python -m pytest -n 2 -q tests

# SLURM, Ray and two-node torchrun on this machine, on loopback (root; installs slurm-wlm
# and munge with apt when missing): see tests/cluster/run.sh and docs/cluster.md
test-cluster: install
	$(PIP) install -e '.[ray]'
	bash tests/cluster/run.sh

lint: install
	$(BIN)/ruff check ippo_cli tests benchmarks docs/hooks

# the documentation site, into site/ (strict: a broken link or a missing figure fails)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# every benchmark (hours); `make bench ARGS=speed` for the speed tables alone (minutes)
bench: install
	$(BIN)/python -m benchmarks $(ARGS)

# mutation testing of the learning core (an hour or more; not in CI): see tests/mutation.py
mutation: install
	$(PIP) install mutmut==3.8.1
	rm -rf mutants  # mutmut keeps results across runs but cannot see config or data changes
	$(BIN)/python -m tests.mutation

clean:
	rm -rf $(VENV) build *.egg-info mutants site
