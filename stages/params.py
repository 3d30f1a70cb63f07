"""params.yaml -> typed settings. The only place that knows the file's layout.

params.yaml is composed by `dvc exp run` from conf/ (Hydra) and holds the values the stages
use. A benchmark's `benchmarks.<bench>.model/train/eval` keys override the shared
`model/train/eval` sections for that table (null = use the shared value). Every value is
checked against its rule in RULES (a type, then a range or a set of choices): numbers in
any YAML spelling ("1e-3" is a string to PyYAML) are accepted, booleans must be booleans, and
anything else is one line naming the dotted key. The check stage walks every leaf of
params.yaml through the same table, so a key without a rule cannot get in.
"""
from __future__ import annotations

import hashlib
import json
import math
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

from pipeline.config import COMPILE_MODES, PRECISIONS
from pipeline.errors import UserError
from stages.kernels import NUMERICS

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
    interp_points: int = 11    # IMDB latent rows: sentences along a latent interpolation
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


# ------------------------------------------------------------------------------ rules

@dataclass(frozen=True)
class Rule:
    """What one key accepts: a type (as _value reads it), then `test` on the converted value;
    `why` is what a failure says. nullable: null is allowed (and means "not set")."""
    kind: object
    test: Callable | None = None
    why: str = ""
    nullable: bool = False


def at_least(kind, low) -> Rule:
    return Rule(kind, lambda v: v >= low, f"must be at least {low}")


def positive(kind=float) -> Rule:
    return Rule(kind, lambda v: v > 0, "must be positive")


def within(kind, low, high, why: str) -> Rule:
    return Rule(kind, lambda v: low <= v <= high, why)


def one_of(*choices, kind=str) -> Rule:
    return Rule(kind, lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


def _ints(v, n=None, low=0) -> bool:
    return ((n is None or len(v) == n)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= low for i in v))


FLAG, TEXT = Rule(bool), Rule(str)
NAMES = Rule(list, lambda v: all(isinstance(n, str) for n in v), "a list of row names", nullable=True)
DEVICE = Rule(str, lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()),
              "auto, cpu, cuda or cuda:N")
WEIGHT = Rule(float, lambda v: v >= 0, "a loss weight cannot be negative")

