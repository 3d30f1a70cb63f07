"""Evaluation outputs -> pandas tables beside the paper's numbers (an edge module).

Inputs (written by the evaluate stage): eval/<row>/metrics.json, one per trained row.
The published values live in paper_numbers.yaml next to this file, never in code.

Our number for a row is the best bound its metrics hold: the importance-weighted bound
when IWAE was run, else the single-sample ELBO; for exact models both equal log p(y),
so the row is marked "=" and a latent model "≥" (speech: log-likelihood per sequence).
On the MNIST column the paper reports a negative log-likelihood, so our number is
minus the per-sequence bound and a bound becomes "≤".

Provenance comes from dvc.lock (the hashes DVC recorded for the data, code, parameters
and outputs of the train and evaluate stages of a row), never from git: a committed page
cannot contain the commit that commits it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import pandas as pd
import yaml

from ..rows import PAPER_ORDER, ROWS

PAPER_NUMBERS = os.path.join(os.path.dirname(__file__), "paper_numbers.yaml")
SIGNS = {"=": "=", ">=": "≥", "<=": "≤"}
NOT_RECORDED = "not yet recorded"


# ----------------------------------------------------------------------------- inputs

def load_paper_numbers(path: str = PAPER_NUMBERS) -> dict:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    for key in ("source", "columns", "rows", "context"):
        if key not in data:
            raise ValueError(f"{path}: missing top-level key {key!r}")
    for name, cols in data["rows"].items():
        for col, entry in cols.items():
            if col not in data["columns"]:
                raise ValueError(f"{path}: row {name!r} has unknown column {col!r}")
            if entry.get("kind") not in SIGNS:
                raise ValueError(f"{path}: row {name!r}/{col}: kind must be one of {list(SIGNS)}")
    return data


def load_metrics(eval_dir: str) -> pd.DataFrame:
    """One DataFrame row per eval/<row>/metrics.json, sorted in the paper's row order.

    Columns: row, model, paper_name, dataset, column, exact, params, profile, and the raw
    dicts test, test_quirk, valid, settings, train; plus has_latent / has_samples flags.
    """
    records = []
    if os.path.isdir(eval_dir):
        for name in sorted(os.listdir(eval_dir)):
            path = os.path.join(eval_dir, name, "metrics.json")
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8") as f:
                m = json.load(f)
            for key in ("row", "column", "test"):
                if key not in m:
                    raise ValueError(f"{path}: missing key {key!r}")
            if m["row"] != name:
                raise ValueError(f"{path}: says row {m['row']!r} but lives in eval/{name}")
            row = ROWS.get(m["row"])
            records.append({
                "row": m["row"],
                "model": m.get("model", row.model if row else ""),
                "paper_name": m.get("paper_name", row.paper_name if row else m["row"]),
                "dataset": m.get("dataset", ""),
                "column": m["column"],
                "exact": bool(m.get("exact", m["test"].get("exact", False))),
                "params": m.get("params"),
                "profile": m.get("profile", ""),
                "test": m["test"],
                "test_quirk": m.get("test_quirk"),
                "valid": m.get("valid"),
                "settings": m.get("settings") or {},
                "train": m.get("train") or {},
                "has_latent": os.path.isfile(os.path.join(eval_dir, name, "latent.json")),
                "has_samples": os.path.isfile(os.path.join(eval_dir, name, "samples.npz")),
            })
    cols = ["row", "model", "paper_name", "dataset", "column", "exact", "params", "profile",
            "test", "test_quirk", "valid", "settings", "train", "has_latent", "has_samples"]
    df = pd.DataFrame.from_records(records, columns=cols)
    order = {r: i for i, r in enumerate(ROWS)}
    df["_order"] = [order.get(r, len(order)) for r in df["row"]]
    return df.sort_values(["_order", "row"]).drop(columns="_order").reset_index(drop=True)


def columns_present(metrics: pd.DataFrame) -> list[str]:
    """Paper columns with at least one evaluated row, in the order timit, blizzard, mnist, others."""
    seen = list(dict.fromkeys(metrics["column"]))
    first = [c for c in ("timit", "blizzard", "mnist") if c in seen]
    return first + sorted(c for c in seen if c not in first)


# ----------------------------------------------------------------------------- numbers

@dataclass(frozen=True)
class Bound:
    value: float         # nats per sequence, log-likelihood direction (higher is better)
    name: str            # "exact log-likelihood" | "IWAE (k=...)" | "ELBO (1 sample)"
    exact: bool

    @property
    def sign(self) -> str:
        return "=" if self.exact else "≥"


def best_bound(result: dict | None, exact: bool) -> Bound | None:
    """The tightest bound a bounds.evaluate result holds, per sequence."""
    if not result:
        return None
    if exact or result.get("exact"):
        value = result.get("log_px_per_seq", result.get("elbo_per_seq"))
        return Bound(float(value), "exact log-likelihood", True)
    if result.get("iwae_per_seq") is not None:
        return Bound(float(result["iwae_per_seq"]), f"IWAE (k={result.get('iwae_k', '?')})", False)
    return Bound(float(result["elbo_per_seq"]), "ELBO (1 sample)", False)


def in_column_units(bound: Bound | None, column_info: dict) -> tuple[float | None, str]:
    """(value, sign) in the units the paper's column uses (MNIST: NLL, bound becomes ≤)."""
    if bound is None:
        return None, ""
    if column_info.get("quantity") == "negative_log_likelihood":
        return -bound.value, "=" if bound.exact else "≤"
    return bound.value, bound.sign


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


