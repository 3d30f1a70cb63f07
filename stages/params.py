"""params.yaml -> typed settings. The only place that knows the file's layout.

params.yaml is composed by `dvc exp run` from conf/ (Hydra) and holds the values the stages
use. A benchmark's `benchmarks.<bench>.model/train/eval` keys override the shared
`model/train/eval` sections for that table (null = use the shared value). Every value is
type-checked: numbers in any YAML spelling ("1e-3" is a string to PyYAML) are accepted,
booleans must be booleans, and anything else is one line naming the key.
"""
from __future__ import annotations

import hashlib
import json
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from pipeline.config import COMPILE_MODES, PRECISIONS
from pipeline.errors import UserError

TOP = ("profile_name", "numerics", "aux_weight", "seeds", "benchmarks", "model", "train", "eval", "report")
BENCH = ("source", "data", "rows", "aux_rows", "beta_rows", "aux_weight", "betas", "model", "train", "eval")


class ParamError(UserError):
    """A value in params.yaml that cannot be used; names the key and what to write."""


@dataclass
class TrainOptions:
    """Stage-level training options (not part of the optimisation itself)."""
    select: str = "best"       # weights kept: best on validation | last
    train_limit: int = 0       # >0: only this many training sequences
    valid_limit: int = 0
    device: str = "auto"       # auto | cpu | cuda | cuda:N
    threads: int = 1
    nproc: int = 1             # >1: data-parallel processes (torchrun), sharing the batch


@dataclass
class EvalOptions:
    batch_size: int = 32
    iwae_k: int = 25
    iwae_chunk: int = 5
    test_limit: int = 0
    valid: bool = True
    samples: int = 3
    sample_seconds: float = 2.0
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    compile: str = "off"       # off | default | max, as train.compile (pipeline/compile.py)
    precision: str = "fp32"    # fp32 | tf32 | bf16, as train.precision


@dataclass
class ReportOptions:
    audio_examples: int = 2
    audio_seconds: float = 3.0
    dpi: int = 80
    n_mels: int = 64
    active_threshold: float = 0.01


