"""Stage `train_<bench>@<row>-<seed>`: train one cell (benchmark, table row, seed index).

    python -m stages.train timit zforcing_aux 0 --data data/timit/prepared --out models/timit/zforcing_aux/s0

Reads model.*, train.* (with benchmarks.<bench>.model/train overrides), and for "+ aux"
rows aux_weight (or benchmarks.<bench>.aux_weight). Writes into --out:
  model.npz     weights (best on validation, or last: train.select), pickle-free
  model.json    the model and training configs used, parameter count, updates, skips
  history.json  learning curves (train records every train.log_every updates, valid records)
Everything in --out is a pure function of data, params and code (timings stay out), so
`dvc repro` reproduces its hashes. Timings and live metrics go to dvclive in
live/<bench>/<row>/s<seed> (git-ignored). The in-progress checkpoint lives in
.ckpt/<hash of settings, code and the prepared data's bytes>/, outside DVC's outputs: an
interrupted run resumes, and no other configuration or data ever picks it up.

Data-parallel: with train.nproc = N > 1 the stage re-executes itself as
`python -m torch.distributed.run --standalone --nproc_per_node N -m stages.train ...`
(claiming N GPUs first when train.device is auto); started by torchrun by hand (any
--nnodes, c10d rendezvous) it joins that group instead. Every rank trains on its shard of
each global batch of train.batch_size; rank 0 alone writes the checkpoint, dvclive logs
and outputs.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from stages import KERNELS, prefork
from stages import params as P
from stages.common import StageError, code_hash, output_dir, run, setup_torch, write_json
from stages.kernels import set_numerics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", help="timit, blizzard, mnist or imdb")
    ap.add_argument("row", help="a row of the table, e.g. zforcing_aux (pipeline/rows.py)")
    ap.add_argument("seed", type=int, help="seed index (cell seed = train.seed + index)")
    ap.add_argument("--params", default="params.yaml", help="parameters file (%(default)s)")
    ap.add_argument("--data", required=True, help="prepared data folder, e.g. data/timit/prepared")
    ap.add_argument("--out", required=True, help="model folder, e.g. models/timit/zforcing/s0")
    ap.add_argument("--live", default=None, help="dvclive folder (default live/<bench>/<row>/s<seed>)")
    ap.add_argument("--ckpt-root", default=".ckpt",
                    help="resumable checkpoints, a folder per settings hash (%(default)s)")
    args = ap.parse_args()

    params = P.read(args.params)
    numerics = set_numerics(params["numerics"], KERNELS)  # before torch: `fast` unpins the kernels
    prefork.handoff("stages.train", KERNELS)  # the runner's preloaded process, if it has one
    rows = P.table_rows(params, args.bench)
    if args.row not in rows:
        raise StageError(f"{args.bench} trains no row {args.row!r}; its rows: {', '.join(rows)} "
                         f"(benchmarks.{args.bench}.rows / aux_rows)")
    row = rows[args.row]
    from pipeline.datasets import open_split, read_manifest
    manifest = read_manifest(args.data)
    tcfg, opts = P.train_settings(params, args.bench, row, args.seed)
    from pipeline.models import only_reads
    from pipeline.models.budget import resolve_budget
    # only the model keys this row reads (the others at their defaults): what its stage
    # depends on, data/rows/<bench>/<row>.json
    mcfg = resolve_budget(only_reads(P.model_settings(params, args.bench, row, manifest)))
    from pipeline import distributed
    if opts.nproc > 1 and not distributed.under_torchrun():
        _relaunch(opts)
    device = setup_torch(opts.threads, opts.device)
    from pipeline.cpu_memory import keep_freed_memory
    keep_freed_memory()  # each step's freed blocks reused, not faulted in again: same numbers
    ddp = distributed.from_env(device)  # None when this process trains alone
    main_rank = ddp is None or ddp.is_main
    world = ddp.world if ddp else 1

    import torch
    from pipeline import checkpoint
    from pipeline.models import build_model, config_record, count_parameters
    from pipeline.train import train

    loader = open_split(args.data, "train", tcfg.batch_size, shuffle=True, seed=tcfg.seed,
                        drop_last=True, limit=opts.train_limit or None)
    valid = (open_split(args.data, "valid", tcfg.batch_size, limit=opts.valid_limit or None)
             if "valid" in manifest["splits"] else None)
    if loader.num_batches == 0:
        raise StageError(f"{args.data}: the train split has fewer sequences than "
                         f"train.batch_size={tcfg.batch_size}; lower it or prepare more data")
    torch.manual_seed(tcfg.seed)
    model = build_model(mcfg)

    cell = f"{args.bench}/{row.name}/s{args.seed}"
    manifest_sha = hashlib.sha256((Path(args.data) / "manifest.json").read_bytes()).hexdigest()
    key = checkpoint.resume_key({"cell": cell, "model": asdict(mcfg), "train": asdict(tcfg), "world": world,
                                 "opts": asdict(opts), "code": code_hash(__file__), "numerics": numerics},
                                args.data)
    ckpt = Path(args.ckpt_root) / key / "train.pt"
    live = _live(args.live or f"live/{cell}", resume=ckpt.exists()) if main_rank else None
    bar = _progress(tcfg.max_updates, cell, disable=not main_rank)

    def on_log(rec):
        bar.update(rec["update"] - bar.n)
        bar.set_postfix(loss=f"{rec['loss']:.4g}", kl=f"{rec['kl_per_seq']:.3g}",
                        skipped=rec["skipped_updates"])
        if live:
            live.step = rec["update"]
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("update", "epoch", "kind"):
                    live.log_metric(f"train/{k}", v)
            live.next_step()

    def on_eval(rec):
        bar.write(f"[{cell}] update {rec['update']}: valid ELBO {rec['valid_elbo_per_seq']:.2f} "
                  f"nats/seq, lr {rec['lr']:.2e}")
        if live:  # at the update validated (on_log's next_step has moved past it)
            live.step = rec["update"]
            live.log_metric("valid/elbo_per_seq", rec["valid_elbo_per_seq"])

    t0 = time.perf_counter()
    from pipeline.errors import UserError
    try:
        out = train(model, loader, tcfg, valid_loader=valid, device=device, ckpt_path=ckpt,
                    on_log=on_log if main_rank else None,
                    on_eval=on_eval if main_rank else None, ddp=ddp)
    except UserError as err:  # say which data and which cell
        raise StageError(f"{cell} on {args.data}: {err}") from None
    bar.close()
    if not main_rank:  # rank 0 writes everything
        ddp.close()
        return
    seconds = time.perf_counter() - t0
    if live:
        live.summary.update(seconds=seconds)
        live.end()

    state = out["best_state"] if opts.select == "best" else out["last_state"]
    with output_dir(args.out) as tmp:
        checkpoint.save_npz(state, tmp / "model.npz")
        write_json(tmp / "model.json", {
            # the built model's own config (a registry name may fix the output family), the
            # keys it reads: the others are not this cell's settings
            "cell": cell, "model_config": config_record(model.cfg), "train_config": asdict(tcfg),
            "options": asdict(opts), "row": asdict(row), "params": count_parameters(model),
            "updates": out["position"]["updates"], "skipped": out["skipped"], "world_size": world,
            "device": device.type,  # what `auto` became: cpu runs are byte-stable, cuda runs are not
            "numerics": numerics,   # exact: pinned kernels, bytes hold across CPUs; fast: they do not
            "best_valid_elbo_per_seq": out["position"]["best_valid"], "data_manifest_sha256": manifest_sha,
            # train.valid_iwae_k > 0: that best figure is the validation IWAE bound
            **({"best_valid_bound": f"iwae_{tcfg.valid_iwae_k}"} if tcfg.valid_iwae_k else {})})
        timing = ("frames_per_s", "ms_per_update")
        write_json(tmp / "history.json", {"history": [{k: v for k, v in r.items() if k not in timing}
                                                      for r in out["history"]]})
    shutil.rmtree(ckpt.parent, ignore_errors=True)  # finished: the output is the record now
    print(f"[{cell}] {out['position']['updates']} updates ({out['skipped']} skipped) in "
          f"{seconds:.1f} s on {world} process{'es' if world > 1 else ''} -> {args.out}",
          file=sys.stderr)
    if ddp is not None:
        ddp.close()


def _relaunch(opts):
    """Become `torchrun --standalone --nproc_per_node N` of this same command (exec: see
    pipeline.distributed.exec_torchrun). The GPU locks claimed here stay held until the
    ranks end, and the ranks end with this process, SIGKILL included."""
    from pipeline.distributed import exec_torchrun
    from stages import devices
    env = {**os.environ, **devices.claim_for_ranks(opts.device, opts.nproc)}
    exec_torchrun(opts.nproc, "stages.train", sys.argv[1:], env)


def _progress(total, name, disable=False):
    from tqdm import tqdm
    return tqdm(total=total, desc=name, unit="upd", dynamic_ncols=True, mininterval=2.0,
                disable=disable)


def _live(path, resume: bool):
    from dvclive import Live
    return Live(path, dvcyaml=False, save_dvc_exp=False, resume=resume, report=None)


if __name__ == "__main__":
    run(main)
