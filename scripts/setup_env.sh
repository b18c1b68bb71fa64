#!/usr/bin/env bash
# Create (or reuse) .venv and install DeepWML into it. Idempotent; used by .ci/run and scripts/demo.sh.
# torch goes first: a bare "torch" requirement on a machine without it pulls a multi-GB CUDA build,
# while torch==2.13.0 is the CPU build this project's machines keep on local disk. On a machine with a
# GPU, install the CUDA build of torch you want before running this; an installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet "torch==${DEEPWML_TORCH_VERSION:-2.13.0}"
fi
python -m pip install --quiet -e ".${extras:+[$extras]}"
