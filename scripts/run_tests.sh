#!/usr/bin/env bash
# Set up the environment (first run only) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,eval,text,onnx,serve,caption,lora,hub,mteb,milvus
bash scripts/install_system_deps.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
