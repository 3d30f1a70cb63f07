"""Routes to byte-stable CPU numerics, and what each costs per training update.

    python benchmarks/numerics_routes.py --config small timit --rounds 2

Each mode is a child process (kernel switches are read when torch loads) running
benchmarks/train_speed.py's eager step, 1 thread, timed in thread CPU time so that other
processes' load stays out; the modes alternate `rounds` times and the fastest is kept.
Modes:
  fast          no pins (`numerics: fast`)
  exact         the stages' pins (`numerics: exact`: MKL_CBWR=COMPATIBLE and the ISA caps)
  exact+onednn  the pins, with every fp32 matrix product (aten::mm, aten::addmm, forward
                and backward) sent to oneDNN's inner product, which the pins cap at AVX2
                (a Python kernel registered over ATen's CPU one; this script's own, not the
                stages')
  fast+onednn   that rerouting alone: its per-call cost
  aten, cbwr, onednn_isa, mkl_isa
                one pin each, to see where `exact`'s cost comes from
Prints one JSON line per config: ms per update and the ratio to `fast`.

    python benchmarks/numerics_routes.py --bytes [--against benchmarks/route_bytes.jsonl]

The bytes of each route instead: Z-Forcing at the default profile's size trained 20 updates
(one child per setting), the sha256 of its weights, under outer settings that move one
library's choice (what another CPU would choose) while the route's pins stay in place.
Each line names the CPU: the same route on two machines is the cross-vendor check, and
benchmarks/route_bytes.jsonl keeps the lines of the machines it has run on (--against
compares this machine's with them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_PIN = {"aten": ["ATEN_CPU_CAPABILITY"], "cbwr": ["MKL_CBWR"],
           "onednn_isa": ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"], "mkl_isa": ["MKL_ENABLE_INSTRUCTIONS"]}
MODES = ("fast", "exact", "exact+onednn", "fast+onednn", *ONE_PIN)


def environment(mode: str) -> dict:
    # the parent only: importing `stages` pins this process's environment, so a child that
    # imported it would run pinned whatever its mode
    from benchmarks.pins import child_env
    from stages.kernels import PINS
    env = child_env(pinned=mode.startswith("exact"))
    if mode in ONE_PIN:
        env.update({k: PINS[k] for k in ONE_PIN[mode]})
    if mode.endswith("+onednn"):
        env["ZF_ROUTE_ONEDNN"] = "1"
    return env


def reroute_matmuls_to_onednn():
    """aten::mm and aten::addmm on CPU float32 through oneDNN's inner product."""
    import warnings

    import torch
    linear = torch.ops.mkldnn._linear_pointwise.default  # x @ w.T + b

    def weight(b):  # oneDNN's fast kernels take a dense (n, k) or (k, n) weight
        w = b.t()
        return w if w.is_contiguous() or b.is_contiguous() else w.contiguous()

    def fp32(*ts):
        return all(t.dtype == torch.float32 for t in ts)

    def mm(a, b):
        if not fp32(a, b):  # the out= overload keeps ATen's own kernel
            return torch.mm(a, b, out=a.new_empty((a.shape[0], b.shape[1])))
        return linear(a, weight(b), None, "none", [], "")

    def addmm(bias, a, b, *, beta=1, alpha=1):
        if fp32(bias, a, b) and beta == 1 and alpha == 1 and bias.shape == (b.shape[1],):
            return linear(a, weight(b), bias, "none", [], "")
        return torch.addmm(bias, a, b, beta=beta, alpha=alpha,
                           out=a.new_empty((a.shape[0], b.shape[1])))

    with warnings.catch_warnings():  # "overriding a previously registered kernel"
        warnings.simplefilter("ignore")
        lib = torch.library.Library("aten", "IMPL")
        lib.impl("mm", mm, "CPU")
        lib.impl("addmm", addmm, "CPU")
    return lib


