# Two commands do everything on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: demo test lint bench-deps system-deps clean

# The venv: torch (CPU build, exact version) first so no dependency pulls a CUDA build.
$(STAMP): pyproject.toml requirements/torch.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/torch.txt
	$(PY) -m pip install --quiet -e '.[dev,ray,harmless]'
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
	$(PY) -m pip install --quiet --no-deps torchattacks
	$(PY) -m pip install --quiet tqdm requests

# Debian packages some tests use when present (headless Chromium for the HTML report check, the
# full Fashion-MNIST): installed when we are root with apt-get, skipped with a note otherwise.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (command -v chromium >/dev/null && [ -d /usr/share/datasets/fashion-mnist ]) || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    dataset-fashion-mnist >/dev/null; } || echo "system-deps: apt-get failed; those tests will skip"; \
	else echo "system-deps: not root or no apt-get; the Chromium and full-data tests will skip"; fi

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
