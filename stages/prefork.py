"""A fork server that has paid the training and evaluation stages' imports once.

A stage process starts by importing torch, numpy, dvclive and `torch._dynamo` (which the
optimizer pulls in): seconds of a cell that trains for tens of them. The parallel runner
starts one server per worker (`python -m stages.prefork SOCKET`, in the repository): it pins
the kernels as a stage does, imports those libraries and waits. A stage started with
`ZF_PREFORK=SOCKET` in its environment (DVC ran it, as ever) hands itself over right after
it has settled its numerics: the server forks a child, which takes the stage's standard
streams, working folder, environment and arguments and runs the stage's module from the
start, as a fresh process would; its exit status becomes the stage's. The stage process
waits for it, so DVC sees one command that ran, wrote its outputs and exited.

Why the bytes stay: the child imports the project's own code afresh from disk, and the
server forks only for a stage whose kernel switches (every variable torch, MKL, oneDNN,
OpenMP or numpy reads when loaded) equal the ones it imported torch under. Anything else,
or no server (not yet ready, gone), runs in the stage's own process, as without one.
A killed stage process takes its child down: the child watches the connection.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import threading

ENV = "ZF_PREFORK"        # the server's socket, set by the runner's workers
CHILD = "ZF_PREFORKED"    # set in a child: its libraries were loaded by the server
# what a library reads when it is loaded or first computes; two processes that agree on
# these load the same kernels
SWITCHES = ("ATEN_", "MKL_", "OMP_", "KMP_", "GOMP_", "ONEDNN_", "DNNL_", "NPY_", "OPENBLAS_",
            "TORCH_", "PYTORCH_", "CUDA_", "NVIDIA_", "LD_")
HEADER = struct.Struct("!I")


def switches(environ=os.environ) -> dict:
    return {k: v for k, v in environ.items() if k.startswith(SWITCHES)}


def handoff(module: str, kernels: dict) -> None:
    """Run this stage in the server named by ZF_PREFORK and exit with its status; return
    (and run here) when there is none, or it was loaded under other switches. Call after
    set_numerics, before torch is imported; `kernels` is what pin_cpu_kernels returned."""
    path = os.environ.pop(ENV, None)
    if not path:
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:  # not listening yet (still importing), or gone
        conn.close()
        return
    # the environment this process started with: the child pins its kernels itself
    outer = dict(os.environ)
    for k, v in kernels["outer"].items():
        if v is None:
            outer.pop(k, None)
        else:
            outer[k] = v
    body = json.dumps({"module": module, "argv": sys.argv[1:], "cwd": os.getcwd(),
                       "env": outer, "switches": switches()}).encode()
    socket.send_fds(conn, [HEADER.pack(len(body)) + body], [0, 1, 2])
    reader = conn.makefile("r")
    if reader.readline().strip() != "ok":  # other switches: run here
        conn.close()
        return
    status = reader.readline().strip()  # empty when the child was killed
    sys.exit(int(status) if status.lstrip("-").isdigit() else 1)


def _receive(conn) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    size = HEADER.unpack_from(data)[0]
    data = data[HEADER.size:]
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise ConnectionError("stage process went away")
        data += more
    return json.loads(data), fds


def _run_child(conn, req: dict, fds: list[int]) -> None:
    """In the forked child: become the stage process, run its module, report, exit."""
    os.setsid()  # its own group, so it can take down what it starts (torchrun)
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    # named like the stage: `ps`, and tests, find it by the module it runs
    with open("/proc/self/comm", "w") as f:
        f.write(req["module"][:15])
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    os.environ[CHILD] = "1"
    sys.path[0] = req["cwd"]
    for name in [m for m in sys.modules if m.split(".")[0] in ("stages", "pipeline")]:
        del sys.modules[name]  # the project's code as it is on disk now, as a new process

    def watch():  # the stage process was killed: so is this one, with what it started
        if not conn.recv(1):
            os.killpg(0, signal.SIGKILL)
    threading.Thread(target=watch, daemon=True).start()
    import runpy
    print(f"prefork: {req['module']} runs in the worker's preloaded process ({os.getpid()})",
          file=sys.stderr, flush=True)
    sys.argv = [req["module"], *req["argv"]]
    code = 1
    try:
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - a bug: its traceback, as a stage process shows it
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            conn.sendall(f"{code}\n".encode())
        finally:
            os._exit(code)


def serve(path: str, parent: int) -> None:
    """Load a stage's libraries under a stage's kernel switches, then fork one child per
    stage that asks. Exits with `parent`, the process that started it."""
    from pipeline.parent import die_with_parent
    if not die_with_parent(parent):  # the worker died before it was armed
        return
    import yaml

    from stages import KERNELS
    from stages.kernels import set_numerics
    with open("params.yaml") as f:
        set_numerics((yaml.safe_load(f) or {}).get("numerics", "exact"), KERNELS)
    import numpy  # noqa: F401 - the imports every stage pays
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401 - pulled in by the optimizer's first step
    import dvclive  # noqa: F401
    import tqdm  # noqa: F401
    mine = switches()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    server.bind(tmp)
    server.listen(16)
    os.replace(tmp, path)  # a client sees the socket only once it is listening
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are not waited for
    while True:
        conn, _ = server.accept()
        try:
            req, fds = _receive(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        if req["switches"] != mine:
            conn.sendall(b"no\n")
        elif os.fork() == 0:
            server.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            conn.sendall(b"ok\n")
            _run_child(conn, req, fds)
        for fd in fds:
            os.close(fd)
        conn.close()


if __name__ == "__main__":  # python -m stages.prefork SOCKET [PARENT PID]
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else os.getppid())
