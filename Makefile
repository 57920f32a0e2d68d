# embedlab — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision must be a matching pair (see README, "Installing").
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
CONFIG ?= experiments/digits.yaml
SWEEP ?= experiments/sweeps/losses.yaml
# the suite runs on every core (pytest-xdist), at most 4 workers; PYTEST_ARGS= runs it serially.
PYTEST_ARGS ?= -n auto --maxprocesses=4

# .env (see .env.example) fills in what the command line and the environment leave unset:
# `EMBEDLAB_WANDB=online make train` wins over EMBEDLAB_WANDB=off in .env.
ENV_VARS := $(shell sed -n 's/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*[?:]\{0,1\}=.*/\2/p' .env 2>/dev/null)
$(foreach v,$(ENV_VARS),$(if $(filter environment,$(origin $(v))),$(eval _env_$(v) := $(value $(v)))))
-include .env
$(foreach v,$(ENV_VARS),$(if $(filter-out undefined,$(origin _env_$(v))),$(eval $(v) := $(_env_$(v)))))
export

.DEFAULT_GOAL := help
.PHONY: help install train test test-fast lint bench readme-figures sweep notebooks clean clean-runs

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PACKAGES)
	$(BIN)/python -m pip install -e '.[dev,bench,export]'
	touch $@

install: $(VENV)/.installed ## create .venv (if missing) and install embedlab with the dev, bench and export extras

train: install ## train the default experiment (CONFIG=experiments/digits.yaml) on the CPU
	$(BIN)/embedlab fit --config $(CONFIG)

test: install ## run the whole test suite (slow tests included), the 15 slowest tests listed
	@$(BIN)/python -m pytest $(PYTEST_ARGS) --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests — treating as a failure" >&2; exit 1; fi; \
	exit $$rc

test-fast: install ## the suite without the slow-marked tests (-m "not slow"), 15 slowest listed
	@$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow" --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests — treating as a failure" >&2; exit 1; fi; \
	exit $$rc

lint: install ## ruff + mypy + import-linter (the library layer imports no Lightning)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install ## benchmarks against pytorch-metric-learning (tables, not pass/fail)
	$(BIN)/python benchmarks/losses.py
	$(BIN)/python benchmarks/retrieval.py

readme-figures: install ## measure the README's figures (FIGURES="digits class_disjoint search"; losses: ~25 min) and update README.md
	$(BIN)/python benchmarks/readme_figures.py $(if $(FIGURES),--only $(FIGURES))

sweep: install ## run a sweep (SWEEP=experiments/sweeps/losses.yaml; wandb agent with --online, an Optuna study with --offline)
	$(BIN)/embedlab sweep $(SWEEP) $(SWEEP_ARGS)

notebooks: install ## execute the notebooks
	$(BIN)/python -m pytest tests/test_notebooks.py

clean: ## remove caches and build outputs (keeps .venv and runs/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info lightning_logs
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

clean-runs: ## delete every run folder (EMBEDLAB_OUTPUT_ROOT, default runs/), checkpoints included
	@echo "make clean-runs: deleting $(or $(EMBEDLAB_OUTPUT_ROOT),runs)/ and wandb/ (checkpoints included)"
	rm -rf -- "$(or $(EMBEDLAB_OUTPUT_ROOT),runs)" wandb
