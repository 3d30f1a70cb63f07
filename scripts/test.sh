#!/usr/bin/env bash
# Create .venv (if missing), install the pinned requirements, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
python -m pytest -q "$@"
