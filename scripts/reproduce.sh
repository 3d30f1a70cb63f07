#!/usr/bin/env bash
# Create .venv (if missing), install the pinned requirements, run the whole pipeline
# (`dvc repro`) on the profile selected in params.yaml (default: the embedded corpus, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
dvc repro "$@"
echo "Reports: $(pwd)/reports/index.html"
