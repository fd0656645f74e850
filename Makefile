# Two commands: `make demo` (set up + run the whole pipeline offline) and `make test` (lint + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stage commands say `python`: run them with the project's environment.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: setup demo exps lint test test-fast test-slow clean

setup: $(VENV)/.installed

# `make setup GPU=1`: tensorflow[and-cuda] (CUDA/cuDNN as pip wheels; Linux x86-64 + NVIDIA driver)
# instead of tensorflow-cpu, at the same pinned version (rewritten from requirements.txt, so the pin
# lives in one place). A marker records the variant: switching GPU=1 on or off reinstalls.
GPU ?=
VARIANT := $(VENV)/.variant-$(if $(GPU),gpu,cpu)

$(VARIANT):
	rm -f $(VENV)/.variant-* $(VENV)/.installed
	mkdir -p $(VENV) && touch $@

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-export.txt requirements-nodeps.txt \
                    pyproject.toml $(VARIANT)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
ifeq ($(GPU),)
	-$(BIN)/pip uninstall --quiet --yes tensorflow 2>/dev/null
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt -r requirements-export.txt
else
	-$(BIN)/pip uninstall --quiet --yes tensorflow-cpu 2>/dev/null
	sed 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' requirements.txt > $(VENV)/requirements-gpu.txt
	grep -q '^tensorflow\[and-cuda\]==' $(VENV)/requirements-gpu.txt  # the pin was rewritten
	$(BIN)/pip install --quiet -r $(VENV)/requirements-gpu.txt -r requirements-dev.txt -r requirements-export.txt
endif
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The whole pipeline as a DVC experiment with the small CNN: on real DermaMNIST (28 px, a short
# schedule) when Zenodo is reachable, else on generated shapes (skinsage/app/demo.py says which).
# The experiment stays applied in the workspace, as `dvc exp apply` leaves one: params.yaml holds the
# demo's settings and dvc.lock and the outputs match them (`dvc status` clean). Run again with
# nothing changed, it records no second experiment. `git checkout params.yaml` = the committed run.
# More overrides for the demo's experiment, e.g. make demo DEMO_SET='-S train.epochs=5'
DEMO_SET ?=
demo: setup
	@git rev-parse --verify -q HEAD >/dev/null || { echo "make demo needs a git clone with a commit"; exit 1; }
	@overrides="$$($(BIN)/python -m skinsage.app.demo) $(DEMO_SET)" || exit 1; \
	if $(BIN)/python -m skinsage.app.demo --applied $$overrides && $(BIN)/dvc status --quiet; then \
	  echo "demo: already run with these settings and nothing changed (dvc status is clean): no new experiment"; \
	else $(BIN)/dvc exp run $$overrides; fi
	@echo; echo "== Metrics of the demo run: $$(sed -n 's/^# Model card: //p' plots/report.md) (all: dvc metrics show) =="
	@sed -n '/^| metric /,/^$$/p' plots/report.md
	@$(BIN)/dvc plots show --out dvc_plots >/dev/null
	@echo; echo "Figures:      plots/training_curves.png  plots/confusion_matrix.png  plots/roc_pr_curves.png"
	@echo "              plots/reliability_diagram.png  plots/test_examples.png  plots/gradcam_examples.png"
	@echo "Model card:   plots/report.md"
	@echo "Interactive:  dvc_plots/index.html   (dvc plots show)"
	@echo "Experiments:  $(BIN)/dvc exp show   (this one is applied: git diff params.yaml shows its settings)"
	@echo "Model:        models/model.keras"

# `dvc exp show` that fits 120 columns: the headline test metrics, then only the params that differ
# between the rows (what was swept). Hidden: dependency hashes, the other metrics (all of them:
# `dvc exp show`; `make exps EXPS='--keep val.balanced|share_ok|referral_sens'` adds some back).
EXP_HIDDEN := Created|data/|metrics/|models/|skinsage/|stages/|dvclive/|/|\.\./|model_type|macro_f1|cohen_kappa|loss|val\.|share_ok|accuracy_ok|referral_|epochs_run|best_epoch|train_seconds|logit_adjustment_tau|phase|step|train\.accuracy|eval\.
EXPS ?=
exps: setup
	@$(BIN)/dvc exp show --only-changed --hide-workspace --drop '$(EXP_HIDDEN)' $(EXPS)

# ruff, configured in pyproject.toml ([tool.ruff]), on the whole tree
lint: setup
	$(BIN)/ruff check .

# Two pytest workers (pytest-xdist), one test file each at a time: module fixtures (a trained model,
# a DVC project run once) stay shared within their file. 1.5x faster on 2 cores than one process.
PYTEST_WORKERS ?= 2
test: setup lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not e2e"

test-slow: setup
	SKINSAGE_SLOW=1 $(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) dvc_plots
