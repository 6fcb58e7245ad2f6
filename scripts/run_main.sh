#!/usr/bin/env bash
# Set up the environment (first run only) and run the demo pipeline on real recordings (Debian packages via
# apt-get, cached in $KIKIMIMI_HOME/datasets; generated sounds with --offline or when they cannot be fetched).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,eval,text,onnx,serve,caption,lora,hub,mteb,milvus  # one environment for both README commands
bash scripts/install_system_deps.sh java                # the caption metrics' tokenizer (skipped without root/apt)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m kikimimi demo --out "${KIKIMIMI_DEMO_DIR:-outputs/demo}" "$@"
