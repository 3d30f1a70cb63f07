"""Data-parallel training (pipeline/distributed.py) on CPU with gloo over 127.0.0.1.

Ranks are forked from a forkserver that imported torch once (tests/ddp_child.py has the
run); the two-node case runs torchrun's own agent twice with a c10d rendezvous."""
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from multiprocessing import forkserver as mp_forkserver
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ddp_child
from pipeline import checkpoint
from pipeline.distributed import DistributedError, ShardLoader, shard_noise
from pipeline.datasets.batches import ArrayLoader

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ctx():
    c = mp.get_context("forkserver")
    c.set_forkserver_preload(["ddp_child", "torch._dynamo"])
    here = Path(ddp_child.__file__).resolve().parent
    path = [str(here), str(here.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    with pytest.MonkeyPatch.context() as m:  # the server is a fresh interpreter
        m.setenv("PYTHONPATH", os.pathsep.join(path))
        mp_forkserver.ensure_running()
    return c


def start_ranks(ctx, out: Path, pause_at=None):
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = [ctx.Process(target=ddp_child.worker, args=(r, WORLD, port, str(out), pause_at))
             for r in range(WORLD)]
    for p in procs:
        p.start()
    return procs


def join(procs, timeout=120):
    for p in procs:
        p.join(timeout)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def weights_close(a: dict, b: dict, rel: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        err = (a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-12)
        assert err <= rel, (k, float(err))


@pytest.fixture(scope="module")
def two_ranks(ctx, tmp_path_factory):
    """The uninterrupted 2-process run."""
    out = tmp_path_factory.mktemp("ddp_full")
    join(start_ranks(ctx, out))
    return checkpoint.load(out / "result.pt")


def test_two_processes_match_one_process_on_the_global_batch(two_ranks):
    torch.set_num_threads(1)
    one = ddp_child.run()
    assert two_ranks["world"] == WORLD
    weights_close(one["last_state"], two_ranks["state"], 1e-6)
    # the NaN sequence's batch was skipped by both ranks, once per epoch, as in one process
    assert two_ranks["skipped"] == one["skipped"] == 5
    # logged figures are global: accumulators summed over ranks, validation broadcast
    h1, h2 = one["history"], two_ranks["history"]
    assert [(r["kind"], r["update"]) for r in h1] == [(r["kind"], r["update"]) for r in h2]
    for r1, r2 in zip(h1, h2):
        for k in ("loss", "kl_per_seq", "nll_per_step", "grad_norm", "valid_elbo_per_seq", "lr"):
            if k in r1:
                assert r2[k] == pytest.approx(r1[k], rel=1e-5), (r1["update"], k)


def test_killed_two_process_run_resumes_to_the_uninterrupted_weights(ctx, tmp_path, two_ranks):
    procs = start_ranks(ctx, tmp_path, pause_at=9)
    deadline = time.monotonic() + 120
    while not (tmp_path / "paused").exists():
        assert time.monotonic() < deadline and all(p.is_alive() for p in procs), "no pause"
        time.sleep(0.1)
    for p in procs:  # kill -9 both ranks: rank 0 paused after update 9, rank 1 in a collective
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(30)
    ck = checkpoint.load(tmp_path / "train.pt")
    assert ck["position"]["updates"] == 8 and not ck["position"]["done"]
    # the good updates among 7 and 8 (not yet logged), summed over ranks: each counts once a rank
    logged = next(r for r in two_ranks["history"] if r["update"] == 6)["good_updates"]
    assert ck["counters"]["acc"][-1] == WORLD * (int(ck["counters"]["good"]) - logged) > 0
    assert ck["fingerprint"]["world_size"] == WORLD
    (tmp_path / "paused").unlink()
    join(start_ranks(ctx, tmp_path))
    resumed = checkpoint.load(tmp_path / "result.pt")
    for k, v in two_ranks["state"].items():
        assert torch.equal(v, resumed["state"][k]), k
    timing = ("frames_per_s", "ms_per_update")
    strip = lambda h: [{k: v for k, v in r.items() if k not in timing} for r in h]  # noqa: E731
    # the same records; sums of partial sums may differ in the last float64 bits
    for got, want in zip(strip(resumed["history"]), strip(two_ranks["history"]), strict=True):
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), k


def test_two_torchrun_nodes_with_c10d_rendezvous(ctx, tmp_path, two_ranks):
    argv = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "zf-test",
            "--max-restarts", "0", str(Path(ddp_child.__file__)), str(tmp_path)]
    agents = [ctx.Process(target=ddp_child.agent, args=(argv,)) for _ in range(2)]
    for a in agents:
        a.start()
    join(agents, timeout=240)
    result = checkpoint.load(tmp_path / "result.pt")
    assert result["world"] == 2
    # one process on each of two "nodes" is the same run as two on one
    for k, v in two_ranks["state"].items():
        assert torch.equal(v, result["state"][k]), k


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie nobody has reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.parametrize("pause", ["start", "9"])
def test_ranks_die_with_their_killed_agent(ctx, tmp_path, pause):
    """kill -9 of the stage process (torchrun's agent, after exec) while its ranks wait at
    start-up or in training: they must not go on (to a rendezvous nobody hosts, or to write
    the stage's output after the stage has failed)."""
    stage = ctx.Process(target=ddp_child.launch, args=(str(tmp_path), pause))
    stage.start()
    markers = ([tmp_path / f"start.{r}" for r in range(WORLD)] if pause == "start"
               else [tmp_path / "paused"])
    pid_files = [tmp_path / f"pid.{r}" for r in range(WORLD)]
    deadline = time.monotonic() + 180
    while not all(f.exists() for f in markers + pid_files):
        assert time.monotonic() < deadline and stage.is_alive(), "the ranks never got there"
        time.sleep(0.1)
    ranks = [int(f.read_text()) for f in pid_files]
    try:
        os.kill(stage.pid, signal.SIGKILL)
        stage.join(30)
        for m in markers:  # an orphan would go on from here
            m.unlink()
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in ranks), "ranks outlived their agent"
        assert not (tmp_path / "result.pt").exists()
    finally:
        for pid in ranks:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_stage_hands_torchrun_its_pid(monkeypatch):
    """The pid the ranks check their parent against is the stage's, which exec keeps."""
    from pipeline import distributed
    from stages import train as stage
    seen = {}
    monkeypatch.setattr(os, "execve", lambda path, cmd, env: seen.update(cmd=cmd, env=env))
    monkeypatch.setattr(sys, "argv", ["stages/train.py", "timit", "zforcing", "0"])
    stage._relaunch(SimpleNamespace(device="cpu", nproc=2))
    assert seen["env"][distributed.AGENT_PID_ENV] == str(os.getpid())
    assert seen["cmd"][-5:] == ["-m", "stages.train", "timit", "zforcing", "0"]


