"""Evaluated cells -> pandas tables of display strings.

A cell is one (bench, row, seed): eval/<bench>/<row>/s<seed>/ holds metrics.json (headline
numbers) and info.json (settings, data, training, provenance). A row's number is the mean
over its seeds with the min-max range; the paper's values and claims are in
paper_numbers.yaml beside this file, and whether a claim holds is decided in verdict.py.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import pandas as pd
import yaml

from ..errors import UserError
from .verdict import NONE, OPEN, Pair, pairs_from_order, seeds_needed, verdict

PAPER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_numbers.yaml")
BENCHES = ("timit", "blizzard", "mnist", "imdb")
SIGNS = {"=": "=", ">=": "≥", "<=": "≤"}
COUNTS = {"active_units"}   # metrics.json keys that count things: printed as integers


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_paper() -> dict:
    with open(PAPER_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def spec(paper: dict, bench: str) -> dict:
    """The paper's table for a bench; an unknown bench gets a bare log-likelihood table."""
    return paper["tables"].get(bench) or {"title": bench, "metric": "test bound", "units": "nats / seq",
                                          "quantity": "bound", "direction": "higher", "columns": {},
                                          "claims": []}


def load_cells(eval_dir: str, rows: dict, seeds: list) -> pd.DataFrame:
    """The cells params.yaml asks for ({bench: [row, ...]} x seeds) that have been evaluated.

    Only those: a workspace keeps the cells of an earlier profile or experiment (DVC leaves
    the outputs of stages the pipeline no longer has), and a page must not show them.
    """
    recs = []
    for bench, names in rows.items():
        for row in names:
            for seed in seeds:
                d = os.path.join(eval_dir, bench, row, f"s{seed}")
                if not os.path.isfile(os.path.join(d, "metrics.json")):
                    continue
                if not os.path.isfile(os.path.join(d, "info.json")):
                    raise UserError(f"{d} has metrics.json but no info.json: rerun the evaluate stage")
                info = read_json(os.path.join(d, "info.json"))
                recs.append({"bench": bench, "row": row, "seed": int(info["seed"]), "dir": d,
                             "m": read_json(os.path.join(d, "metrics.json")), "info": info})
    return pd.DataFrame.from_records(recs, columns=["bench", "row", "seed", "dir", "m", "info"])


def benches(cells: pd.DataFrame) -> list:
    present = set(cells["bench"])
    return [b for b in BENCHES if b in present] + sorted(present - set(BENCHES))


def bench_cells(cells: pd.DataFrame, bench: str, s: dict) -> pd.DataFrame:
    """The bench's cells in the paper's row order (rows it does not publish last), by seed."""
    known = list(dict.fromkeys([*(s.get("rows") or {}),
                                *(r for c in s.get("claims") or [] for r in c.get("order", []))]))
    sub = cells[cells["bench"] == bench].copy()
    sub["_k"] = [(known.index(r), "") if r in known else (len(known), r) for r in sub["row"]]
    return sub.sort_values(["_k", "seed"]).drop(columns="_k").reset_index(drop=True)


def values(sub: pd.DataFrame, key: str) -> dict:
    """row -> {seed index: metrics.json[key]}, null values left out."""
    out = {}
    for row, seed, m in zip(sub["row"], sub["seed"], sub["m"]):
        v = m.get(key)
        out.setdefault(row, {}).update({int(seed): float(v)} if v is not None and math.isfinite(v)
                                       else {})
    return out


