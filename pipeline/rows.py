"""The rows of the paper's tables: a row name -> which model, which training recipe.

The pipeline grid trains one model per row. Knobs shared by all rows (sizes, z_force,
cond_ln, learning rate, schedules ...) are parameters; a row only says which model it is
and whether the KL annealing ("+ kla") and the auxiliary cost ("+ aux") are on.
`paper_name` is the row's name in the paper's tables (and in report/paper_numbers.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    model: str              # pipeline.models registry key
    paper_name: str
    kla: bool = False       # KL annealing
    aux: bool = False       # auxiliary cost on (weight = top-level param aux_weight)


ROWS = {r.name: r for r in [
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
]}

# the paper's claimed ordering on the speech benchmarks (worst to best)
PAPER_ORDER = ["rnn_gauss", "rnn_gmm", "vrnn_gauss", "srnn", "zforcing", "zforcing_aux"]


def get_row(name: str) -> Row:
    if name not in ROWS:
        raise ValueError(f"unknown row {name!r}; known rows: {', '.join(ROWS)}")
    return ROWS[name]
