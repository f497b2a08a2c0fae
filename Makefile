# vlmlab: `make demo` and `make test` install on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests and the demo never reach the hub (see README, "Offline first").
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: install demo chain test test-fast lint format tensorboard bench clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt requirements-nodeps.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(PY) train.py experiment=ct_report_sft preset=tiny

# make chain EXPERIMENT=mcqa [SEED=42]: EXPERIMENT_sft then EXPERIMENT_grpo from its last checkpoint, both
# preset=tiny, into logs/chain/EXPERIMENT_seedSEED/{sft,grpo} (rewritten each time), then the results table.
EXPERIMENT ?= mcqa
SEED ?= 42
CHAIN := logs/chain/$(EXPERIMENT)_seed$(SEED)
chain: $(STAMP)
	rm -rf $(CHAIN)
	$(OFFLINE) $(PY) train.py experiment=$(EXPERIMENT)_sft preset=tiny seed=$(SEED) hydra.run.dir=$(CHAIN)/sft
	$(OFFLINE) $(PY) train.py experiment=$(EXPERIMENT)_grpo preset=tiny seed=$(SEED) hydra.run.dir=$(CHAIN)/grpo \
		model.init_from=$(CHAIN)/sft/checkpoints/last.ckpt
	$(PY) -m vlmlab.tools.results $(CHAIN)/sft $(CHAIN)/grpo

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -q

test-fast: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir logs/

bench: $(STAMP)
	$(OFFLINE) $(PY) bench/data.py

clean:
	rm -rf logs outputs multirun data/synthetic .pytest_cache .ruff_cache
