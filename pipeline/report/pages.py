"""The sections of the pages as HTML strings; the notebooks only display them.

`Bench` is one benchmark's page, `index_html` the overview. Inputs: the cells under
eval/<bench>/<row>/s<seed>/, training histories under models/ (same layout), and for
audio a few real clips from data/<bench>/prepared/.
"""
from __future__ import annotations

import html
import os

import numpy as np
import pandas as pd

from . import figures, tables
from . import verdict as V

# Where a findings run (several seeds) puts its pages, from the repository root; reports/
# is the report stage's own output, replaced whole on every run, so they cannot live there.
FINDINGS = "findings"


def esc(x) -> str:
    return html.escape(str(x))


def note(text: str) -> str:
    return f"<p><em>{esc(text)}</em></p>"


def overrides_html(overrides) -> str:
    """The settings that differ from the profile (`-S` overrides): a list, or None when the
    report stage could not compose conf/ to compare."""
    if overrides is None:
        return " (overrides unknown: conf/ could not be composed to compare)"
    if not overrides:
        return " (no overrides)"
    return " with overrides " + ", ".join(f"<code>{esc(o)}</code>" for o in overrides)


def data_line(sub: pd.DataFrame, profile: str, seeds: list, overrides=None) -> str:
    """What data produced the numbers, and the budget: profile and its overrides, updates, seeds."""
    notes = "; ".join(dict.fromkeys(i["data"].get("title_note", "") for i in sub["info"]))
    u = sorted({(i.get("train") or {}).get("updates") for i in sub["info"]} - {None}) or [None]
    n = sub.groupby("row").size()
    return (f"<p>Data: {esc(notes)}. Budget: profile <b>{esc(profile)}</b>"
            f"{overrides_html(overrides)}; updates per run "
            f"<b>{tables.num(u[0])}</b>" + (f"–<b>{tables.num(u[-1])}</b>" if len(u) > 1 else "")
            + f"; seeds per row <b>{n.min()}</b>" + (f"–<b>{n.max()}</b>" if n.max() > n.min() else "")
            + f" (params.yaml seeds: {esc(seeds)}); {len(sub)} runs.</p>")


def guarantee_line(sub: pd.DataFrame) -> str:
    """Which reproducibility guarantee covers these numbers (README: What reproduces)."""
    hw = [i["settings"].get("hardware") or {} for i in sub["info"]]
    devices = {h.get(k, "unknown") for h in hw for k in ("train_device", "eval_device")}
    machines = {h.get("machine", "unknown") for h in hw}
    compiled = {(i["settings"].get(part) or {}).get("compile", "off") for i in sub["info"]
                for part in ("train", "eval")} - {"off"}
    if devices == {"cpu"} and machines == {"x86_64"} and not compiled:
        return ("<p>Reproducibility: trained and evaluated on an x86-64 CPU with pinned kernels and "
                "compile off, so a rerun of this commit on any x86-64 CPU with AVX2 and the pinned "
                "wheels gives these numbers byte for byte (<code>python scripts/verify.py</code> "
                "checks).</p>")
    where = ", ".join(sorted(devices | machines)) + (f"; compile {', '.join(sorted(compiled))}"
                                                      if compiled else "")
    return (f"<p>Reproducibility: computed on {esc(where)}, where results are not byte-stable; a "
            "rerun should match within the tolerances of <code>python scripts/verify.py</code>, and "
            "a difference inside the seed spread is noise.</p>")


def provenance_html(provenance: str) -> str:
    """What produced a page rendered outside DVC's report stage (a findings run): commit,
    profile and command, as the caller states them."""
    return f"<p><b>Produced by</b>: {esc(provenance)}</p>" if provenance else ""


def findings_html(claims: list) -> str:
    """Where orderings get resolved, when some claim here is short of seeds: the committed
    findings run's pages (scripts/findings.sh), linked relative to reports/."""
    if not any(r.n < V.MIN_SEEDS for c in claims for r in c.results):
        return ""
    return (f"<p>A verdict needs at least {V.MIN_SEEDS} seeds per row. The findings run (5 seeds "
            f"per row, <code>bash scripts/findings.sh</code>) puts its pages in "
            f"<code>{FINDINGS}/</code>: <a href=\"../{FINDINGS}/index.html\">{FINDINGS}/index.html"
            "</a>.</p>")