def test_batch_that_does_not_split_is_one_line_naming_the_parameters():
    loader = ArrayLoader(torch.zeros(12, 3, 2), torch.zeros(12, 3, 2), batch_size=6, drop_last=True)
    with pytest.raises(DistributedError) as err:
        ShardLoader(loader, 0, 4)
    msg = str(err.value)
    assert "train.batch_size=6" in msg and "train.nproc" in msg and "\n" not in msg


def test_shards_read_their_rows_of_each_global_batch():
    x = torch.arange(12.0).view(12, 1, 1).expand(12, 3, 2).contiguous()
    loader = ArrayLoader(x, x, batch_size=6, seed=3, drop_last=True)
    for epoch in range(2):
        for index in range(loader.num_batches):
            whole = loader.batch(epoch, index).x
            parts = [ShardLoader(loader, r, 3).batch(epoch, index).x for r in range(3)]
            assert torch.equal(torch.cat(parts), whole)


def test_shard_noise_is_the_global_draw_trimmed_to_each_shard():
    # padded layouts: shards shorter than the global batch see its draw's first steps
    world, b, steps, z = 3, 2, 7, 4
    single = torch.Generator().manual_seed(9)
    one = torch.randn((b * world, steps, z), generator=single)
    for rank, own_steps in enumerate((7, 5, 3)):
        gen = torch.Generator().manual_seed(9)
        part = shard_noise((b, own_steps, z), steps, rank, world, gen, "cpu")
        assert torch.equal(part, one[rank * b:(rank + 1) * b, :own_steps])
        # every rank's generator moves exactly as the single process's did
        assert torch.equal(gen.get_state(), single.get_state())
