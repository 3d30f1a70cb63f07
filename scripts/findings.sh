#!/usr/bin/env bash
# The findings run (README: Findings): conf/profile/findings.yaml, every row of every table
# at 5 seeds, in a git worktree of HEAD (.dvc/tmp/findings, sharing this repository's DVC
# cache) on the parallel runner. Its pages, params.yaml, dvc.lock and every cell's metrics
# land in findings/, each page naming the commit and this command; commit them to share.
#   bash scripts/findings.sh                    # 95 min on 2 CPU cores (BENCHMARKS.md)
#   python scripts/verify.py --findings         # a rerun against the committed findings
#   bash scripts/findings.sh --pages-only       # the pages again, by this checkout's report
#                                               # code, from the worktree's cells
# Run it again after a kill: the worktree keeps its outputs and DVC's run-cache, so only
# unfinished cells train. Other arguments go to the runner (-j N, --scheduler ADDRESS).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
root=$(pwd)
work=.dvc/tmp/findings
record=$work/.dvc/tmp/findings-run   # "<commit> <minutes>" of the last completed run
if [ "${1:-}" = --pages-only ]; then
    [ -e "$record" ] || { echo "error: no completed findings run in $work: run bash scripts/findings.sh" >&2; exit 2; }
else
    if [ -n "$(git status --porcelain --untracked-files=no -- . ':!findings')" ]; then
        echo "error: commit or stash your changes first: the findings pages name the commit that produced them" >&2
        exit 2
    fi
    rev=$(git rev-parse --short HEAD)
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
    echo "$rev $(( ($(date +%s) - start + 30) / 60 ))" > "$record"
fi
read -r cells minutes < "$record"
w=$(cd "$work" && pwd)
cpu=$(python -c 'import os, platform; print(f"{os.cpu_count()} CPU cores, {platform.machine()}")')
pages=$(git rev-parse --short HEAD)
python -m stages.report --params "$w/params.yaml" --eval "$w/eval" --models "$w/models" \
    --data "$w/data" --conf "$w/conf" --out findings --provenance "cells trained and evaluated \
at commit $cells by \`bash scripts/findings.sh\` (profile findings; $minutes min of wall time on $cpu, \
for the cells that call trained); pages rendered at commit $pages$([ -n "$(git status --porcelain \
--untracked-files=no -- . ':!findings')" ] && echo ' with uncommitted changes'); $(date -u +%F)"
cp "$w/params.yaml" "$w/dvc.lock" findings/
# every cell's metrics in one file: what `verify.py --findings` compares a rerun with
python scripts/verify.py --collect "$w"
echo "Findings: $root/findings/index.html (commit them: git add findings)"
