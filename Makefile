# Two entry points for a fresh clone; each sets up its own environment first.
#   make pipeline   run the whole DAG on the tiny profile (CPU, minutes)
#   make test       run the test suite
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CORES   ?= 2

.PHONY: setup pipeline test lock clean-env

setup: $(STAMP)

# torch and torchvision are pinned together first: a bare `torch` requirement with no
# torch installed pulls a multi-GB CUDA wheel, and mismatched pairs fail to import.
# requirements/cpu-lock.txt pins every other package to the versions the tests last passed
# with; `make lock` rewrites it from the current .venv after a deliberate upgrade.
LOCK    := requirements/cpu-lock.txt

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c $(LOCK) -e '.[pipeline,test]'
	touch $(STAMP)

lock: $(STAMP)
	{ sed -n '1,2p' $(LOCK); $(BIN)/pip freeze --exclude-editable; } > $(LOCK).new && mv $(LOCK).new $(LOCK)

# Every job calls `variant`: the environment's bin/ goes first on PATH, activated or not.
pipeline: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/snakemake -c$(CORES) all

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

clean-env:
	rm -rf $(VENV)
