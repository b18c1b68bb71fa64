#!/usr/bin/env bash
# One command on a fresh machine: set up .venv, then run the whole DeepWML pipeline on synthetic data.
# Arguments are passed to deepwml_demo (e.g. --workdir DIR --minutes 15 --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
exec deepwml_demo "$@"