def num(v, signed: bool = False, count: bool = False) -> str:
    """A display number; count: a whole number of things (active units) prints as an integer."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, int) or (count and float(v).is_integer()):
        return f"{int(v):{'+' if signed else ''},}"
    return f"{v:{'+' if signed else ''},.{1 if abs(v) >= 1000 else 2}f}"


def spread(vals, count: bool = False) -> str:
    """'mean [min – max]' over seeds (a list, or {seed: value}); one seed is just its number."""
    vals = list(vals.values()) if isinstance(vals, dict) else list(vals)
    if len(vals) < 2:
        return num(vals[0], count=count) if vals else "—"
    return (f"{num(sum(vals) / len(vals), count=count)} "
            f"[{num(min(vals), count=count)} – {num(max(vals), count=count)}]")


def table_html(df: pd.DataFrame, cls: str = "t") -> str:
    """Escaped HTML without per-cell ids or styles (compact and byte-stable)."""
    if df.empty:
        return "<p><em>(none)</em></p>"
    out = df.style.hide(axis="index").format(escape="html").to_html(exclude_styles=True)
    return out.replace("<table>", f'<table class="{cls}">', 1)


def mean(vals: dict) -> float:
    return sum(vals.values()) / len(vals)


def data_facts(infos: list, manifest: dict | None = None) -> dict:
    """What the data behind a table was, for its metric text: the protocol the cells record
    (info.json data.protocol; a key the cells disagree on is left out), then the prepared
    manifest's values for what they do not record, then what follows from those (an image's
    side from its steps, a frame's samples and a segment's seconds from its samples)."""
    protos = [(i.get("data") or {}).get("protocol") or {} for i in infos]
    facts, mixed = {}, set()
    for k in sorted(set().union(*protos)) if protos else []:
        vals = {json.dumps(p.get(k), sort_keys=True) for p in protos}
        if len(vals) > 1:
            mixed.add(k)
        elif protos[0].get(k) is not None:
            facts[k] = protos[0][k]

    def derive():
        steps = facts.get("steps")
        if "side" not in facts and isinstance(steps, int) and math.isqrt(steps) ** 2 == steps:
            facts["side"] = math.isqrt(steps)
        if facts.get("row_samples") and facts.get("row_frames"):
            facts.setdefault("frame_samples", facts["row_samples"] // facts["row_frames"])
        if facts.get("row_samples") and facts.get("sample_rate"):
            facts.setdefault("row_seconds", facts["row_samples"] / facts["sample_rate"])
    derive()
    m = manifest or {}
    for k, v in {**(m.get("protocol") or {}),
                 **{k: m.get(k) for k in ("steps", "side", "sample_rate", "frame_size")}}.items():
        if v is not None and k not in mixed:
            facts.setdefault(k, v)
    derive()
    return facts


def metric_text(s: dict, facts: dict) -> str:
    """The table's metric, with its `metric_detail` filled from the data's facts (steps,
    side, frames: never typed); without the detail when a fact it names is unknown."""
    detail = s.get("metric_detail")
    try:
        return f"{s['metric']} ({detail.format_map(facts)})" if detail else s["metric"]
    except (KeyError, ValueError, TypeError):
        return s["metric"]


def comparison(sub: pd.DataFrame, s: dict) -> tuple:
    """(comparable, why not): ours are comparable with the paper's numbers only when every
    cell ran on the paper's own corpus (the manifest's `comparable`) and under the protocol
    the paper's numbers came from (the table's `paper_protocol`, e.g. Blizzard's
    target_mode: faithful, the authors' row-shifted targets). why: "" when comparable,
    "data" when the corpus is not the paper's, else the table's `protocol_why` or the
    protocol values that differ."""
    if not len(sub) or not all(i["data"].get("comparable") is True for i in sub["info"]):
        return False, "data"
    for key, want in (s.get("paper_protocol") or {}).items():
        used = sorted({str(((i["data"].get("protocol") or {}).get(key))) for i in sub["info"]})
        if used != [str(want)]:
            return False, s.get("protocol_why") or (f"the paper's numbers come from {key} {want}; "
                                                    f"this run used {key} {', '.join(used)}")
    return True, ""


def comparable(sub: pd.DataFrame, s: dict) -> bool:
    return comparison(sub, s)[0]


def published(pub: dict) -> str:
    return f"{SIGNS[pub['kind']]} {num(pub['value'])}"


def main_table(sub: pd.DataFrame, s: dict, compact: bool = False,
               same: bool | None = None) -> pd.DataFrame:
    """One line per row: seeds, bound kind, ours (mean [min – max]); on comparable data the
    paper's value and ours − paper beside it (else the paper's values are in
    published_table, never beside ours); then the quirk and the table's extra columns.
    compact (the index): row, seeds, ours and, on comparable data, the paper's value.
    same: comparable(sub, s), when the caller has it."""
    q, sign = s["quantity"], "≥" if s["quantity"] == "bound" else "≤"
    same = comparable(sub, s) if same is None else same
    ours, extra = values(sub, q), {k: values(sub, k) for k in s.get("columns") or {}}
    recs = []
    for row, cells in sub.groupby("row", sort=False):
        pub, infos = (s.get("rows") or {}).get(row), list(cells["info"])
        quirk = [i["test_quirk"].get("iwae_per_seq" if i["bound_kind"] == "iwae" else "elbo_per_seq")
                 for i in infos if i.get("test_quirk")]   # the same estimate as metrics "bound"
        quirk = [-v if q == "nll" else v for v in quirk if v is not None] if q != "ppl" else []
        r = {"row": row, "in the paper": infos[0].get("paper_name", row), "seeds": len(cells),
             "bound": ", ".join(dict.fromkeys(
                 "=" if i["bound_kind"] == "exact" else f"{sign} {i['bound_kind'].upper()}"
                 + (f"-{i.get('iwae_k')}" if i["bound_kind"] == "iwae" else "") for i in infos)),
             f"ours ({s['units']})": spread(ours[row])}
        if same:
            r.update({"paper": published(pub) if pub else "—",
                      "confidence": pub["confidence"] if pub else "—"})
        if same and not compact:
            r["ours − paper"] = num(mean(ours[row]) - pub["value"], True) \
                if pub and ours[row] else "—"
        if quirk and not compact:
            r["authors' padded mean (quirk)"] = spread(quirk)
        if not compact:
            r.update({title: spread(extra[k][row], count=k in COUNTS)
                      for k, title in s["columns"].items()})
            r["params"] = num(infos[0].get("params"))
        recs.append(r)
    for p in (s.get("published_only") or []) if same and not compact else []:
        recs.append({"row": "—", "in the paper": p["name"], "seeds": "published, not trained here",
                     "paper": published(p), "confidence": p["confidence"]})
    df = pd.DataFrame.from_records(recs).fillna("—").astype(str)
    keep = ["row", "in the paper", "seeds", f"ours ({s['units']})"] + (["paper"] if same else [])
    return df[keep] if compact and len(df) else df


def published_table(sub: pd.DataFrame, s: dict) -> pd.DataFrame:
    """The paper's values on its own data, apart from ours: the published rows this run
    has (the paper's name, our row), then the rows published only."""
    names = {row: info.get("paper_name", row) for row, info in zip(sub["row"], sub["info"])}
    recs = [{"in the paper": names[row], "row here": row, "paper": published(pub),
             "confidence": pub["confidence"]}
            for row, pub in (s.get("rows") or {}).items() if row in names]
    recs += [{"in the paper": p["name"], "row here": "— (not trained here)", "paper": published(p),
              "confidence": p["confidence"]} for p in s.get("published_only") or []]
    return pd.DataFrame.from_records(recs).astype(str)


def quirk_shrink(sub: pd.DataFrame) -> list:
    """Per cell with the authors' padded mean: how much it shrinks a per-sequence figure
    toward zero (a fraction), from the cell's own counts (sequences / padded_sequences) or,
    without them, from its two estimates of the same bound."""
    out = []
    for i in sub["info"]:
        quirk, test = i.get("test_quirk") or {}, i.get("test") or {}
        key = "iwae_per_seq" if i.get("bound_kind") == "iwae" else "elbo_per_seq"
        if quirk.get("padded_sequences") and quirk.get("sequences") is not None:
            out.append(1 - quirk["sequences"] / quirk["padded_sequences"])
        elif quirk.get(key) is not None and test.get(key):
            out.append(1 - quirk[key] / test[key])
    return out


@dataclass(frozen=True)
class Claim:
    short: str              # the index's label
    says: str               # the paper's claim, in words
    checked_as: str         # our operationalisation ("" when checked as the paper states it)
    verdict: str
    results: list           # verdict.Result of every pair
    missing: list           # rows the claim names that this run lacks


def claims(sub: pd.DataFrame, s: dict) -> list:
    """The paper's claims on this bench, each with its verdict (see verdict.py)."""
    out = []
    for c in s.get("claims") or []:
        if "order" in c:
            pairs = pairs_from_order(c["order"], values(sub, s["quantity"]),
                                     s["direction"] == "higher", what=s["units"])
            need, checked_as = c["order"], ""
        else:
            pairs, need, checked_as = latent_pairs(sub, **c["latents_in_use"])
        missing = [r for r in need if r not in set(sub["row"])]
        v, results = verdict(pairs)
        if v == NONE and missing:
            v = f"{NONE} (row{'s' if len(missing) > 1 else ''} {', '.join(missing)} not in this run)"
        out.append(Claim(c["short"], c["says"], checked_as, v, results, missing))
    return out


def latent_pairs(sub: pd.DataFrame, base: str, rows: list, kl_floor: float,
                 ppl_tolerance: float) -> tuple:
    """(pairs, rows needed, 'checked here as' text) of the claim that the aux cost keeps the
    latents in use at a similar perplexity: a collapsed posterior (KL under the floor, no
    active unit) can never pass, whatever the perplexity."""
    kl, ppl, au = values(sub, "kl"), values(sub, "ppl"), values(sub, "active_units")
    pairs = []
    if kl.get(base):
        for r in (r for r in rows if kl.get(r)):
            pairs += [Pair(base, r, kl[base], kl[r], True, what="KL / sentence"),
                      Pair(f"KL floor {kl_floor:g}", r, {k: kl_floor for k in kl[r]}, kl[r], True,
                           what="KL / sentence"),
                      Pair("no active unit", r, {k: 0.0 for k in au.get(r, {})}, au.get(r, {}), True,
                           what="active units"),
                      Pair(f"{base} perplexity × {1 + ppl_tolerance:g}", r,
                           {k: (1 + ppl_tolerance) * v for k, v in ppl.get(base, {}).items()},
                           ppl.get(r, {}), False, what="IWAE perplexity")]
    text = (f"{', '.join(rows)} against {base}: a KL above {base}'s and above {kl_floor:g} "
            f"nat{'' if kl_floor == 1 else 's'} per sentence, active units above zero, and an IWAE perplexity at most "
            f"{ppl_tolerance:.0%} above {base}'s (thresholds ours: the paper states none)")
    return pairs, [base, *rows], text


def seed_range(vals: dict, seeds: list) -> str:
    """max − min over the given seeds; '—' for one seed."""
    v = [vals[k] for k in seeds]
    return num(max(v) - min(v)) if len(v) > 1 else "—"


def pairs_table(results: list) -> pd.DataFrame:
    """One line per pair: the mean paired difference (positive: the paper's way round), its
    interval and level, each side's spread over the shared seeds, and for a pair not
    resolved the seeds its gap and spread would need (80 % power, the claim's level)."""
    recs = []
    for r in results:
        p, ok = r.pair, math.isfinite(r.lo)
        count = p.what == "active units"
        recs.append({
            "paper: behind": p.worse, "paper: ahead": p.better, "compared": p.what,
            "seeds": str(r.n), "ours behind": spread({k: p.worse_values[k] for k in p.seeds}, count),
            "ours ahead": spread({k: p.better_values[k] for k in p.seeds}, count),
            "mean difference (+: paper's way)": num(r.mean, True),
            "interval": f"[{num(r.lo, True)}, {num(r.hi, True)}]" if ok else "—",
            "level": f"{r.level:.2%}" if ok else "—",
            "seed spread behind / ahead": f"{seed_range(p.worse_values, p.seeds)} / "
                                          f"{seed_range(p.better_values, p.seeds)}",
            "outcome": r.label,
            "seeds to resolve": _needed(r)})
    return pd.DataFrame.from_records(recs)


def _needed(r) -> str:
    """'—' for an ordered pair; else the seeds at this gap and spread (80 % power)."""
    if r.outcome != OPEN:
        return "—"
    n = seeds_needed(r.pair, r.k)
    return "—" if n is None else (f"over {n:,}" if n >= 10_000 else f"about {n}")


def runs_table(sub: pd.DataFrame) -> pd.DataFrame:
    """One line per run. No time column: models/ keeps no timing (history.json drops it so
    that the outputs stay byte-stable); a seed is an identifier, printed without separators."""
    return pd.DataFrame.from_records([
        {"row": r, "seed": s, "train seed": str(i.get("train_seed", "—")),
         **{k: num((i.get("train") or {}).get(key)) for k, key in (
             ("updates", "updates"), ("skipped", "skipped"), ("best valid bound", "best_valid"))}}
        for r, s, i in zip(sub["row"], sub["seed"], sub["info"])]).astype(str)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else
                   {f"{prefix}{k}": json.dumps(v, sort_keys=True)})
    return out


