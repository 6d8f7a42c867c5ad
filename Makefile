# Two entry points for a fresh clone; each sets up its own environment first.
#   make pipeline   run the whole DAG on the tiny profile (CPU, minutes)
#   make test       run the test suite
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CORES   ?= 2

.PHONY: setup pipeline test clean-env

setup: $(STAMP)

# torch and torchvision are pinned together first: a bare `torch` requirement with no
# torch installed pulls a multi-GB CUDA wheel, and mismatched pairs fail to import.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[pipeline,test]'
	touch $(STAMP)

# Every job calls `variant`: the environment's bin/ goes first on PATH, activated or not.
pipeline: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/snakemake -c$(CORES) all

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

clean-env:
	rm -rf $(VENV)
