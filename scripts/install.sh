#!/usr/bin/env bash
# Install simformer and its dependencies without ever pulling a CUDA torch build over an
# existing torch: torch is installed only when missing, pinned to the local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install "torch==${SIMFORMER_TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install -e ".[test]"