# Every key params.yaml may hold. `benchmarks.*` stands for any benchmark; a benchmark's
# model/train/eval override takes the shared key's rule (and may be null: "use the shared
# value"). tests/test_params_ranges.py fails when a key of params.yaml has no rule here.
RULES = {
    "profile_name": Rule(str, bool, "the profile's name (conf/profile/<name>.yaml)"),
    "numerics": one_of(*NUMERICS),
    "aux_weight": WEIGHT,
    "seeds": Rule(list, lambda v: len(v) > 0 and _ints(v) and len(set(v)) == len(v),
                  "a non-empty list of distinct seed indices >= 0, such as [0, 1]"),
    "benchmarks.*.source": TEXT,
    "benchmarks.*.rows": NAMES,
    "benchmarks.*.aux_rows": NAMES,
    "benchmarks.*.beta_rows": NAMES,
    "benchmarks.*.aux_weight": replace(WEIGHT, nullable=True),
    "benchmarks.*.betas.*": WEIGHT,
    "benchmarks.*.data.seed": at_least(int, 0),
    "benchmarks.*.data.minutes": positive(),
    "benchmarks.*.data.speakers": Rule(list, lambda v: _ints(v, 3, 1),
                                       "[train, valid, test] speaker counts, each at least 1"),
    "benchmarks.*.data.path": Rule(str, nullable=True),
    "benchmarks.*.data.on_bad_file": one_of("error", "skip"),
    "benchmarks.*.data.target_mode": one_of("correct", "faithful"),
    "benchmarks.*.data.streams": at_least(int, 1),
    "benchmarks.*.data.side": one_of(14, 28, kind=int),
    "benchmarks.*.data.vocab_size": at_least(int, 10),
    "model.rnn_dim": at_least(int, 1),
    "model.emb_dim": at_least(int, 1),
    "model.mlp_dim": at_least(int, 1),
    "model.z_dim": at_least(int, 1),
    "model.dropout": Rule(float, lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "model.output": TEXT,  # the families depend on the data: the check stage asks the models
    "model.gmm_components": at_least(int, 1),
    "model.ar_hidden": Rule(int, lambda v: v >= 0, "cannot be negative (0 = the family default)"),
    "model.z_force": FLAG,
    "model.cond_ln": FLAG,
    "model.use_l2": FLAG,
    "model.bwd": WEIGHT,
    "model.bwd_in_aux": FLAG,
    "model.lrelu_head": FLAG,
    "model.lrelu_emb": FLAG,
    "model.lrelu_bwd_head": FLAG,
    "model.param_budget": Rule(int, lambda v: v >= 0, "cannot be negative (0 = off)"),
    "train.lr": positive(),
    "train.adam_eps": positive(),
    "train.beta2": Rule(float, lambda v: 0 < v < 1, "must be in (0, 1)"),
    "train.weight_decay": at_least(float, 0),
    "train.clip": positive(),
    "train.batch_size": at_least(int, 1),
    "train.max_updates": at_least(int, 1),
    "train.max_epochs": at_least(int, 1),
    "train.kl_start": within(float, 0, 1, "must be in [0, 1]"),
    "train.kl_step": at_least(float, 0),
    "train.kl_cap": within(float, 1e-9, 1, "must be in (0, 1]"),
    "train.kl_anneal_all": FLAG,
    "train.aux_anneal_updates": Rule(int, lambda v: v >= 0, "cannot be negative (0 = no annealing)"),
    "train.aux_anneal_epochs": Rule(float, lambda v: v >= 0,
                                    "cannot be negative (0 = use train.aux_anneal_updates)"),
    "train.kl_skip": Rule(float, lambda v: v >= 0, "cannot be negative (0 = off)"),
    "train.lr_schedule": one_of("halve", "constant"),
    "train.lr_floor": positive(),
    "train.halve_against": one_of("previous", "best"),
    "train.eval_every": Rule(int, lambda v: v >= 0, "cannot be negative (0 = once per epoch)"),
    "train.valid_iwae_k": Rule(int, lambda v: v >= 0, "cannot be negative (0 = select on the ELBO)"),
    "train.log_every": at_least(int, 1),
    "train.ckpt_every": at_least(int, 1),
    "train.max_skip_fraction": within(float, 0, 1, "must be in [0, 1]"),
    "train.seed": at_least(int, 0),
    "train.select": one_of("best", "last"),
    "train.train_limit": Rule(int, lambda v: v >= 0, "cannot be negative (0 = all)"),
    "train.valid_limit": Rule(int, lambda v: v >= 0, "cannot be negative (0 = all)"),
    "train.compile": one_of(*COMPILE_MODES),
    "train.precision": one_of(*PRECISIONS),
    "train.device": DEVICE,
    "train.nproc": Rule(int, lambda v: v >= 1, "at least 1 (1 = one process)"),
    "train.threads": at_least(int, 1),
    "eval.batch_size": at_least(int, 1),
    "eval.iwae_k": Rule(int, lambda v: v >= 0, "cannot be negative (0 = no IWAE bound)"),
    "eval.iwae_chunk": at_least(int, 1),
    "eval.test_limit": Rule(int, lambda v: v >= 0, "cannot be negative (0 = all)"),
    "eval.valid": FLAG,
    "eval.samples": at_least(int, 0),
    "eval.sample_seconds": positive(),
    "eval.interp_points": Rule(int, lambda v: v == 0 or v >= 2, "0 (off) or at least 2"),
    "eval.seed": at_least(int, 0),
    "eval.device": DEVICE,
    "eval.threads": at_least(int, 1),
    "eval.compile": one_of(*COMPILE_MODES),
    "eval.precision": one_of(*PRECISIONS),
    "report.audio_examples": Rule(int, lambda v: v >= 0, "cannot be negative (0 = no audio)"),
    "report.audio_seconds": positive(),
    "report.dpi": within(int, 20, 300, "must be in [20, 300]"),  # the report stage's own ranges
    "report.n_mels": within(int, 8, 256, "must be in [8, 256]"),
    "report.active_threshold": at_least(float, 0),
}

# mappings whose keys are settings (walked by leaves()); null = empty for the overrides
SECTIONS = {"model": False, "train": False, "eval": False, "report": False, "benchmarks": False,
            "benchmarks.*": False, "benchmarks.*.data": True, "benchmarks.*.betas": True,
            "benchmarks.*.model": True, "benchmarks.*.train": True, "benchmarks.*.eval": True}


def pattern(key: str) -> str:
    """`benchmarks.timit.data.seed` -> `benchmarks.*.data.seed` (and any row under betas)."""
    parts = key.split(".")
    if parts[0] == "benchmarks" and len(parts) > 1:
        parts[1] = "*"
        if len(parts) > 3 and parts[2] == "betas":
            parts[3] = "*"
    return ".".join(parts)


def rule_for(key: str) -> Rule | None:
    parts = pattern(key).split(".")
    if len(parts) == 4 and parts[2] in ("model", "train", "eval"):  # an override
        shared = RULES.get(f"{parts[2]}.{parts[3]}")
        return shared and replace(shared, nullable=True)
    return RULES.get(".".join(parts))


def checked(key: str, value, kind=None):
    """value converted and range-checked by its key's rule (`kind`, a type annotation, for a
    key without one); one line naming the key otherwise."""
    rule = rule_for(key) or (Rule(kind) if kind is not None else None)
    if rule is None:
        parent = pattern(key).rpartition(".")[0]
        if parent.split(".")[2:] in (["model"], ["train"], ["eval"]):  # an override
            parent = parent.split(".")[2]
        known = sorted(k.rpartition(".")[2] for k in [*RULES, *SECTIONS] if k.rpartition(".")[0] == parent)
        raise ParamError(f"{key}: unknown key (misspelt?); known: {', '.join(known) or 'none'}")
    if value is None and rule.nullable:
        return None
    v = _value(rule.kind, value, key)
    if rule.test is not None and not rule.test(v):
        raise ParamError(f"{key}={value!r}: {rule.why}")
    return v


def leaves(tree: dict, prefix: str = ""):
    """(dotted key, value) of every setting in params, sections opened."""
    for k, v in tree.items():
        key = f"{prefix}{k}"
        nullable = SECTIONS.get(pattern(key))
        if nullable is None:
            yield key, v
        elif v is None and nullable:
            continue
        elif not isinstance(v, dict):
            raise ParamError(f"{key}: expected a mapping, got {v!r}")
        else:
            yield from leaves(v, key + ".")


def typed(cls, values: dict, where: str, **fixed):
    """cls(**values) with every value checked by its rule (or its field's type); unknown
    keys and impossible values are one line naming `where.<key>`."""
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
    kw = {k: checked(f"{where}.{k}", v, hints[k]) for k, v in values.items()}
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
    return checked("seeds", params.get("seeds"))


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
    source = checked(f"benchmarks.{bench}.source", b.get("source", "embedded"))
    return typed(DataConfig, data, f"benchmarks.{bench}.data", bench=bench, source=source)


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
    betas = b.get("betas") or {}
    if not isinstance(betas, dict):
        raise ParamError(f"benchmarks.{bench}.betas: expected a mapping of beta row -> aux weight")
    beta = [n for n, r in catalogue.items() if r.beta]  # a profile may train fewer of them
    stray = sorted(set(betas) - set(beta))
    if stray:
        raise ParamError(f"benchmarks.{bench}.betas.{stray[0]}: not a beta row of this table "
                         f"(misspelt?); its beta rows: {', '.join(beta) or 'none'}")
    return out


def aux_weight(params: dict, bench: str, row) -> float:
    """The final aux weight this row trains with (0 for rows without the aux cost)."""
    b = bench_params(params, bench)
    if row.aux:
        own = b.get("aux_weight")
        key = f"benchmarks.{bench}.aux_weight" if own is not None else "aux_weight"
        return checked(key, own if own is not None else params.get("aux_weight"))
    if row.beta:
        betas = b.get("betas") or {}
        if row.name not in betas:
            raise ParamError(f"benchmarks.{bench}.betas.{row.name}: set the fixed aux weight of this row")
        return checked(f"benchmarks.{bench}.betas.{row.name}", betas[row.name])
    return 0.0


def origin(params: dict, bench: str, name: str, key: str) -> str:
    """The dotted key a section value came from: the benchmark's override or the shared one."""
    over = bench_params(params, bench).get(name) or {}
    return f"benchmarks.{bench}.{name}.{key}" if over.get(key) is not None else f"{name}.{key}"


def _schedule_relations(params: dict, bench: str, t: dict) -> None:
    """The two rules between train keys, named from the key a user is likely to have
    changed (lr, kl_start) with the one it is measured against."""
    key = lambda k: origin(params, bench, "train", k)  # noqa: E731
    lr, floor = checked(key("lr"), t.get("lr")), checked(key("lr_floor"), t.get("lr_floor"))
    if checked(key("lr_schedule"), t.get("lr_schedule")) == "halve" and lr < floor:
        raise ParamError(f"{key('lr')}={lr:g} is below {key('lr_floor')}={floor:g}, where the "
                         f"halving schedule stops: lower {key('lr_floor')} with it (or set "
                         f"train.lr_schedule: constant)")
    start, cap = checked(key("kl_start"), t.get("kl_start")), checked(key("kl_cap"), t.get("kl_cap"))
    if start > cap:
        raise ParamError(f"{key('kl_start')}={start:g} is above {key('kl_cap')}={cap:g}: the KL "
                         "weight starts at kl_start and grows to kl_cap")


def train_settings(params: dict, bench: str, row, seed_index: int):
    """(TrainConfig, TrainOptions) of one cell: the row decides kla and the aux weight, the
    seed index offsets train.seed."""
    from pipeline.config import TrainConfig
    t = section(params, bench, "train")
    opt_keys = {f.name for f in fields(TrainOptions)}
    opts = typed(TrainOptions, {k: v for k, v in t.items() if k in opt_keys}, "train")
    core = {k: v for k, v in t.items() if k not in opt_keys}
    w = aux_weight(params, bench, row)
    fixed = dict(kl_anneal=row.kla, aux_weight=w)
    if w == 0:
        core["aux_anneal_updates"] = 0
        core["aux_anneal_epochs"] = 0.0
    core["seed"] = checked("train.seed", core.get("seed", 0)) + seed_index
    _schedule_relations(params, bench, t)
    cfg = typed(TrainConfig, core, "train", **fixed)
    if cfg.batch_size % opts.nproc:
        raise ParamError(f"train.batch_size={cfg.batch_size} does not split over train.nproc="
                         f"{opts.nproc} processes: use a multiple of {opts.nproc}")
    return cfg, opts


def eval_settings(params: dict, bench: str) -> EvalOptions:
    return typed(EvalOptions, section(params, bench, "eval"), "eval")


def model_settings(params: dict, bench: str, row, manifest: dict):
    """The row's ModelConfig as params give it; the caller applies the parameter budget
    (pipeline.models.budget), so that the data stages, which read this module, do not
    import the models."""
    from pipeline.config import ModelConfig
    m = section(params, bench, "model")
    kind = manifest["kind"]
    if kind != "audio":  # pixels are Bernoulli, tokens categorical: the data decides
        m["output"] = {"binary": "bernoulli", "tokens": "categorical"}[kind]
    key = origin(params, bench, "model", "lrelu_emb")   # before ModelConfig, which refuses it too
    if checked(key, m.get("lrelu_emb", False)) and (row.model not in ("zforcing", "rnn") or kind != "binary"):
        raise ParamError(f"{key}: only the MNIST table's models (zforcing, rnn on binary pixels) "
                         f"have it, not {row.model} on {kind} data")
    cfg = typed(ModelConfig, m, "model", name=row.model, data=kind, x_dim=int(manifest["x_dim"]))
    if cfg.bwd_in_aux and row.model == "zforcing":
        raise ParamError(f"{origin(params, bench, 'model', 'bwd_in_aux')}: only the language model "
                         "(imdb) has it; the speech and MNIST Z-Forcing weighs its backward head "
                         "by model.bwd alone")
    if cfg.lrelu_head and row.model not in ("zforcing", "rnn"):
        raise ParamError(f"{origin(params, bench, 'model', 'lrelu_head')}: only the Z-Forcing and "
                         f"LSTM models of the MNIST table (zforcing, rnn) have it, not {row.model}")
    # the MNIST table's LSTM row shares the table's model section and has no backward head
    if cfg.lrelu_bwd_head and row.model not in ("zforcing", "rnn"):
        raise ParamError(f"{origin(params, bench, 'model', 'lrelu_bwd_head')}: only the Z-Forcing "
                         f"model's backward head (model.bwd > 0) has it, not {row.model}")
    return cfg


def report_settings(params: dict) -> ReportOptions:
    return typed(ReportOptions, params.get("report") or {}, "report")


def digest(obj) -> str:
    """sha256 of a JSON-able value (sorted keys): the provenance of effective settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