# ----------------------------------------------------------------------------- provenance

def load_lock(path: str) -> dict | None:
    """dvc.lock as a dict, or None when it does not exist yet (first run)."""
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        lock = yaml.safe_load(f) or {}
    return lock.get("stages", lock) if isinstance(lock, dict) else None


def _stage_for(lock: dict, prefixes: tuple[str, ...], row: str) -> tuple[str, dict] | None:
    """The lock entry of a foreach/matrix stage for `row`: `<prefix...>@<key>` with key == row
    or key containing row as a '-'-separated part (matrix names such as synthetic-zforcing)."""
    best = None
    for name in sorted(lock):
        base, _, key = name.partition("@")
        if not key or not base.startswith(prefixes):
            continue
        if key == row or row in key.split("-"):
            if best is None or key == row:
                best = (name, lock[name])
    return best


def _md5(entry: dict) -> str:
    return str(entry.get("md5") or entry.get("hash_value") or entry.get("etag") or "")


def _digest(items: list[str]) -> str:
    return hashlib.md5("\n".join(items).encode("utf-8")).hexdigest()


def stage_provenance(name: str, entry: dict) -> dict:
    """Hashes of one lock entry: data deps (under data/), code deps (the rest), params
    (an md5 over the recorded values, canonical JSON), and outputs."""
    deps = entry.get("deps") or []
    data = [(d["path"], _md5(d)) for d in deps if str(d.get("path", "")).startswith("data")]
    code = [(d["path"], _md5(d)) for d in deps if not str(d.get("path", "")).startswith("data")]
    params = entry.get("params") or {}
    outs = [(o["path"], _md5(o)) for o in entry.get("outs") or []]
    return {
        "stage": name,
        "data": data,
        "code": code,
        "code_md5": _digest([f"{p} {h}" for p, h in code]) if code else "",
        "params": params,
        "params_md5": _digest([json.dumps(params, sort_keys=True, default=str)]) if params else "",
        "outs": outs,
    }


def row_provenance(lock: dict | None, row: str) -> dict:
    """{"train": stage_provenance | None, "evaluate": ... | None, "recorded": bool}."""
    out = {"train": None, "evaluate": None, "recorded": False}
    if not lock:
        return out
    for key, prefixes in (("train", ("train",)), ("evaluate", ("eval",))):
        hit = _stage_for(lock, prefixes, row)
        if hit:
            out[key] = stage_provenance(*hit)
    out["recorded"] = out["train"] is not None or out["evaluate"] is not None
    return out


def short(h: str, n: int = 10) -> str:
    return h[:n] if h else ""


def provenance_line(prov: dict) -> str:
    """One line of short hashes for under a number; 'not yet recorded' before the first lock."""
    if not prov.get("recorded"):
        return NOT_RECORDED
    parts = []
    tr, ev = prov.get("train"), prov.get("evaluate")
    src = tr or ev
    if src and src["data"]:
        parts.append("data " + "+".join(short(h) for _, h in src["data"]))
    if tr:
        parts.append("code " + short(tr["code_md5"]))
        parts.append("params " + short(tr["params_md5"]))
        if tr["outs"]:
            parts.append("model " + "+".join(short(h) for _, h in tr["outs"]))
    else:
        parts.append("train " + NOT_RECORDED)
    if ev:
        if ev["outs"]:
            parts.append("eval " + "+".join(short(h) for _, h in ev["outs"]))
    else:
        parts.append("evaluate " + NOT_RECORDED)
    return " · ".join(parts)


