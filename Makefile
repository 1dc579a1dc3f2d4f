# One-command entry points. Each creates .venv on first use and installs everything into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch is pinned to 2.13.0 here because that CPU build is what this project's machines carry;
# the package itself accepts any torch >= 2.4 (see pyproject.toml).
TORCH  ?= torch==2.13.0

.PHONY: run test lint bench modes pages setup clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,ray,tensorboard]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m loopnets.cli run

test: setup
	$(PY) -m pytest -q

# The architecture contracts alone (tests/test_architecture.py runs them inside `make test` too).
lint: setup
	PYTHONPATH=src:tools $(VENV)/bin/lint-imports

bench: setup
	$(PY) -m loopnets.cli bench $(BENCH_ARGS)

# Every backprop mode on four tasks (configs/modes/), then the comparison page docs/modes.md.
modes: setup
	for config in configs/modes/*.toml; do $(PY) -m loopnets.cli run $$config --workers 2 --no-progress || exit 1; done
	$(PY) docs/build_modes.py --runs-dir runs

# Every results page (the four reproduction pages, docs/modes.md) rebuilt offline from the committed
# results in docs/reproductions/results/; lists each page's missing experiments and the commands that make them.
pages: setup
	$(PY) docs/reproductions/pages.py

clean:
	rm -rf $(VENV) runs .pytest_cache