def claim_line(c: tables.Claim) -> str:
    """The paper's claim, how it is checked here if that is ours, and the verdict."""
    why = "; ".join(f"{r.pair.better} behind {r.pair.worse} ({r.pair.what})"
                    for r in c.results if r.outcome == V.REVERSED)
    return (f"<p><b>{esc(c.short)}</b>. The paper claims: {esc(c.says)}."
            + (f" Checked here as: {esc(c.checked_as)}." if c.checked_as else "")
            + f" Here: <b>{esc(c.verdict)}</b>" + (f" — reversed: {esc(why)}" if why else "") + "."
            + (f" Not run here: {esc(', '.join(c.missing))}." if c.missing and c.results else "")
            + "</p>")


def verdict_html(sub: pd.DataFrame, s: dict) -> str:
    """The bench page's section: the rule, then every claim with its pairs."""
    claims = tables.claims(sub, s)
    out = [f"<p>Rule: {V.RULE}</p>", findings_html(claims)]
    for c in claims:
        shown = [r for r in c.results if r.pair.required or r.outcome == V.REVERSED]
        out.append(claim_line(c) + (tables.table_html(tables.pairs_table(shown)) if shown else ""))
    return "".join(out) if claims else note("The paper makes no claim checked on this table.")


def summary_html(claims: list) -> str:
    """The index's lines: one short verdict per claim (the page has the reasons)."""
    return "<ul>" + "".join(f"<li>{esc(c.short)}: <b>{esc(c.verdict)}</b></li>"
                            for c in claims) + "</ul>"


def confidence_html(paper: dict) -> str:
    return ("<p>Confidence of a published number: " + "; ".join(
        f"<b>{esc(k)}</b>: {esc(v)}" for k, v in paper["confidence"].items()) + ".</p>")


def percent(fractions: list) -> str:
    """'16.9 %', or the range '16.5–17.2 %' when the cells differ at that precision."""
    lo, hi = (f"{100 * f:.1f}" for f in (min(fractions), max(fractions)))
    return f"{lo} %" if lo == hi else f"{lo}–{hi} %"


def quirk_note(shrink: list) -> str:
    """The quirk column's note, with the shrink this run's own numbers show."""
    how = (f"which shrinks each per-utterance figure toward zero by {percent(shrink)} here"
           if shrink else "which shrinks each per-utterance figure toward zero")
    return ("Quirk column: the authors' TIMIT script averaged over padded batches (empty "
            f"utterances counted in the mean, {how}); ours divides by the real number of "
            "utterances.")


def published_html(s: dict, published: pd.DataFrame) -> str:
    """The paper's values on its own data, apart from our rows (data not comparable)."""
    return ("<h3>Published (other data)</h3>"
            + note(f"The paper's values on {s.get('paper_data') or 'its own data'}: other data "
                   "or another task than ours, so they are not set beside our numbers and no "
                   "difference is taken.")
            + tables.table_html(published))


