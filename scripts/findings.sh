#!/usr/bin/env bash
# The findings run (README: Findings): conf/profile/findings.yaml, every row of every table
# at 5 seeds, in a git worktree of HEAD (.dvc/tmp/findings, sharing this repository's DVC
# cache) on the parallel runner. Its pages, params.yaml, dvc.lock and every cell's metrics
# land in findings/, each page naming the commit and this command; commit them to share.
#   bash scripts/findings.sh                    # about 1.5 hours on 2 CPU cores
#   python scripts/verify.py --findings         # a rerun against the committed findings
# Run it again after a kill: the worktree keeps its outputs and DVC's run-cache, so only
# unfinished cells train. Arguments go to the runner (-j N, --scheduler ADDRESS).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
root=$(pwd)
if [ -n "$(git status --porcelain --untracked-files=no -- . ':!findings')" ]; then
    echo "error: commit or stash your changes first: the findings pages name the commit that produced them" >&2
    exit 2
fi
rev=$(git rev-parse --short HEAD)
work=.dvc/tmp/findings
if [ -e "$work/.git" ]; then
    git -C "$work" checkout -q -f --detach "$rev"
else
    git worktree add -q -f --detach "$work" "$rev"
fi
start=$(date +%s)
(
    cd "$work"
    dvc cache dir --local "$root/.dvc/cache"
    python -c 'from dvc.utils.hydra import compose_and_dump as c; import os; c("params.yaml", os.path.abspath("conf"), None, "config", ".", ["profile=findings"])'
    # every evaluation (the runner adds what it needs); the pages are rendered below
    python -m runner "$@" $(python -c 'import yaml; print(*[s for s in yaml.safe_load(open("dvc.yaml"))["stages"] if s.startswith("evaluate_")])')
)
minutes=$(( ($(date +%s) - start + 30) / 60 ))
cpu=$(python -c 'import platform, os; print(f"{os.cpu_count()} CPU cores, {platform.machine()}")')
(
    cd "$work"
    python -m stages.report --out "$root/findings" --provenance "commit $rev, profile findings, \`bash scripts/findings.sh\` ($minutes min of wall time for the cells that trained in that call, on $cpu; $(date -u +%F))"
    cp params.yaml dvc.lock "$root/findings/"
    # every cell's metrics in one file: what `verify.py --findings` compares a rerun with
    python -c 'import json, pathlib, sys; json.dump({p.as_posix(): json.loads(p.read_text()) for p in sorted(pathlib.Path("eval").glob("**/metrics.json"))}, open(sys.argv[1], "w"), indent=1, sort_keys=True)' "$root/findings/metrics.json"
)
echo "Findings: $root/findings/index.html (commit them: git add findings)"
