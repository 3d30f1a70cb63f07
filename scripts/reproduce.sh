#!/usr/bin/env bash
# Create .venv (if missing), install the pinned requirements, run the whole pipeline
# (`dvc repro`) on params.yaml (as committed: the default profile, embedded data, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
# a `dvc repro` killed while writing dvc.lock can leave it empty or invalid: restore the
# committed one (DVC's run-cache then restores every stage without retraining)
if [ -f dvc.lock ] && ! python -c "import sys, yaml; d = yaml.safe_load(open('dvc.lock')); sys.exit(0 if isinstance(d, dict) and 'stages' in d else 1)" 2>/dev/null; then
    echo "dvc.lock is empty or invalid (an interrupted run?): restoring it from git" >&2
    git checkout -- dvc.lock
fi
dvc repro "$@"
echo "Reports: $(pwd)/reports/index.html"
echo "In a new shell, activate the environment before dvc commands: . .venv/bin/activate"
