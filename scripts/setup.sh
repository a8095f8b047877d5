#!/usr/bin/env bash
# Make .venv with kpn and its dependencies. On the project's build machines torch 2.13.0
# (CPU) lies on local disk; elsewhere set KPN_TORCH to the torch requirement you want
# (e.g. KPN_TORCH="torch" for pip's default build), or install torch yourself first.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "${KPN_TORCH:-torch==2.13.0}"
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
# kpn's fused C loops (kpn/model/native.py), built once into ~/.cache/kpn; without a C compiler
# kpn runs its eager torch code instead
.venv/bin/python -c "from kpn.model import native; native.library()"
