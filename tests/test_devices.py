"""GPU claiming for parallel stages (stages/devices.py), with fake device counts."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from stages import devices
from stages.devices import DeviceError, claim_gpu, claim_gpus, wait_for_gpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def release_all():
    yield
    for path in list(devices._held):
        devices.release(path)


def holder(lock_dir, n_devices: int) -> tuple[subprocess.Popen, int]:
    """Another process that claims a GPU and keeps it until killed; (process, its GPU)."""
    code = ("import sys, time; from stages import devices; "
            f"print(devices.claim_gpu({n_devices}, {str(lock_dir)!r}), flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def test_concurrent_claims_get_different_gpus(tmp_path):
    assert [claim_gpu(3, tmp_path) for _ in range(4)] == [0, 1, 2, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-0.lock", "gpu-1.lock", "gpu-2.lock"]


def test_other_process_holds_its_gpu_until_it_dies(tmp_path):
    proc, theirs = holder(tmp_path, 2)
    try:
        assert theirs == 0
        assert claim_gpu(2, tmp_path) == 1      # the other one
        assert claim_gpu(2, tmp_path) is None   # both held
        proc.send_signal(signal.SIGKILL)        # no clean-up runs: the kernel drops the lock
        proc.wait(10)
        assert claim_gpu(2, tmp_path) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("cleaned", ["folder", "file"])
def test_held_gpu_survives_a_tmp_cleaner(tmp_path, cleaned):
    """A cleaner removes the lock folder (or the held lock file) under a running stage: the
    next stage must still not get that GPU, and gets it once the holder has died."""
    folder = tmp_path / "locks"
    proc, theirs = holder(folder, 2)
    try:
        assert theirs == 0
        if cleaned == "folder":
            shutil.rmtree(folder)
        else:
            (folder / "gpu-0.lock").unlink()
        assert claim_gpu(2, folder) == 1     # not theirs
        assert claim_gpu(2, folder) is None
        proc.kill()
        proc.wait(10)
        assert claim_gpu(2, folder) == 0
    finally:
        proc.kill()
        proc.wait()


def test_claims_made_for_ranks_outlive_exec(tmp_path):
    """The stage claims for its ranks, then becomes torchrun by exec: the new program holds
    the claim, tmp cleaner or not, until it ends."""
    folder = tmp_path / "locks"
    code = ("import os, torch; torch.cuda.is_available = lambda: True; "
            "torch.cuda.device_count = lambda: 2; from stages import devices; "
            "print(devices.claim_for_ranks('auto', 1)['CUDA_VISIBLE_DEVICES'], flush=True); "
            "os.execvp('sleep', ['sleep', '120'])")
    env = {**os.environ, devices.LOCK_DIR_ENV: str(folder)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "0"
        deadline = time.monotonic() + 30
        while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":  # exec done
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        shutil.rmtree(folder)
        assert claim_gpus(2, 2, folder) is None
        assert claim_gpu(2, folder) == 1
        proc.kill()
        proc.wait(10)
        assert claim_gpu(2, folder) == 0
    finally:
        proc.kill()
        proc.wait()


def test_claim_of_several_is_all_or_nothing(tmp_path):
    assert claim_gpu(3, tmp_path) == 0
    assert claim_gpus(3, 3, tmp_path) is None
    assert claim_gpus(2, 3, tmp_path) == [1, 2]  # nothing was kept by the failed claim


def test_wait_returns_once_the_holder_dies(tmp_path):
    proc, _ = holder(tmp_path, 1)
    killer = threading.Timer(0.5, proc.kill)
    killer.start()
    t0 = time.monotonic()
    try:
        assert wait_for_gpus(1, 1, tmp_path, poll=0.05) == [0]
        assert time.monotonic() - t0 >= 0.4
    finally:
        killer.cancel()
        proc.kill()
        proc.wait()


def test_locks_are_named_after_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    names = devices.gpu_names(2)
    assert names == ["5", "7"]
    assert claim_gpu(2, tmp_path, names) == 0
    assert (tmp_path / "gpu-5.lock").exists()


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for k in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    return tmp_path


def test_auto_gives_each_stage_its_own_gpu(fake_gpus):
    assert [devices.resolve("auto") for _ in range(2)] == ["cuda:0", "cuda:1"]
    assert devices.resolve("cuda:3") == "cuda:3"  # explicit devices claim nothing
    env = devices.claim_for_ranks("auto", 2)      # a data-parallel launch takes two more
    assert env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    with pytest.raises(DeviceError, match="train.nproc=5"):
        devices.claim_for_ranks("auto", 5)


def test_ranks_use_their_local_gpu(fake_gpus, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert devices.resolve("auto") == devices.resolve("cuda") == "cuda:1"
    assert not os.listdir(fake_gpus)  # the launcher claimed them, not the ranks
    with pytest.raises(DeviceError, match="use auto or cuda"):
        devices.resolve("cuda:0")


def test_without_gpus_auto_is_cpu_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert devices.resolve("auto") == "cpu"
    err = capsys.readouterr().err
    assert "running on CPU" in err and err.count("\n") == 1
    assert devices.claim_for_ranks("auto", 2) == {}


def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does():
    """One reader for the runner's GPU count and the stages' lock names; "-1" hides the rest."""
    from pipeline.gpus import visible_gpus
    assert visible_gpus({}) is None
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0, 1"}) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-ab,-1,3"}) == ["GPU-ab"]
