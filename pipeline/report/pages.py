"""The sections of the report pages as HTML strings; the notebooks only display them.

`ColumnPage` is one paper table (timit, blizzard or mnist column); `index_html` is the
page that links them. Settings for figures and audio come in a `ReportConfig` (the stage
builds it from the `report:` section of params.yaml).
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass

import pandas as pd

from . import figures, tables


@dataclass
class ReportConfig:
    audio_examples: int = 2        # real test sequences, and generated samples per row, on a page
    audio_seconds: float = 3.0     # each clip cut to at most this long
    dpi: int = 80                  # resolution of the embedded PNG figures
    n_mels: int = 64               # mel bands of the spectrograms
    active_threshold: float = 0.01  # nats / sequence: the line on the latent-usage charts
                                    # (pipeline.bounds counts active units with the same value)

    def __post_init__(self):
        from ..config import _check
        _check(self, [
            ("audio_examples", int(self.audio_examples) == self.audio_examples
             and self.audio_examples >= 0, "a count, 0 or more"),
            ("audio_seconds", self.audio_seconds > 0, "must be positive"),
            ("dpi", 20 <= self.dpi <= 300, "must be in [20, 300]"),
            ("n_mels", int(self.n_mels) == self.n_mels and 8 <= self.n_mels <= 256, "in [8, 256]"),
            ("active_threshold", self.active_threshold >= 0, "cannot be negative"),
        ])


def esc(x) -> str:
    return html.escape(str(x))


def fmt_paper(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.2f}"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def df_html(df: pd.DataFrame, index: bool = False) -> str:
    if df.empty:
        return figures.note("(none)")
    return df.to_html(index=index, escape=True, border=0, classes="report-table", na_rep="—")


STYLE = """<style>
.report-table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
.report-table th, .report-table td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
.report-table th { background: #f4f4f4; }
.report-table td.name, .report-table th.name { text-align: left; }
.report-prov { display: block; font-size: 10px; color: #666; font-family: monospace; white-space: nowrap; }
.report-small { display: block; font-size: 10px; color: #666; }
.report-better { color: #1a7f37; } .report-worse { color: #b42318; }
.report-note { color: #444; }
</style>"""


class ColumnPage:
    """One paper table: our rows of one column beside the paper's numbers."""

    def __init__(self, column: str, eval_dir: str = "eval", models_dir: str = "models",
                 prepared_dir: str = "data/prepared", lock_path: str = "dvc.lock",
                 config: ReportConfig | dict | None = None, profile: str = "",
                 aux_weight=None, paper: dict | None = None):
        self.column = column
        self.eval_dir, self.models_dir, self.prepared_dir = eval_dir, models_dir, prepared_dir
        self.cfg = config if isinstance(config, ReportConfig) else ReportConfig(**(config or {}))
        self.profile, self.aux_weight = profile, aux_weight
        self.paper = paper or tables.load_paper_numbers()
        self.info = self.paper["columns"].get(column, {"title": column, "quantity": "log_likelihood",
                                                        "direction": "higher", "units": "nats per sequence",
                                                        "metric": "", "table": ""})
        self.lock = tables.load_lock(lock_path)
        metrics = tables.load_metrics(eval_dir)
        self.metrics = metrics[metrics["column"] == column].reset_index(drop=True)
        self.table = tables.column_table(self.metrics, column, self.paper, self.lock)
        self._histories = None

    @property
    def title(self) -> str:
        return f"{self.info.get('title', self.column)}: our numbers beside the paper's"

    # --------------------------------------------------------------- header and table
    def header(self) -> str:
        datasets = sorted(set(self.metrics["dataset"])) or ["—"]
        src = self.paper["source"]
        stand_in = [d for d in datasets if d != self.column]
        lines = [
            STYLE,
            f"<h1>{esc(self.title)}</h1>",
            "<p>Paper: " + esc(src["paper"]) + f" (arXiv {esc(src['arxiv'])}); "
            + esc(self.info.get("table", "")) + ".</p>",
            "<p>Metric: " + esc(self.info.get("metric", "")) + f" ({esc(self.info.get('units', ''))}, "
            + ("higher" if self.info.get("direction") == "higher" else "lower") + " is better).</p>",
            f"<p>Data: <b>{esc(', '.join(datasets))}</b>"
            + (f", standing in for the paper's {esc(self.info.get('title', self.column))} column"
               if stand_in else "")
            + f"; profile <b>{esc(self.profile or ', '.join(sorted(set(self.metrics['profile']))))}</b>;"
            f" aux_weight <b>{esc(self.aux_weight)}</b>; {len(self.metrics)} rows evaluated.</p>",
        ]
        if stand_in:
            lines.append(figures.note(
                "Absolute numbers on another corpus (or another normalising std) are not comparable "
                "with the paper's; the differences are shown for completeness, the ordering is the "
                "meaningful comparison."))
        return "\n".join(lines)

    def main_table(self) -> str:
        t = self.table
        if t.empty:
            return figures.note(f"No evaluated rows for the {self.column} column.")
        units = "NLL" if self.info.get("quantity") == "negative_log_likelihood" else "log-likelihood"
        has_quirk = t["quirk"].notna().any()
        head = ["<th class='name'>row</th>", "<th class='name'>model / recipe</th>",
                "<th></th>", f"<th>ours: {units} (nats / seq)<br/>"
                             "<span class='report-small'>provenance (dvc.lock md5)</span></th>",
                "<th>paper</th>", "<th>difference<br/>ours − paper</th>", "<th>params</th>"]
        if has_quirk:
            head.append("<th>authors' quirk:<br/>padded-batch mean</th>")
        head += ["<th>valid</th>", "<th>KL / seq</th>", "<th>active units</th>"]
        out = ["<table class='report-table'>", "<thead><tr>" + "".join(head) + "</tr></thead><tbody>"]
        for _, r in t.iterrows():
            s = self.metrics[self.metrics["row"] == r["row"]].iloc[0]["settings"]
            mdl = (s.get("model") or {})
            recipe = [f"{r['model']}", f"output {mdl.get('output', '?')}"]
            rowset = s.get("row") or {}
            if rowset.get("kla"):
                recipe.append("kla")
            if rowset.get("aux"):
                recipe.append(f"aux {s.get('aux_weight', '')}")
            better = "" if r["better"] is None or _missing(r["better"]) else (
                "report-better" if r["better"] else "report-worse")
            cells = [
                f"<td class='name'><b>{esc(r['paper_name'])}</b><span class='report-small'>{esc(r['row'])}</span></td>",
                f"<td class='name'>{esc(', '.join(recipe))}</td>",
                f"<td>{esc(r['sign'])}</td>",
                f"<td><b>{esc(tables.fmt(r['ours']))}</b><span class='report-small'>{esc(r['bound'])}"
                + ("" if r["sign"] == "=" or _missing(r["elbo"]) or r["bound"].startswith("ELBO")
                   else f"; ELBO {esc(tables.fmt(r['elbo']))}")
                + f"</span><span class='report-prov'>{esc(r['provenance'])}</span></td>",
                ("<td>—</td>" if _missing(r["paper"]) else
                 f"<td>{esc(r['paper_sign'])} {esc(fmt_paper(r['paper']))}"
                 f"<span class='report-small'>confidence: {esc(r['confidence'])}</span></td>"),
                f"<td class='{better}'>{esc(tables.fmt(None if _missing(r['diff']) else r['diff']))}</td>",
                f"<td>{esc(tables.fmt(None if _missing(r['params']) else int(r['params'])))}</td>",
            ]
            if has_quirk:
                q = None if _missing(r["quirk"]) else r["quirk"]
                cells.append(f"<td>{esc(tables.fmt(q))}" + (
                    "" if q is None else
                    f"<span class='report-small'>{esc(tables.fmt(r['quirk_diff']))} vs corrected</span>")
                    + "</td>")
            cells += [f"<td>{esc(tables.fmt(None if _missing(r['valid']) else r['valid']))}</td>",
                      f"<td>{esc(tables.fmt(None if _missing(r['kl']) else r['kl']))}</td>",
                      f"<td>{esc('—' if _missing(r['active_units']) else int(r['active_units']))}</td>"]
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        notes = ["= exact log-likelihood (deterministic rows); ≥ a lower bound (latent rows: the "
                 "importance-weighted bound when the evaluate stage ran it, else the single-sample "
                 "ELBO); ≤ an upper bound on a negative log-likelihood.",
                 "Our numbers use the corrected evaluation (sum over the real test sequences / their "
                 "number)." + (" The quirk column divides by the padded number of sequences, as the "
                               "authors' TIMIT script did." if has_quirk else ""),
                 "Provenance: md5 hashes recorded in dvc.lock for the row's train and evaluate "
                 "stages (data dependency, code dependencies combined, recorded parameter values, "
                 "model and evaluation outputs); the full hashes are listed at the end of the page."]
        return "\n".join(out) + "".join(figures.note(n) for n in notes)

    def ordering(self) -> str:
        if self.info.get("quantity") == "negative_log_likelihood":
            return figures.note("The paper's ordering claim is about the speech benchmarks; "
                                "it is not checked on this column.")
        o = tables.ordering_check(self.table, self.info)
        verdict = {True: "holds", False: "does not hold", None: "not checked"}[o["holds"]]
        rank = pd.DataFrame({"rank": range(1, len(o["ranking"]) + 1),
                             "row": [figures.label(r) for r in o["ranking"]],
                             "ours": [tables.fmt(self.table.set_index("row").loc[r, "ours"])
                                      for r in o["ranking"]]})
        return (f"<p><b>Paper's ordering</b> ({esc(o['claim'])}): <b>{esc(verdict)}</b>.</p>"
                f"<p class='report-ordering'>{esc(o['statement'])}</p>"
                + "<p>Our ranking, best first:</p>" + df_html(rank))

    def settings(self) -> str:
        common, differ = tables.settings_tables(self.metrics, self.column)
        if not differ.empty:
            differ = differ.rename(columns={r: figures.label(r) for r in differ.columns})
        quirks = []
        for key, text in (("protocol.target_mode", "Blizzard targets (quirk 1): 'correct' predicts "
                                                   "the next frames of the same row, 'faithful' the "
                                                   "authors' next-row pairing"),
                          ("protocol.eval_context", "TIMIT evaluation context (quirk 3)"),
                          ("protocol.first_step", "first step")):
            vals = set()
            for s in self.metrics["settings"]:
                v = tables.flatten_settings(s).get(key)
                if v is not None:
                    vals.add(json.dumps(v))
            if vals:
                quirks.append(f"<li>{esc(text)}: <code>{esc(', '.join(sorted(vals)))}</code></li>")
        train = pd.DataFrame.from_records(
            [{"row": figures.label(r), **{k: t.get(k) for k in ("updates", "skipped", "seconds",
                                                                 "best_valid_elbo_per_seq")}}
             for r, t in zip(self.metrics["row"], self.metrics["train"])])
        return ("<h3>Protocol and quirk settings</h3><ul>" + "".join(quirks) + "</ul>"
                + "<h3>Settings that differ between rows</h3>" + df_html(differ, index=True)
                + "<h3>Settings shared by every row</h3>" + df_html(common)
                + "<h3>Training runs</h3>" + df_html(train))

    # --------------------------------------------------------------- figures
    def histories(self) -> dict:
        if self._histories is None:
            self._histories = {}
            for r in self.metrics["row"]:
                h = figures.load_history(self.models_dir, r)
                if h is not None:
                    self._histories[r] = h
        return self._histories

    def learning_curves(self) -> str:
        return figures.learning_curves(self.histories(), self.cfg.dpi)

    def kl_aux_curves(self) -> str:
        return figures.kl_aux_curves(self.histories(), self.cfg.dpi)

    def latent_usage(self) -> str:
        kl, active = {}, {}
        for r, test in zip(self.metrics["row"], self.metrics["test"]):
            v = figures.load_latent(self.eval_dir, r)
            if v:
                kl[r] = v
                active[r] = test.get("active_units")
        return figures.latent_usage(kl, active, self.cfg.active_threshold, self.cfg.dpi)

    def audio(self) -> str:
        n, sec = int(self.cfg.audio_examples), float(self.cfg.audio_seconds)
        if n == 0:
            return figures.note("Audio disabled (report.audio_examples: 0).")
        parts = ["<h3>Real test audio</h3>"]
        real, why = figures.real_examples(self.prepared_dir, n, sec)
        parts += [figures.audio_block(t, x, sr, self.cfg.n_mels, self.cfg.dpi) for t, x, sr in real]
        if why:
            parts.append(figures.note(why))
        parts.append("<h3>Generated audio</h3>")
        any_gen = False
        for r in self.metrics["row"]:
            gen = figures.generated_examples(self.eval_dir, r, n, sec)
            if gen:
                any_gen = True
                parts.append(f"<h4>{esc(figures.label(r))}</h4>")
                parts += [figures.audio_block(t, x, sr, self.cfg.n_mels, self.cfg.dpi)
                          for t, x, sr in gen]
        if not any_gen:
            parts.append(figures.note("No row wrote eval/<row>/samples.npz."))
        parts.append(figures.note(f"Clips cut to at most {sec:g} s; 16-bit WAV embedded in the page."))
        return "\n".join(parts)

    # --------------------------------------------------------------- context and provenance
    def context(self) -> str:
        ctx = tables.context_table(self.column, self.paper)
        if not ctx.empty:
            ctx["value"] = [fmt_paper(v) for v in ctx["value"]]
        notes = "".join(figures.note(n) for n in self.paper.get("notes", []))
        return df_html(ctx) + notes

    def provenance(self) -> str:
        p = tables.provenance_table(self.metrics, self.lock)
        head = ("<p>From dvc.lock, as DVC recorded it when the stages ran "
                "(not a git commit, which a committed page cannot contain).</p>"
                if self.lock else f"<p>dvc.lock: {esc(tables.NOT_RECORDED)}.</p>")
        return head + df_html(p)


def index_html(eval_dir: str = "eval", lock_path: str = "dvc.lock", pages: list | None = None,
               profile: str = "", aux_weight=None, paper: dict | None = None) -> str:
    """The index: one line per rendered page with its link, data, rows and ordering verdict."""
    paper = paper or tables.load_paper_numbers()
    metrics = tables.load_metrics(eval_dir)
    lock = tables.load_lock(lock_path)
    src = paper["source"]
    out = [STYLE, "<h1>Z-Forcing reproduction: report</h1>",
           f"<p>Paper: {esc(src['paper'])} (arXiv {esc(src['arxiv'])}).</p>",
           f"<p>Profile <b>{esc(profile)}</b>, aux_weight <b>{esc(aux_weight)}</b>; "
           f"{len(metrics)} rows evaluated; dvc.lock "
           + ("recorded" if lock else esc(tables.NOT_RECORDED)) + ".</p>",
           "<table class='report-table'><thead><tr><th class='name'>page</th><th class='name'>data</th>"
           "<th>rows</th><th class='name'>paper's ordering</th></tr></thead><tbody>"]
    for column, filename in pages or []:
        info = paper["columns"].get(column, {"title": column})
        sub = metrics[metrics["column"] == column]
        t = tables.column_table(sub, column, paper, lock)
        if info.get("quantity") == "negative_log_likelihood":
            verdict = "not checked (speech claim)"
        else:
            o = tables.ordering_check(t, info)
            verdict = {True: "holds", False: "does not hold", None: "not checked"}[o["holds"]]
        out.append(f"<tr><td class='name'><a href='{esc(filename)}'>{esc(info.get('title', column))}"
                   f"</a></td><td class='name'>{esc(', '.join(sorted(set(sub['dataset']))))}</td>"
                   f"<td>{len(sub)}</td><td class='name'>{esc(verdict)}</td></tr>")
    out.append("</tbody></table>")
    if not pages:
        out.append(figures.note("No evaluated rows yet: run the train and evaluate stages."))
    return "\n".join(out)


def config_dict(cfg: ReportConfig) -> dict:
    return asdict(cfg)
