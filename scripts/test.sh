#!/usr/bin/env bash
# Create .venv (if missing), install the pinned requirements, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r requirements.txt
python -m pytest -q "$@"