def settings_tables(sub: pd.DataFrame) -> tuple:
    """(shared, differing): settings and data protocol equal in every cell, and those that
    differ (setting x row; a row's seeds that differ are joined by ' / ')."""
    flat = [flatten({"settings": i.get("settings"),
                     "data": {k: i["data"].get(k) for k in ("source", "protocol", "split_sizes")}})
            for i in sub["info"]]
    shared, differ = [], {}
    for k in sorted(set().union(*flat)):
        vals = [f.get(k, "—") for f in flat]
        if len(set(vals)) == 1:
            shared.append({"setting": k, "value": vals[0]})
            continue
        per_row = {}
        for row, v in zip(sub["row"], vals):
            per_row.setdefault(row, {})[v] = None
        differ[k] = {"setting": k, **{row: " / ".join(vs) for row, vs in per_row.items()}}
    return pd.DataFrame.from_records(shared), pd.DataFrame.from_records(list(differ.values()))


def provenance_table(sub: pd.DataFrame) -> pd.DataFrame:
    keys = {"data": "prepared_manifest_sha256", "model": "model_sha256",
            "params": "params_sha256", "code": "code_sha256"}
    return pd.DataFrame.from_records([
        {"row": r, "seed": s, **{k: str(i["provenance"].get(v) or "—")[:16] for k, v in keys.items()}}
        for r, s, i in zip(sub["row"], sub["seed"], sub["info"])]).astype(str)
