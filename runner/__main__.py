"""python -m runner [TARGET ...] [-j N] [-f] [--slurm JOBS ...]

Runs `dvc repro [TARGET ...]`'s stages, each ready one on a free Dask worker. Progress goes
to stdout; each stage's own output to .dvc/tmp/runner/logs/<stage>.log."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path


from runner import cluster, dag, lockfile
from runner.cell import Cell, CellFailed, Prefork, log_path, run_cell, state_dir
from runner.progress import Progress

TICK = 30.0  # seconds between progress lines while nothing finishes


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m runner", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", help="stages or stage groups (default: all)")
    p.add_argument("-j", "--workers", type=int, default=0,
                   help="local workers (default: GPUs, else cores over train.threads)")
    p.add_argument("-f", "--force", action="store_true", help="rerun every stage, as dvc repro -f")
    p.add_argument("--retries", type=int, default=1,
                   help="tries again a stage that failed (a worker that died does not count)")
    p.add_argument("--no-prefork", action="store_true",
                   help="start every stage as a new process, without the workers' fork servers")
    p.add_argument("--scheduler", help="address of a running Dask scheduler to use instead")
    p.add_argument("--slurm", type=int, default=0, metavar="JOBS",
                   help="start JOBS Slurm jobs (dask-jobqueue), one worker each")
    p.add_argument("--slurm-gpus", type=int, default=1)
    p.add_argument("--slurm-cores", type=int, default=4)
    p.add_argument("--slurm-memory", default="32GB")
    p.add_argument("--slurm-walltime", default="24:00:00")
    p.add_argument("--slurm-partition")
    p.add_argument("--slurm-account")
    p.add_argument("--slurm-interface", help="network interface the workers reach the driver on")
    p.add_argument("--job-script", action="store_true",
                   help="print the Slurm job script and exit")
    p.add_argument("--root", default=".", help="the repository (default: here)")
    return p.parse_args(argv)


def make_cluster(args, root: Path, params: dict):
    """(cluster or None, client address, worker count for the ETA)."""
    if args.scheduler:
        return None, args.scheduler, max(args.workers, 1)
    if args.slurm or args.job_script:
        job = cluster.SlurmJob(str(root), cores=args.slurm_cores, memory=args.slurm_memory,
                               gpus=args.slurm_gpus, walltime=args.slurm_walltime,
                               queue=args.slurm_partition, account=args.slurm_account,
                               interface=args.slurm_interface)
        c = cluster.slurm(job)
        if not args.job_script:
            c.scale(jobs=args.slurm)
        return c, c, args.slurm * max(args.slurm_gpus, 1)
    shape = cluster.shape(params)
    workers = args.workers or shape.workers
    where = "GPUs" if shape.gpu else "cores over train.threads"
    print(f"runner: {workers} local worker{'s' if workers > 1 else ''} "
          f"({shape.slots} slots: {where}; {shape.per_worker} per worker)", flush=True)
    return cluster.local(workers, shape.per_worker), None, workers


def _fail(stage: str, err: BaseException) -> None:
    if isinstance(err, CellFailed):
        tail = err.log.read_text(errors="replace").splitlines()[-40:]
        print(f"error: {stage} failed (exit {err.code}); the end of {err.log}:", file=sys.stderr)
        print("\n".join("    " + line for line in tail), file=sys.stderr)
    else:  # the engine gave up: e.g. KilledWorker after too many worker deaths
        print(f"error: {stage}: {type(err).__name__}: {err}; its log: "
              f"{log_path('.', stage)}", file=sys.stderr)


def drive(client, root: Path, plan: dag.Plan, params: dict, force: bool, retries: int,
          workers: int) -> int:
    from distributed import wait
    progress = Progress(total=len(plan.order), workers=workers)
    pending, settled, futures, failed = list(plan.order), set(), {}, []
    ran = set()
    while True:
        ready = [s for s in pending if plan.deps[s] <= settled] if not failed else []
        if ready:
            pending = [s for s in pending if s not in ready]
            # DVC is asked (under its repository lock, seconds each time) only about stages
            # none of whose upstream ran here: the others go straight to a worker, whose
            # `dvc repro -s` skips them if their inputs came out the same
            ask = [s for s in ready if not plan.deps[s] & ran]
            todo = set(ready) if force else (set(ready) - set(ask)) | (dag.changed(root, ask) if ask else set())
            for stage in ready:
                if stage in todo:
                    fut = client.submit(run_cell, Cell(str(root), stage, force), pure=False,
                                        key=f"{stage}-{time.time_ns()}", retries=retries,
                                        resources={cluster.RESOURCE: cluster.slots_for(stage, params)})
                    futures[fut] = stage
                else:  # up to date, as dvc repro would find it
                    settled.add(stage)
                    progress.finish(stage)
            continue
        if not futures:
            break
        try:
            finished = wait(list(futures), timeout=TICK, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            finished = set()
        for fut in finished:
            stage = futures.pop(fut)
            try:
                res = fut.result()
            except Exception as err:  # noqa: BLE001 - reported, and the run stops cleanly
                _fail(stage, err)
                failed.append(stage)
                continue
            settled.add(stage)
            if res["ran"]:
                ran.add(stage)
            progress.finish(stage, res["seconds"] if res["ran"] else None)
        progress.running = _running(root)
        print(progress.line(pending), flush=True)
    if failed:
        print(f"error: {len(failed)} stage(s) failed ({', '.join(failed)}); finished stages are "
              f"recorded: run the same command again to go on", file=sys.stderr)
        return 1
    print(f"runner: {len(ran)} stage(s) ran, {len(plan.order) - len(ran)} up to date or restored "
          "by DVC", flush=True)
    return 0


def _running(root: Path) -> dict[str, float]:
    """Stages an attempt is running right now: their pid files, by modification time."""
    running = {}
    for pidfile in (state_dir(root) / "pids").glob("*.json"):
        try:
            running[pidfile.stem] = pidfile.stat().st_mtime
        except FileNotFoundError:  # that attempt just ended
            pass
    return running


def main(argv=None) -> int:
    args = parse(argv)
    root = Path(args.root).resolve()
    bad = [f"{flag} {value}" for flag, value in (("-j", args.workers), ("--retries", args.retries),
                                                 ("--slurm", args.slurm), ("--slurm-gpus", args.slurm_gpus))
           if value < 0] + ([f"--slurm-cores {args.slurm_cores}"] if args.slurm_cores < 1 else [])
    if bad:
        print(f"error: {', '.join(bad)}: must not be negative (cores: at least 1)", file=sys.stderr)
        return 2
    os.chdir(root)  # DVC resolves targets, and stages run, from the repository's root
    if args.job_script:  # the recipe's check: touches nothing in the repository
        c, _, _ = make_cluster(args, root, {})
        print(c.job_script())
        c.close()
        return 0
    logging.getLogger("distributed").setLevel(logging.ERROR)
    try:
        held = lockfile.hold_driver_lock(root)
    except lockfile.Busy as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if lockfile.sweep(root):
        print("runner: stopped what a killed run left running", flush=True)
    note = lockfile.repair(root)
    if note:
        print(f"runner: {note}", flush=True)
    shutil.rmtree(state_dir(root) / "logs", ignore_errors=True)
    from dvc.exceptions import DvcException
    try:
        plan = dag.plan(root, args.targets)
    except DvcException as err:  # e.g. a target that names no stage
        print(f"error: {err}", file=sys.stderr)
        return 1
    params = cluster.read_params(root)  # once: worker shape, slots per stage
    if args.slurm:  # a stage that claims more slots than any worker owns would wait forever
        need = max((cluster.slots_for(s, params) for s in plan.order), default=1)
        have = args.slurm_gpus or args.slurm_cores
        if need > have:
            print(f"error: a training stage claims train.nproc={need} slots, a Slurm job owns "
                  f"{have}: raise --slurm-gpus (or --slurm-cores) to {need}", file=sys.stderr)
            return 2
    before = lockfile.entries_before(root)
    c, address, workers = make_cluster(args, root, params)
    from distributed import Client
    client = Client(address or c)
    try:
        if not args.no_prefork:
            client.register_plugin(Prefork(str(root)))
        code = drive(client, root, plan, params, args.force, args.retries, workers)
    finally:
        client.close()
        if c is not None:
            c.close()
        # entries already there keep their place, as DVC keeps them; new ones go in
        # dvc.yaml's order (dvc repro's own order of independent stages varies from run to
        # run: it follows Python's string hashing)
        order = before + [s for s in plan.listed if s not in before]
        dag.under_repo_lock(root, lambda: lockfile.put_in_order(root, order))
    if code == 0:  # a failed or killed run keeps the order for its rerun
        lockfile.forget_order(root)
    held.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
