"""The rows of the paper's tables: a row name -> which model, which training recipe.

Knobs shared by all rows (sizes, z_force, cond_ln, learning rate, schedules ...) are
parameters; a row only says which model it is, whether KL annealing ("+ kla") is on, and
where its aux weight comes from: `aux` rows use the top-level `aux_weight` (so they rerun
under `dvc exp run -S aux_weight=...`), `beta` rows a fixed value named in params.
Which rows a table trains is a parameter too (benchmarks.<bench>.rows / aux_rows), checked
against `TABLE_ROWS` so that no meaningless cell exists (a GMM head on binary pixels).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    model: str              # pipeline.models registry key
    paper_name: str
    kla: bool = False       # KL annealing
    aux: bool = False       # auxiliary cost at the top-level aux_weight
    beta: bool = False      # auxiliary cost at a fixed weight: benchmarks.<bench>.betas.<row>


SPEECH = [
    Row("rnn_gauss", "rnn_gauss", "RNN-Gauss"),
    Row("rnn_gmm", "rnn_gmm", "RNN-GMM"),
    Row("rnn_ar", "rnn_ar", "RNN-AR (within-frame autoregressive, Dai et al. 2019)"),
    Row("vrnn_i_gauss", "vrnn_i_gauss", "VRNN-I-Gauss"),
    Row("vrnn_gauss", "vrnn_gauss", "VRNN-Gauss"),
    Row("vrnn_gmm", "vrnn_gmm", "VRNN-GMM"),
    Row("srnn", "srnn", "SRNN (smooth + Res_q)"),
    Row("zforcing", "zforcing", "Z-Forcing"),
    Row("zforcing_kla", "zforcing", "Z-Forcing + kla", kla=True),
    Row("zforcing_aux", "zforcing", "Z-Forcing + aux", aux=True),
    Row("zforcing_kla_aux", "zforcing", "Z-Forcing + kla, aux", kla=True, aux=True),
]
MNIST = [
    Row("lstm", "rnn", "LSTM (exact likelihood)"),
    Row("zforcing", "zforcing", "Z-Forcing"),
    Row("zforcing_aux", "zforcing", "Z-Forcing + aux", aux=True),
]
IMDB = [
    Row("lstm", "rnn_lm", "LSTM language model (exact)"),
    Row("zforcing", "zforcing_lm", "Z-Forcing (β = 0)"),
    Row("zforcing_aux", "zforcing_lm", "Z-Forcing + aux (β = aux_weight)", aux=True),
    Row("zforcing_beta_lo", "zforcing_lm", "Z-Forcing + aux (fixed low β)", beta=True),
    Row("zforcing_beta_hi", "zforcing_lm", "Z-Forcing + aux (fixed high β)", beta=True),
]
TABLE_ROWS = {"timit": {r.name: r for r in SPEECH}, "blizzard": {r.name: r for r in SPEECH},
              "mnist": {r.name: r for r in MNIST}, "imdb": {r.name: r for r in IMDB}}

# the speech table's claimed ordering (worst to best), kept for the library's users
PAPER_ORDER = ["rnn_gauss", "rnn_gmm", "vrnn_gauss", "srnn", "zforcing", "zforcing_aux"]


def get_row(bench: str, name: str) -> Row:
    rows = TABLE_ROWS.get(bench)
    if rows is None:
        raise ValueError(f"unknown benchmark {bench!r}; known: {', '.join(TABLE_ROWS)}")
    if name not in rows:
        raise ValueError(f"{bench} has no row {name!r}; its rows: {', '.join(rows)}")
    return rows[name]

ROWS = TABLE_ROWS["timit"]  # the speech table's rows (library users of the one-table API)
