# Two commands: `make demo` (set up + run the whole pipeline offline) and `make test` (lint + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stage commands say `python`: run them with the project's environment.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: setup demo lint test test-fast test-slow clean

setup: $(VENV)/.installed

# `make setup GPU=1`: tensorflow[and-cuda] (CUDA/cuDNN as pip wheels; Linux x86-64 + NVIDIA driver)
# instead of tensorflow-cpu, at the same pinned version (rewritten from requirements.txt, so the pin
# lives in one place). A marker records the variant: switching GPU=1 on or off reinstalls.
GPU ?=
VARIANT := $(VENV)/.variant-$(if $(GPU),gpu,cpu)

$(VARIANT):
	rm -f $(VENV)/.variant-* $(VENV)/.installed
	mkdir -p $(VENV) && touch $@

$(VENV)/.installed: requirements.txt requirements-export.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml $(VARIANT)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
ifeq ($(GPU),)
	-$(BIN)/pip uninstall --quiet --yes tensorflow 2>/dev/null
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-export.txt
else
	-$(BIN)/pip uninstall --quiet --yes tensorflow-cpu 2>/dev/null
	sed 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' requirements.txt > $(VENV)/requirements-gpu.txt
	grep -q '^tensorflow\[and-cuda\]==' $(VENV)/requirements-gpu.txt  # the pin was rewritten
	$(BIN)/pip install --quiet -r $(VENV)/requirements-gpu.txt -r requirements-export.txt
endif
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The whole pipeline as a DVC experiment with the small CNN: on real DermaMNIST (28 px, a short
# schedule) when Zenodo is reachable, else on generated shapes (skinsage/app/demo.py says which).
# params.yaml is restored afterwards: the committed defaults stay the real DermaMNIST + ResNet50 run.
demo: setup
	@git rev-parse --verify -q HEAD >/dev/null || { echo "make demo needs a git clone with a commit"; exit 1; }
	@overrides="$$($(BIN)/python -m skinsage.app.demo)" && $(BIN)/dvc exp run $$overrides
	@git checkout -- params.yaml
	@git ls-files --error-unmatch dvc.lock >/dev/null 2>&1 && git checkout -- dvc.lock || rm -f dvc.lock
	@echo; echo "== Metrics of the demo run: $$(sed -n 's/^# Model card: //p' plots/report.md) (all: dvc metrics show) =="
	@sed -n '/^| metric /,/^$$/p' plots/report.md
	@$(BIN)/dvc plots show --out dvc_plots >/dev/null
	@echo; echo "Figures:      plots/training_curves.png  plots/confusion_matrix.png  plots/roc_pr_curves.png"
	@echo "              plots/reliability_diagram.png  plots/test_examples.png"
	@echo "Model card:   plots/report.md"
	@echo "Interactive:  dvc_plots/index.html   (dvc plots show)"
	@echo "Experiments:  $(BIN)/dvc exp show"
	@echo "Model:        models/model.keras"

# ruff, configured in pyproject.toml ([tool.ruff]), on the whole tree
lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e"

test-slow: setup
	SKINSAGE_SLOW=1 $(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) dvc_plots