def provenance_table(metrics: pd.DataFrame, lock: dict | None) -> pd.DataFrame:
    """Full hashes per row and stage (for the page's provenance section)."""
    recs = []
    for row in metrics["row"]:
        prov = row_provenance(lock, row)
        for stage in ("train", "evaluate"):
            p = prov[stage]
            if p is None:
                recs.append({"row": row, "stage": stage, "kind": "—", "path": "—",
                             "md5": NOT_RECORDED})
                continue
            for path, h in p["data"]:
                recs.append({"row": row, "stage": p["stage"], "kind": "data", "path": path, "md5": h})
            for path, h in p["code"]:
                recs.append({"row": row, "stage": p["stage"], "kind": "code", "path": path, "md5": h})
            if p["params"]:
                recs.append({"row": row, "stage": p["stage"], "kind": "params",
                             "path": ", ".join(sorted(p["params"])), "md5": p["params_md5"]})
            for path, h in p["outs"]:
                recs.append({"row": row, "stage": p["stage"], "kind": "out", "path": path, "md5": h})
    return pd.DataFrame.from_records(recs, columns=["row", "stage", "kind", "path", "md5"])


# ----------------------------------------------------------------------------- tables

def column_table(metrics: pd.DataFrame, column: str, paper: dict | None = None,
                 lock: dict | None = None) -> pd.DataFrame:
    """The page's main table for one paper column: our number beside the paper's.

    One row per evaluated row of that column, in rows.py order, with: ours (column units),
    sign (= / ≥ / ≤), bound (which estimate), paper, paper_sign, confidence, diff
    (ours - paper, column units), better (whether ours is better in the column's
    direction, None without a paper number), params, quirk (the authors' padded-batch
    denominator, or None), quirk_diff, valid, provenance (short line) and settings summary.
    """
    paper = paper or load_paper_numbers()
    info = paper["columns"].get(column, {"quantity": "log_likelihood", "direction": "higher"})
    higher = info.get("direction", "higher") == "higher"
    sub = metrics[metrics["column"] == column]
    recs = []
    for _, m in sub.iterrows():
        b = best_bound(m["test"], m["exact"])
        ours, sign = in_column_units(b, info)
        q, _ = in_column_units(best_bound(m["test_quirk"], m["exact"]), info)
        v, _ = in_column_units(best_bound(m["valid"], m["exact"]), info)
        pub = paper["rows"].get(m["paper_name"], {}).get(column)
        pval = float(pub["value"]) if pub else None
        diff = ours - pval if (pub and ours is not None) else None
        recs.append({
            "row": m["row"], "paper_name": m["paper_name"], "model": m["model"],
            "dataset": m["dataset"], "ours": ours, "sign": sign,
            "bound": b.name if b else "", "elbo": in_column_units(
                Bound(float(m["test"]["elbo_per_seq"]), "", m["exact"]), info)[0],
            "per_step": float(m["test"].get("elbo_per_step", float("nan"))),
            "paper": pval, "paper_sign": SIGNS[pub["kind"]] if pub else "",
            "confidence": pub.get("confidence", "") if pub else "",
            "diff": diff,
            "better": (None if diff is None else (diff > 0 if higher else diff < 0)),
            "params": m["params"],
            "quirk": q, "quirk_diff": (q - ours) if (q is not None and ours is not None) else None,
            "valid": v,
            "kl": m["test"].get("kl_per_seq"), "active_units": m["test"].get("active_units"),
            "provenance": provenance_line(row_provenance(lock, m["row"])),
            "settings": settings_summary(m["settings"]),
        })
    cols = ["row", "paper_name", "model", "dataset", "ours", "sign", "bound", "elbo", "per_step",
            "paper", "paper_sign", "confidence", "diff", "better", "params", "quirk", "quirk_diff",
            "valid", "kl", "active_units", "provenance", "settings"]
    return pd.DataFrame.from_records(recs, columns=cols)


def context_table(column: str, paper: dict | None = None) -> pd.DataFrame:
    """Later / neighbouring published results for orientation (never compared row by row)."""
    paper = paper or load_paper_numbers()
    recs = []
    for c in paper["context"]:
        e = c.get(column)
        if e:
            recs.append({"model": c["name"], "value": float(e["value"]), "sign": SIGNS[e["kind"]],
                         "note": e.get("note", ""), "confidence": c.get("confidence", ""),
                         "source": c.get("source", "")})
    return pd.DataFrame.from_records(recs, columns=["model", "sign", "value", "note",
                                                    "confidence", "source"])


# ----------------------------------------------------------------------------- settings

SUMMARY_KEYS = [
    ("model", "output"), ("model", "rnn_dim"), ("model", "z_dim"), ("model", "z_force"),
    ("model", "cond_ln"), ("model", "use_l2"), ("model", "bwd"), ("train", "kl_anneal"),
    ("train", "lr_schedule"), ("train", "max_updates"), ("row", "kla"), ("row", "aux"),
]


