#!/usr/bin/env bash
# Create .venv (if missing), install the pinned requirements, run the whole pipeline on
# params.yaml (as committed: the default profile, embedded data, CPU).
# The stages run side by side on local Dask workers (`python -m runner`): as many as the
# machine has cores over train.threads, or one per GPU; `-j N` sets the count. The end
# state is `dvc repro`'s, byte for byte: DVC runs and records every stage. The runner also
# restores a dvc.lock that a killed run left empty or invalid (from git; DVC's run-cache
# then restores every stage finished since, without running it).
# ZF_SEQUENTIAL=1 runs plain `dvc repro` instead (the same bytes, one stage at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
if [ "${ZF_SEQUENTIAL:-0}" = 1 ]; then
    # the runner's own repair: a dvc.lock that a killed run left empty or invalid
    python -c "from pathlib import Path; from runner.lockfile import repair; n = repair(Path('.')); n and print(n)" >&2
    dvc repro "$@"
else
    python -m runner "$@"
fi
echo "Reports: $(pwd)/reports/index.html"
echo "In a new shell, activate the environment before dvc commands: . .venv/bin/activate"