class Bench:
    def __init__(self, bench: str, eval_dir: str, models_dir: str, data_dir: str, report: dict,
                 profile: str, seeds: list, rows: list, provenance: str = "", overrides=None):
        self.bench, self.models_dir, self.cfg = bench, models_dir, report
        self.provenance = provenance
        self.prepared = os.path.join(data_dir, bench, "prepared")
        self.profile, self.seeds, self.overrides = profile, seeds, overrides
        self.paper = tables.load_paper()
        self.s = tables.spec(self.paper, bench)
        self.cells = tables.bench_cells(tables.load_cells(eval_dir, {bench: rows}, seeds), bench, self.s)
        self.style = figures.styles(list(dict.fromkeys(self.cells["row"])))
        self.first = self.cells.groupby("row", sort=False).head(1)   # each row's lowest seed
        path = os.path.join(self.prepared, "manifest.json")
        self.manifest = tables.read_json(path) if os.path.isfile(path) else {}
        self.same, self.why = tables.comparison(self.cells, self.s)  # the paper's task?

    def header(self) -> str:
        notes = "; ".join(dict.fromkeys(i["data"].get("title_note", "") for i in self.cells["info"]))
        better = "higher" if self.s["direction"] == "higher" else "lower"
        metric = tables.metric_text(self.s, tables.data_facts(list(self.cells["info"]), self.manifest))
        same, why = self.same, self.why
        return (f"<h1>{esc(self.s['title'])}: {esc(notes)}</h1><p>{esc(self.paper['source'])}. "
                f"Table: {esc(metric)} ({esc(self.s['units'])}; {better} is better). "
                '<a href="index.html">All tables</a>.</p>' + provenance_html(self.provenance)
                + data_line(self.cells, self.profile, self.seeds, self.overrides) + guarantee_line(self.cells) + "<p>"
                + ("This is the paper's own corpus and protocol: our numbers are comparable with "
                   "the paper's, and the difference is shown." if same else
                   ("This data is <b>not</b> the paper's benchmark" if why == "data" else
                    f"This is the paper's corpus but <b>not</b> its task: {esc(why)}")
                   + ": the paper's values are listed apart, under “Published (other data)”; only "
                   "the ordering of the rows is compared, not the numbers.") + "</p>")

    def table(self) -> str:
        t = tables.main_table(self.cells, self.s, same=self.same)
        notes = ["Each number is the mean over the row's seeds (column “seeds”), with the min–max "
                 "range over seeds in brackets when there is more than one.",
                 "Bound: = exact; ≥ a lower bound on the log-likelihood, ≤ an upper bound on an NLL "
                 "or a perplexity; IWAE-K the importance-weighted bound with K samples, ELBO the "
                 "single-sample bound."]
        if "authors' padded mean (quirk)" in t:
            notes.append(quirk_note(tables.quirk_shrink(self.cells)))
        notes += [self.s["note"]] if self.s.get("note") else []
        out = tables.table_html(t) + "".join(map(note, notes)) + paper_rows_html(self.s)
        if not self.same:
            out += published_html(self.s, tables.published_table(self.cells, self.s))
        return out + confidence_html(self.paper)

    def verdict(self) -> str:
        return verdict_html(self.cells, self.s)

    def runs(self) -> str:
        shared, differ = tables.settings_tables(self.cells)
        return (tables.table_html(tables.runs_table(self.cells))
                + "<details><summary>Settings that differ between rows</summary>"
                + tables.table_html(differ) + "</details><details><summary>Settings shared by "
                "every run</summary>" + tables.table_html(shared) + "</details><details><summary>"
                "Provenance (SHA-256, first 16 hex digits)</summary><p>data: the prepared data's "
                "manifest; model: the weights evaluated; params: the settings; code: the code "
                "that trained and evaluated them.</p>"
                + tables.table_html(tables.provenance_table(self.cells)) + "</details>")

    def curves(self) -> str:
        h = {}
        for row, seed in zip(self.cells["row"], self.cells["seed"]):
            path = os.path.join(self.models_dir, self.bench, row, f"s{seed}", "history.json")
            if os.path.isfile(path):
                df = pd.DataFrame.from_records(tables.read_json(path)["history"])
                h[(row, seed)] = df.sort_values("update", kind="stable") if len(df) else df
        h = {k: d for k, d in h.items() if "kind" in d}
        if not h:
            return note("No training history found.")
        dpi = self.cfg["dpi"]
        out = figures.curves(h, [("training ELBO (nats / seq)", "train", "elbo_per_seq"),
                                 ("validation ELBO (nats / seq)", "valid", "valid_elbo_per_seq")],
                             self.style, dpi, "learning curves")
        latent = {k: d for k, d in h.items() if "kl_per_seq" in d and d["kl_per_seq"].abs().gt(0).any()}
        if latent:
            out += "<h3>KL and aux cost, and their weights</h3>" + figures.curves(
                latent, [("KL (nats / seq)", "train", "kl_per_seq"),
                         ("aux cost (nats / seq)", "train", "aux_per_seq"),
                         ("KL weight", "train", "kl_weight"), ("aux weight", "train", "aux_weight")],
                self.style, dpi, "KL and aux")
        return out + note("One line per run; a row's other seeds thinner. Z-Forcing rows solid, "
                          "baselines dashed.")

    def latents(self) -> str:
        kl = {}
        for row, seed, d in zip(self.first["row"], self.first["seed"], self.first["dir"]):
            if os.path.isfile(os.path.join(d, "latent.json")):
                kl[(row, seed)] = tables.read_json(os.path.join(d, "latent.json"))["kl_per_dim"]
        kl, t = {k: v for k, v in kl.items() if v}, self.cfg["active_threshold"]
        if not kl:
            return note("No latent-variable row in this table.")
        return (figures.latent_usage(kl, self.style, t, self.cfg["dpi"])
                + note(f"KL per latent dimension (nats / seq), largest first, for the first seed of "
                       f"each row; dotted: the active-unit threshold {t:g}."))

    def examples(self) -> str:
        out = [self.real_audio()]
        for row, seed, d in zip(self.first["row"], self.first["seed"], self.first["dir"]):
            if os.path.isfile(os.path.join(d, "text.json")):
                t = tables.read_json(os.path.join(d, "text.json"))
                out.append(self.text(row, seed, t) + interpolation_html(row, seed, t))
            if os.path.isfile(os.path.join(d, "samples.npz")):
                with np.load(os.path.join(d, "samples.npz"), allow_pickle=False) as z:
                    out.append(self.audio(row, seed, z) if "sample_rate" in z else
                               self.digit_grid(row, seed, z))
        return "".join(out) or note("No row wrote examples.")

    def real_audio(self) -> str:
        n, sec = self.cfg["audio_examples"], self.cfg["audio_seconds"]
        if self.manifest.get("kind") != "audio":
            return ""
        if not n:
            return note("Audio examples switched off (report.audio_examples is 0).")
        clips = figures.real_clips(self.prepared, n, sec)
        return ("<h4>Real test audio</h4>" + "".join(figures.audio_block(
            t, x, sr, self.cfg["n_mels"], self.cfg["dpi"]) for t, x, sr in clips)
            + note(f"Clips cut to at most {sec:g} s; Ogg Vorbis."))

    def audio(self, row, seed, z) -> str:
        sr = int(z["sample_rate"])
        cut = int(self.cfg["audio_seconds"] * sr)
        return f"<h4>{esc(row)}: generated (seed {seed})</h4>" + "".join(
            figures.audio_block(f"{row} s{seed}: sample {i + 1}", g[:cut], sr,
                                self.cfg["n_mels"], self.cfg["dpi"])
            for i, g in enumerate(z["generated"][:self.cfg["audio_examples"]]))

    def digit_grid(self, row, seed, z) -> str:
        try:   # imported here: it loads torch, which only this page needs
            from . import digits
        except ImportError:   # written separately; until it exists the page says so
            return note("Digit figures are not available in this version of the code.")
        side = int(z["side"])
        grid = digits.digit_grid_png(z["generated"], side, min(8, len(z["generated"])),
                                     title=f"{row} s{seed}: samples")
        out = figures.img(grid, f"{row} samples")
        if "recon" in z and len(z["recon"]):
            out += figures.img(digits.recon_png(z["originals"], z["recon"], side), f"{row} recon")
            out += figures.grey_reconstructions(z["originals"], z["recon"])
        return f"<h4>{esc(row)} (seed {seed})</h4>" + out

    def text(self, row, seed, t: dict) -> str:
        p = t.get("perturb") or {}
        parts = [("Sampled from the prior", pd.DataFrame({"sentence": t.get("samples") or []})),
                 ("Reconstructions", pd.DataFrame.from_records(t.get("reconstructions") or [])),
                 (f"Latent dimension {p.get('dim')} (KL {tables.num(p.get('kl'))} nats) moved by "
                  "multiples of its prior sd", pd.DataFrame.from_records(p.get("rows") or []))]
        return f"<h4>{esc(row)} (seed {seed})</h4>" + "".join(
            f"<p>{esc(title)}:</p>" + tables.table_html(df.astype(str), "t txt")
            for title, df in parts if len(df))