def flatten_settings(settings: dict, prefix: str = "") -> dict:
    """{'model': {'rnn_dim': 8}} -> {'model.rnn_dim': 8}; lists and scalars kept as values."""
    flat = {}
    for k, v in (settings or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            flat.update(flatten_settings(v, key + "."))
        else:
            flat[key] = v
    return flat


def settings_summary(settings: dict) -> str:
    """A short 'key=value' string of the settings that most often differ between rows."""
    parts = []
    for section, key in SUMMARY_KEYS:
        sec = settings.get(section) or {}
        if key in sec:
            parts.append(f"{key}={sec[key]}")
    if "aux_weight" in settings:
        parts.append(f"aux_weight={settings['aux_weight']}")
    return ", ".join(parts)


def settings_tables(metrics: pd.DataFrame, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(common, differing): settings equal for every row of the column (key, value) and the
    ones that differ (key x row). Values are shown as JSON text so types stay visible."""
    sub = metrics[metrics["column"] == column]
    flat = {r: flatten_settings(s) for r, s in zip(sub["row"], sub["settings"])}
    keys = sorted(set().union(*flat.values())) if flat else []
    common, differ = [], {}
    for k in keys:
        vals = {r: json.dumps(f.get(k), sort_keys=True, default=str) for r, f in flat.items()}
        if len(set(vals.values())) == 1:
            common.append({"setting": k, "value": next(iter(vals.values()))})
        else:
            differ[k] = vals
    common_df = pd.DataFrame.from_records(common, columns=["setting", "value"])
    differ_df = pd.DataFrame.from_dict(differ, orient="index", columns=list(flat)) if differ \
        else pd.DataFrame(columns=list(flat))
    differ_df.index.name = "setting"
    return common_df, differ_df


# ----------------------------------------------------------------------------- ordering

def ordering_check(table: pd.DataFrame, column_info: dict | None = None) -> dict:
    """Does the paper's ordering (rows.PAPER_ORDER, worst to best) hold for our numbers,
    and where does the within-frame autoregressive RNN (rnn_ar) land?

    Compares the table's `ours` values (best bound, bounds as reported, in the
    log-likelihood direction). Returns holds (True / False / None when fewer than two
    ordered rows were evaluated), present, missing, violations [(worse_by_paper,
    better_by_paper, ours_a, ours_b)], ranking (all rows best first), rnn_ar (sentence
    or None) and statement (the sentence the page prints).
    """
    higher = (column_info or {}).get("direction", "higher") == "higher"
    score = {r: (v if higher else -v) for r, v in zip(table["row"], table["ours"]) if v is not None}
    name = {r: ROWS[r].paper_name if r in ROWS else r for r in table["row"]}
    present = [r for r in PAPER_ORDER if r in score]
    missing = [r for r in PAPER_ORDER if r not in score]
    violations = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            if not score[a] < score[b]:
                violations.append((a, b, score[a], score[b]))
    holds = None if len(present) < 2 else not violations
    ranking = sorted(score, key=lambda r: (-score[r], r))
    claim = " < ".join(ROWS[r].paper_name for r in PAPER_ORDER)
    if holds is None:
        s = (f"The paper's ordering ({claim}) cannot be checked: fewer than two of its rows "
             f"were evaluated here.")
    elif holds:
        s = f"The paper's ordering holds for the {len(present)} of its rows evaluated here: " \
            + " < ".join(name[r] for r in present) + "."
    else:
        pairs = "; ".join(f"{name[a]} ({fmt(x if higher else -x)}) is not below "
                          f"{name[b]} ({fmt(y if higher else -y)})" for a, b, x, y in violations)
        s = f"The paper's ordering does not hold here: {pairs}."
    if missing and holds is not None:
        s += " Not evaluated: " + ", ".join(ROWS[r].paper_name for r in missing) + "."
    if holds is not None:
        s += (" (Compared as reported: exact log-likelihoods for deterministic rows, lower "
              "bounds for latent rows, which can only understate them.)")
    ar = None
    if "rnn_ar" in score:
        pos = ranking.index("rnn_ar")
        above = [name[r] for r in ranking[:pos]]
        below = [name[r] for r in ranking[pos + 1:]]
        latent = [r for r, e in zip(table["row"], table["sign"]) if e != "=" and r in score]
        beats_latent = latent and all(score["rnn_ar"] > score[r] for r in latent)
        ar = (f"The within-frame autoregressive RNN ranks {pos + 1} of {len(ranking)}"
              + (f", below {', '.join(above)}" if above else "")
              + ((" and" if above else ",") + f" above {', '.join(below)}" if below else "")
              + ". " + ("It beats every latent-variable row here, as Dai et al. (2019) found."
                        if beats_latent else
                        "It does not beat every latent-variable row here (Dai et al. 2019 found "
                        "that it does on the paper's benchmarks)." if latent else
                        "No latent-variable row was evaluated to compare it with."))
        s += " " + ar
    return {"holds": holds, "present": present, "missing": missing, "violations": violations,
            "ranking": ranking, "rnn_ar": ar, "statement": s, "claim": claim}