def read(path="params.yaml") -> dict:
    import yaml
    p = Path(path)
    if not p.exists():
        raise ParamError(f"{p} not found (run from the repository root)")
    try:
        params = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamError(f"{p} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise ParamError(f"{p}: expected a mapping of sections")
    unknown = sorted(set(params) - set(TOP))
    if unknown:
        raise ParamError(f"{p}: unknown key {unknown[0]!r} (misspelt?); known: {', '.join(TOP)}")
    missing = [k for k in TOP if k not in params]
    if missing:
        raise ParamError(f"{p}: missing key {missing[0]!r}; compose it with `dvc exp run` "
                         "or copy it from conf/config.yaml")
    return params


# ------------------------------------------------------------------------------ typing

def _value(kind, value, key: str):
    """value checked (and numbers converted) against the annotation `kind`."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
        origin = typing.get_origin(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ParamError(f"{key}: expected true or false, got {value!r}")
    if kind in (int, float):
        v = value
        if isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise ParamError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ParamError(f"{key}: expected a finite number, got {value!r}")
        if kind is int:
            if v != int(v):
                raise ParamError(f"{key}: expected a whole number, got {value!r}")
            return int(v)
        return float(v)
    if kind is str:
        if isinstance(value, str):
            return value
        raise ParamError(f"{key}: expected a string, got {value!r}")
    if kind is list or origin is list:
        if isinstance(value, list):
            return list(value)
        raise ParamError(f"{key}: expected a list, got {value!r}")
    if kind is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ParamError(f"{key}: expected a mapping, got {value!r}")
    return value


def typed(cls, values: dict, where: str, **fixed):
    """cls(**values) with every value checked against its field's type; unknown keys and
    impossible values are one line naming `where.<key>`."""
    if not isinstance(values, dict):
        raise ParamError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParamError(f"{where}.{unknown[0]}: unknown key (misspelt?); known: "
                         f"{', '.join(sorted(known - set(fixed)))}")
    clash = sorted(set(values) & set(fixed))
    if clash:
        raise ParamError(f"{where}.{clash[0]}: set by the row or the data, not a parameter here; remove it")
    kw = {k: _value(hints[k], v, f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kw, **fixed)
    except UserError as err:
        raise ParamError(f"{where}: {err}") from None


def section(params: dict, bench: str, name: str) -> dict:
    """The shared section `name` with the benchmark's non-null overrides applied."""
    shared = params.get(name)
    if not isinstance(shared, dict):
        raise ParamError(f"params.yaml: `{name}` must be a mapping")
    over = bench_params(params, bench).get(name) or {}
    if not isinstance(over, dict):
        raise ParamError(f"benchmarks.{bench}.{name}: expected a mapping of overrides")
    for k in over:
        if k not in shared:
            raise ParamError(f"benchmarks.{bench}.{name}.{k}: not a key of `{name}` (misspelt?)")
    return {**shared, **{k: v for k, v in over.items() if v is not None}}


def bench_params(params: dict, bench: str) -> dict:
    benches = params.get("benchmarks")
    if not isinstance(benches, dict) or bench not in benches:
        known = ", ".join(benches) if isinstance(benches, dict) else "none"
        raise ParamError(f"benchmark {bench!r} is not under `benchmarks` in params.yaml (known: {known})")
    b = benches[bench]
    if not isinstance(b, dict):
        raise ParamError(f"benchmarks.{bench}: expected a mapping")
    unknown = sorted(set(b) - set(BENCH))
    if unknown:
        raise ParamError(f"benchmarks.{bench}.{unknown[0]}: unknown key (misspelt?); known: {', '.join(BENCH)}")
    return b


def seeds(params: dict) -> list[int]:
    s = params.get("seeds")
    if not isinstance(s, list) or not s:
        raise ParamError(f"seeds: expected a non-empty list of seed indices such as [0, 1], got {s!r}")
    out = [_value(int, v, "seeds[]") for v in s]
    if len(set(out)) != len(out) or min(out) < 0:
        raise ParamError(f"seeds: indices must be distinct and >= 0, got {s}")
    return out


# ------------------------------------------------------------------------------ per stage

def data_config(params: dict, bench: str):
    from pipeline.datasets.registry import DATA_KEYS, DataConfig
    b = bench_params(params, bench)
    data = b.get("data") or {}
    if not isinstance(data, dict):
        raise ParamError(f"benchmarks.{bench}.data: expected a mapping")
    extra = sorted(set(data) - DATA_KEYS.get(bench, set()))
    if extra:
        raise ParamError(f"benchmarks.{bench}.data.{extra[0]}: not a setting of this benchmark; "
                         f"known: {', '.join(sorted(DATA_KEYS.get(bench, ())))}")
    source = _value(str, b.get("source", "embedded"), f"benchmarks.{bench}.source")
    cfg = typed(DataConfig, data, f"benchmarks.{bench}.data", bench=bench, source=source)
    rules = [("minutes", cfg.minutes > 0, "must be positive"),
             ("streams", cfg.streams > 0, "must be positive"),
             ("on_bad_file", cfg.on_bad_file in ("error", "skip"), "error or skip"),
             ("target_mode", cfg.target_mode in ("correct", "faithful"), "correct or faithful"),
             ("side", cfg.side in (14, 28), "14 or 28"),
             ("vocab_size", cfg.vocab_size >= 10, "at least 10"),
             ("speakers", len(cfg.speakers) == 3 and all(isinstance(n, int) and not isinstance(n, bool)
                                                          and n >= 1 for n in cfg.speakers),
              "[train, valid, test] speaker counts, each at least 1")]
    for key, ok, why in rules:
        if key in data and not ok:
            raise ParamError(f"benchmarks.{bench}.data.{key}={data[key]!r}: {why}")
    return cfg


def table_rows(params: dict, bench: str) -> dict:
    """{row name: Row} of the rows this table trains, checked against the table's catalogue."""
    from pipeline.rows import TABLE_ROWS
    b = bench_params(params, bench)
    catalogue = TABLE_ROWS.get(bench)
    if catalogue is None:
        raise ParamError(f"benchmarks.{bench}: no such table; known: {', '.join(TABLE_ROWS)}")
    out = {}
    for key, kind in (("rows", "plain"), ("aux_rows", "aux"), ("beta_rows", "beta")):
        names = b.get(key) or []
        if not isinstance(names, list):
            raise ParamError(f"benchmarks.{bench}.{key}: expected a list of row names")
        for n in names:
            row = catalogue.get(n)
            if row is None:
                raise ParamError(f"benchmarks.{bench}.{key}: {n!r} is not a row of this table; "
                                 f"rows: {', '.join(catalogue)}")
            own = "aux" if row.aux else "beta" if row.beta else "plain"
            if own != kind:
                other = {"aux": "aux_rows", "beta": "beta_rows", "plain": "rows"}[own]
                raise ParamError(f"benchmarks.{bench}.{key}: move {n!r} to {other} (aux_rows read "
                                 "aux_weight, beta_rows a fixed weight from betas)")
            out[n] = row
    return out


def aux_weight(params: dict, bench: str, row) -> float:
    """The final aux weight this row trains with (0 for rows without the aux cost)."""
    b = bench_params(params, bench)
    if row.aux:
        own = b.get("aux_weight")
        key = f"benchmarks.{bench}.aux_weight" if own is not None else "aux_weight"
        w = _value(float, own if own is not None else params.get("aux_weight"), key)
    elif row.beta:
        betas = b.get("betas") or {}
        if row.name not in betas:
            raise ParamError(f"benchmarks.{bench}.betas.{row.name}: set the fixed aux weight of this row")
        key, w = f"benchmarks.{bench}.betas.{row.name}", _value(float, betas[row.name], "")
    else:
        return 0.0
    if w < 0:
        raise ParamError(f"{key}={w}: an aux weight cannot be negative")
    return w


def train_settings(params: dict, bench: str, row, seed_index: int):
    """(TrainConfig, TrainOptions) of one cell: the row decides kla and the aux weight, the
    seed index offsets train.seed."""
    from pipeline.config import TrainConfig
    t = section(params, bench, "train")
    opt_keys = {f.name for f in fields(TrainOptions)}
    opts = typed(TrainOptions, {k: v for k, v in t.items() if k in opt_keys}, "train")
    if opts.select not in ("best", "last"):
        raise ParamError(f"train.select={opts.select!r}: use best or last")
    for k in ("train_limit", "valid_limit"):
        if getattr(opts, k) < 0:
            raise ParamError(f"train.{k}={getattr(opts, k)}: cannot be negative (0 = all)")
    if opts.threads < 1:
        raise ParamError(f"train.threads={opts.threads}: at least 1")
    if opts.nproc < 1:
        raise ParamError(f"train.nproc={opts.nproc}: at least 1 (1 = one process)")
    check_device(opts.device, "train.device")
    core = {k: v for k, v in t.items() if k not in opt_keys}
    w = aux_weight(params, bench, row)
    fixed = dict(kl_anneal=row.kla, aux_weight=w)
    if w == 0:
        core["aux_anneal_updates"] = 0
    core["seed"] = _value(int, core.get("seed", 0), "train.seed") + seed_index
    cfg = typed(TrainConfig, core, "train", **fixed)
    if cfg.batch_size % opts.nproc:
        raise ParamError(f"train.batch_size={cfg.batch_size} does not split over train.nproc="
                         f"{opts.nproc} processes: use a multiple of {opts.nproc}")
    return cfg, opts


def eval_settings(params: dict, bench: str) -> EvalOptions:
    e = typed(EvalOptions, section(params, bench, "eval"), "eval")
    for k in ("iwae_k", "test_limit", "samples"):
        if getattr(e, k) < 0:
            raise ParamError(f"eval.{k}={getattr(e, k)}: cannot be negative")
    for k in ("batch_size", "iwae_chunk", "threads"):
        if getattr(e, k) < 1:
            raise ParamError(f"eval.{k}={getattr(e, k)}: must be at least 1")
    if e.sample_seconds <= 0:
        raise ParamError(f"eval.sample_seconds={e.sample_seconds}: must be positive")
    for key, value, allowed in (("compile", e.compile, COMPILE_MODES),
                                ("precision", e.precision, PRECISIONS)):
        if value not in allowed:
            raise ParamError(f"eval.{key}={value!r}: use one of {', '.join(allowed)}")
    check_device(e.device, "eval.device")
    return e


def model_settings(params: dict, bench: str, row, manifest: dict):
    """The row's ModelConfig as params give it; the caller applies the parameter budget
    (pipeline.models.budget), so that the data stages, which read this module, do not
    import the models."""
    from pipeline.config import ModelConfig
    m = section(params, bench, "model")
    kind = manifest["kind"]
    if kind != "audio":  # pixels are Bernoulli, tokens categorical: the data decides
        m["output"] = {"binary": "bernoulli", "tokens": "categorical"}[kind]
    return typed(ModelConfig, m, "model", name=row.model, data=kind, x_dim=int(manifest["x_dim"]))


def report_settings(params: dict) -> ReportOptions:
    return typed(ReportOptions, params.get("report") or {}, "report")


def check_device(device: str, key: str) -> None:
    ok = device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    if not ok:
        raise ParamError(f"{key}={device!r}: use auto, cpu, cuda or cuda:N")


def digest(obj) -> str:
    """sha256 of a JSON-able value (sorted keys): the provenance of effective settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