def paper_rows_html(s: dict) -> str:
    """The paper's published rows that carry a β (IMDB's Table 3): β, KL and both
    perplexities as paper_numbers.yaml holds them, "not known" where it holds null."""
    rows = [p for p in s.get("published_only") or [] if "beta" in p]
    if not rows:
        return ""
    known = lambda v: "not known" if v is None else tables.num(v)  # noqa: E731
    df = pd.DataFrame.from_records([{
        "in the paper": p["name"], "β": "—" if p["beta"] is None else f"{p['beta']:g}",
        "KL / sentence": known(p.get("kl")), "perplexity (ELBO)": known(p.get("ppl_elbo")),
        "perplexity (IWAE)": known(p.get("value")), "confidence": p.get("confidence") or "—",
        "source": p.get("source", ""), "note": p.get("note", "")} for p in rows])
    return ("<p>The paper's rows, one per β (the aux weight), as "
            "<code>pipeline/report/paper_numbers.yaml</code> holds them:</p>" + tables.table_html(df))


def interpolation_html(row, seed, t: dict) -> str:
    """The latent interpolation of a cell's text.json (pipeline/models/interpolate.py), if
    any: the two test sentences, then one line per point, first and last their
    reconstructions."""
    interp = t.get("interpolation")
    if not interp:
        return ""
    first, second = interp["sentences"]
    i, j = interp["test_index"]
    df = pd.DataFrame.from_records([{"a": f"{p['alpha']:.2f}", "greedy": p["greedy"],
                                     "sampled": p["sample"]} for p in interp["points"]])
    return (f"<p>Latent interpolation ({esc(row)}, seed {seed}) between test sentence {i}, "
            f"“{esc(first)}”, and test sentence {j}, “{esc(second)}”:</p>"
            + tables.table_html(df, "t txt")
            + note("Each line decodes z_t = (1 − a) z_t(first) + a z_t(second), the two "
                   "sentences' posterior means (the prior mean past a sentence's end), from <S>: "
                   "greedy, and with drawn tokens. a = 0 and a = 1 are the two reconstructions. "
                   "The authors' sampler mixes posterior samples instead (docs/model.md, "
                   "Latent interpolation)."))


