"""What every stage script shares: reading params.yaml with its profile, one-line errors,
thread and device setup, atomic JSON. Stages run from the repository root as
`python -m stages.<name>`; nothing under pipeline/ reads params.yaml.

Profiles: `profile` (top level) names an entry of `profiles`, whose dotted keys override
the sections, e.g. profiles.default["train.max_updates"] = 400. An override of a key that
does not exist is an error (catches misspellings).
"""
from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml


class StageError(Exception):
    """A user-facing problem: printed as one line, exit status 2, nothing deleted."""


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path} not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise StageError(f"{path} is not valid YAML: {err}") from err


def resolve_profile(params: dict, source="params.yaml") -> dict:
    """The parameters with the selected profile's dotted overrides applied."""
    out = copy.deepcopy(params)
    profiles = out.get("profiles", {}) or {}
    if "profile" not in out and not profiles:
        return out
    name = out.get("profile", "default")
    if name not in profiles:
        raise StageError(f"{source}: profile {name!r} is not defined under `profiles` "
                         f"(defined: {', '.join(profiles) or 'none'}); set `profile` to one of them")
    for dotted, value in (profiles[name] or {}).items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise StageError(f"{source}: profiles.{name} overrides {dotted!r}, but "
                                 f"{'.'.join(parents)} is not a section of {source}")
            node = node[key]
        if leaf not in node:
            raise StageError(f"{source}: profiles.{name} overrides {dotted!r}, which is not a "
                             f"parameter (misspelt?); known in that section: {', '.join(node)}")
        node[leaf] = value
    return out


def load_params(path="params.yaml") -> dict:
    return resolve_profile(read_yaml(path), str(path))


def section(params: dict, name: str, source="params.yaml") -> dict:
    if not isinstance(params.get(name), dict):
        raise StageError(f"{source} has no `{name}:` section")
    return dict(params[name])


def setup_torch(threads: int, device: str = "auto"):
    """Fix the thread count (results and speed depend on it) and pick the device."""
    import torch
    torch.set_num_threads(max(1, int(threads)))
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StageError(f"device {device!r} asked for, but CUDA is not available; "
                         "set train.device / eval.device to auto or cpu")
    return torch.device(device)


def write_json(path, obj) -> None:
    """Atomic, stable JSON (sorted keys) so identical results give identical bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, allow_nan=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# errors a user can act on (bad params, missing or corrupt input): one line, exit 2
USER_ERRORS = {"StageError", "ConfigError", "FileNotFoundError", "KeyError", "BadAudio",
               "BadInput", "DownloadError", "IntegrityError", "UnsafeArchive"}


def run(main) -> None:
    """Call main(); turn user-facing errors into one line on stderr and exit status 2.
    Outputs are written atomically by the stages, so nothing computed before is lost."""
    try:
        main()
    except Exception as err:
        if not any(c.__name__ in USER_ERRORS for c in type(err).__mro__):
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
