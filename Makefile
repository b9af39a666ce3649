# Two commands do everything on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: demo test lint bench-deps clean

# The venv: torch (CPU build, exact version) first so no dependency pulls a CUDA build.
$(STAMP): pyproject.toml requirements/torch.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/torch.txt
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/perturbscope demo --out $(DEMO_OUT)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# Peers for benchmarks/ (foolbox, adversarial-robustness-toolbox, ...), never needed by the core.
bench-deps: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
