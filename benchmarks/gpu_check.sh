#!/usr/bin/env bash
# The single-GPU checks for BENCHMARKS.md, in one run of under 10 minutes on one H100/H200
# with PyTorch preinstalled and no network:
#
#   bash benchmarks/gpu_check.sh [OUT.json]          # default $OUT/gpu_check.json, else ./gpu_check.json
#   bash benchmarks/gpu_check.sh --dry-run [OUT.json] # the same sections on CPU at toy settings
#
# Sections, in priority order, each under its own time limit (a section that fails or runs
# out of time is recorded and the next one runs):
#   1 timit_fp32      TIMIT sizes, batch 32, fp32: eager, compiled, graphed (+ profile)
#   2 timit_bf16      the same in bf16 autocast: eager, compiled
#   3 blizzard_tf32   Blizzard sizes, batch 128, TF32: eager, graphed
#   4 blizzard_bf16   Blizzard sizes, batch 128, bf16: eager
#   5 equivalence     tests/test_compile.py on CUDA: CUDA graphs against eager, bf16 sums
# The JSON holds the environment, and per section its command, exit status (124: out of
# time), seconds, the JSON records benchmarks/train_speed.py printed, and the output's tail.
# GPU_CHECK_BUDGET (seconds, default 540) caps the whole run; GPU_CHECK_SCALE scales every
# section's limit (tests use it to check that a section out of time is recorded).
set -u
cd "$(dirname "$0")/.."

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ -n "${1:-}" ]; then
    RESULT="$1"
elif [ -n "${OUT:-}" ]; then
    RESULT="$OUT/gpu_check.json"
else
    RESULT="gpu_check.json"
fi
PY="${PYTHON:-$(command -v python3 || command -v python)}"
BUDGET="${GPU_CHECK_BUDGET:-540}"
SCALE="${GPU_CHECK_SCALE:-1}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
mkdir -p "$(dirname "$RESULT")"

if [ "$DRY" = 1 ]; then  # toy settings on CPU: checks the plumbing, not the GPU
    SPEED="$PY benchmarks/train_speed.py --device cpu --updates 1 --repeats 1 --warmup 0"
    TIMIT="--config small"; BLIZZARD="--config small --batch 8"
    FP32_PATHS="eager"; BF16_PATHS=""; GRAPHED="eager"; PREC_BF16="fp32"; PREC_TF32="tf32"
    TESTS="$PY -m pytest -q -p no:cacheprovider tests/test_compile.py -k settings"
else
    SPEED="$PY benchmarks/train_speed.py --device cuda --updates 10 --repeats 3"
    TIMIT="--config timit"; BLIZZARD="--config blizzard"
    FP32_PATHS="eager compiled graphed"; BF16_PATHS="eager compiled"; GRAPHED="eager graphed"
    PREC_BF16="bf16"; PREC_TF32="tf32"
    TESTS="$PY -m pytest -q -p no:cacheprovider tests/test_compile.py -k cuda_or_bf16"
fi
TESTS="${TESTS/cuda_or_bf16/cuda or bf16}"

# name, limit in seconds, command
SECTIONS=(
    "timit_fp32|200|$SPEED $TIMIT --paths $FP32_PATHS --precision fp32 --profile"
    "timit_bf16|110|$SPEED $TIMIT --paths ${BF16_PATHS:-eager} --precision $PREC_BF16"
    "blizzard_tf32|90|$SPEED $BLIZZARD --paths $GRAPHED --precision $PREC_TF32"
    "blizzard_bf16|40|$SPEED $BLIZZARD --paths eager --precision $PREC_BF16"
    "equivalence|150|$TESTS"
)

env_info() {
    "$PY" - <<'EOF' 2>&1
import json, platform, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name()
    info["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
try:
    import pytest
    info["pytest"] = pytest.__version__
except ImportError:
    info["pytest"] = None
print(json.dumps(info))
EOF
}
env_info > "$WORK/env.json"

i=0
for entry in "${SECTIONS[@]}"; do
    IFS='|' read -r name limit cmd <<< "$entry"
    left=$(( BUDGET - ($(date +%s) - START) ))
    limit=$(awk -v l="$limit" -v s="$SCALE" 'BEGIN { v = int(l * s); print (v < 1 ? 1 : v) }')
    [ "$limit" -gt "$left" ] && limit=$left
    i=$((i + 1))
    if [ "$left" -lt 5 ]; then
        echo "skipped: no time left in GPU_CHECK_BUDGET=$BUDGET" > "$WORK/$i.out"
        echo "$name|$cmd|-1|0" > "$WORK/$i.meta"
        continue
    fi
    echo "== [$i] $name (limit ${limit}s): $cmd" >&2
    t0=$(date +%s)
    timeout -k 10 "$limit" bash -c "$cmd" > "$WORK/$i.out" 2>&1
    rc=$?
    echo "$name|$cmd|$rc|$(( $(date +%s) - t0 ))" > "$WORK/$i.meta"
    echo "   exit $rc after $(( $(date +%s) - t0 ))s" >&2
done

"$PY" - "$WORK" "$RESULT" "$DRY" <<'EOF'
import json, sys
from pathlib import Path
work, result, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
try:
    env = json.loads((work / "env.json").read_text().strip().splitlines()[-1])
except (ValueError, IndexError):
    env = {"error": (work / "env.json").read_text()[-2000:]}
sections = {}
for meta in sorted(work.glob("*.meta"), key=lambda p: int(p.stem)):
    name, cmd, rc, seconds = meta.read_text().strip().rsplit("|", 3)
    out = (work / f"{meta.stem}.out").read_text(errors="replace")
    records = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    status = {"0": "ok", "124": "timeout", "137": "killed", "-1": "skipped"}.get(rc, "failed")
    sections[name] = {"command": cmd, "exit": int(rc), "status": status, "seconds": int(seconds),
                      "records": records, "tail": out[-3000:]}
result.write_text(json.dumps({"dry_run": dry, "env": env, "sections": sections}, indent=1) + "\n")
print(f"wrote {result}: " + ", ".join(f"{k} {v['status']}" for k, v in sections.items()))
EOF