def child_bytes():
    """Train the small config 20 updates on one fixed batch; print the weights' sha256."""
    if os.environ.get("ZF_ROUTE_ONEDNN") == "1":
        keep = reroute_matmuls_to_onednn()  # noqa: F841
    import hashlib

    import torch
    sys.argv = ["train_speed.py"]
    speed = runpy.run_path(str(ROOT / "benchmarks/train_speed.py"))
    torch.set_num_threads(1)
    sizes, B, T = speed["CONFIGS"]["small"]
    g = torch.Generator().manual_seed(0)
    batch = speed["Batch"](torch.randn(B, T, 200, generator=g), torch.randn(B, T, 200, generator=g),
                           torch.ones(B, T))
    model, step = speed["make_step"](sizes, False, "eager", "fp32", torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        step(batch, speed["draw_noise"](model, batch, gen))
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().numpy().tobytes())
    print(h.hexdigest()[:16])


# route -> {outer setting: what it emulates}; the route's pins are applied over each
BYTES = {"exact": {"": "this CPU", "MKL_CBWR=AUTO": "MKL's own choice of branch",
                   "MKL_CBWR=AVX2": "MKL's AVX2 branch (AUTO on AMD)",
                   "ONEDNN_MAX_CPU_ISA=AVX512_CORE": "oneDNN at AVX-512"},
         "exact+onednn": {"": "this CPU", "MKL_CBWR=AUTO": "MKL's own choice of branch",
                          "ONEDNN_MAX_CPU_ISA=AVX512_CORE": "oneDNN at AVX-512"}}


def bytes_table(against: str | None):
    """One JSON line per route and outer setting; with `against` (lines of an earlier run,
    e.g. benchmarks/route_bytes.jsonl), each line also says whether the other machines
    recorded there got the same hash."""
    from benchmarks.machine import cpu_name
    recorded = [json.loads(line) for line in open(against)] if against else []
    cpu = cpu_name()
    for route, outers in BYTES.items():
        for outer, what in outers.items():
            env = environment(route)
            if outer:  # set after the pins: what the route leaves to the machine
                k, v = outer.split("=")
                env[k] = v
            out = subprocess.run([sys.executable, __file__, "--child-bytes"], env=env,
                                 capture_output=True, text=True, check=True)
            line = {"cpu": cpu, "route": route, "outer": outer or "(none)",
                    "emulates": what, "sha256": out.stdout.split()[-1]}
            others = {r["cpu"]: "same" if r["sha256"] == line["sha256"] else "differs"
                      for r in recorded if (r["route"], r["outer"]) == (route, line["outer"])
                      and r["cpu"] != line["cpu"]}
            print(json.dumps({**line, **({"against": others} if against else {})}), flush=True)


def child(argv):
    """One mode: train_speed.py in this process, timed in thread CPU time."""
    if os.environ.get("ZF_ROUTE_ONEDNN") == "1":
        keep = reroute_matmuls_to_onednn()  # noqa: F841 - the registration lives with it
    time.perf_counter = time.thread_time  # the step runs on this one thread
    sys.argv = ["train_speed.py", *argv]
    runpy.run_path(str(ROOT / "benchmarks/train_speed.py"), run_name="__main__")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["small"], help="train_speed.py configs")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--updates", type=int, default=0, help="per timed block (default: 10 small, 2 else)")
    ap.add_argument("--bytes", action="store_true", help="the bytes of each route, not its speed")
    ap.add_argument("--against", help="--bytes: compare with the lines of an earlier run (a file)")
    args = ap.parse_args()
    if args.bytes:
        return bytes_table(args.against)
    for config in args.config:
        updates = args.updates or (10 if config == "small" else 2)
        best = {m: float("inf") for m in args.modes}
        for _ in range(args.rounds):
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--child", "--config", config, "--device", "cpu",
                       "--threads", "1", "--updates", str(updates), "--repeats", "2", "--warmup", "1"]
                out = subprocess.run(cmd, env=environment(mode), capture_output=True, text=True, check=True)
                best[mode] = min(best[mode], json.loads(out.stdout.splitlines()[-1])["ms_per_update"])
        print(json.dumps({"config": config, "machine": platform.processor() or platform.machine(),
                          "ms_per_update": best,
                          "over_fast": {m: round(v / best["fast"], 2) for m, v in best.items()}
                          if "fast" in best else None}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    elif sys.argv[1:2] == ["--child-bytes"]:
        child_bytes()
    else:
        main()