def index_html(eval_dir: str, pages: list, profile: str, seeds: list, sources: dict,
               rows: dict, dpi: int = 80, provenance: str = "", overrides=None) -> str:
    """Every table at a glance: data and budget, a verdict line per claim, our rows' means
    and seed ranges in the paper's order, a link to the table's page."""
    paper, cells = tables.load_paper(), tables.load_cells(eval_dir, rows, seeds)
    out = ["<h1>Z-Forcing reproduction: every table at a glance</h1>",
           f"<p>{esc(paper['source'])}. Each table's page has its numbers and the paper's, "
           "the pairs behind every verdict, the runs and their provenance.</p>",
           provenance_html(provenance)]
    tabs = []
    for bench, filename in pages:
        s = tables.spec(paper, bench)
        sub = tables.bench_cells(cells, bench, s)
        tabs.append((bench, filename, s, sub, tables.claims(sub, s)))
    out.append(findings_html([c for *_, claims in tabs for c in claims]))
    for bench, filename, s, sub, claims in tabs:
        used = {i["data"].get("source") for i in sub["info"]}
        stale = sources.get(bench) and used != {sources[bench]}
        ours, same = tables.values(sub, s["quantity"]), tables.comparable(sub, s)
        out.append(f'<h2><a href="{esc(filename)}">{esc(s["title"])}</a></h2>'
                   + data_line(sub, profile, seeds, overrides)
                   + (note(f"params.yaml now asks for source {sources[bench]}: rerun the pipeline.")
                      if stale else "") + summary_html(claims)
                   + figures.row_ranges({r: list(v.values()) for r, v in ours.items() if v},
                                        f"{s['title']}: ours ({s['units']})",
                                        s["direction"] == "higher", dpi)
                   + note("Our rows in the paper's order: a dot per seed, the bar at the mean, the "
                          "line from the lowest seed to the highest.")
                   + f'<p><a href="{esc(filename)}">The {esc(s["title"])} page</a>: the paper\'s '
                   "numbers and ours, the pairs behind each verdict, the runs.</p>"
                   + ("<details><summary>Ours beside the paper's</summary>" if same else
                      "<details><summary>Ours</summary>")
                   + tables.table_html(tables.main_table(sub, s, compact=True, same=same)) + "</details>"
                   + ("" if same else "<details><summary>Published (other data)</summary>"
                      + tables.table_html(tables.published_table(sub, s)) + "</details>"))
    out += [f"<h2>How a verdict is reached</h2><p>{V.RULE}</p>", confidence_html(paper)]
    return "\n".join(out) if pages else "\n".join(out[:2] + [note("Nothing evaluated yet.")])
