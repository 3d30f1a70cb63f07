"""Settings as dataclasses. Nothing here reads params.yaml: the stages translate.

Each field names the paper's wording or the authors' flag in its comment; README has the
full table. `validate()` raises one ValueError listing every impossible value.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from .errors import UserError

# the values of train.compile / eval.compile and of the precisions (pipeline/compile.py)
COMPILE_MODES = ("off", "default", "max")
PRECISIONS = ("fp32", "tf32", "bf16")


class ConfigError(UserError, ValueError):
    """Impossible hyperparameters; the message lists every offending field."""


def _check(obj, rules):
    bad = [f"{name}={getattr(obj, name)!r} ({why})" for name, ok, why in rules if not ok]
    if bad:
        raise ConfigError(f"invalid {type(obj).__name__}: " + "; ".join(bad))


def from_dict(cls, d: dict):
    """Build a config from a mapping, refusing unknown keys (catches misspelt params)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    return cls(**d)


@dataclass
class ModelConfig:
    name: str = "zforcing"        # registry key: zforcing, rnn, vrnn, srnn, ...
    data: str = "audio"           # audio (float frames) | binary (0/1 pixels) | tokens
    x_dim: int = 200              # samples per frame; 1 for pixels; vocabulary size for tokens
    rnn_dim: int = 1024           # --rnn_dim
    emb_dim: int = 512            # --emb_dim
    mlp_dim: int = 512            # --mlp_dim
    z_dim: int = 256              # --z_dim
    dropout: float = 0.0          # dropout after the input embedding
    output: str = "gaussian"      # output family: gaussian | bernoulli | categorical | gmm | ...
    gmm_components: int = 20      # RNN-GMM / VRNN-GMM mixture size
    z_force: bool = True          # aux net sees z_t only (paper Eq. 8); False: [h_{t-1}; z_t] (code default)
    cond_ln: bool = False         # --cond_ln: z enters the LSTM through conditional layer norm
    use_l2: bool = False          # --use_l2: squared error aux cost instead of Gaussian NLL
    bwd: float = 0.0              # --bwd: weight of the backward-RNN likelihood head (0 = no head)
    bwd_in_aux: bool = False      # zforcing_lm: the backward head's NLL is added at the aux weight
                                  # (lm_lstm_imdb.py: weight_aux * (aux + nll_rev)); builds the head
    lrelu_head: bool = False      # zforcing and rnn: the output head reads lrelu(W h_t + W' emb(x_t)),
                                  # not h_t (lm_lstm_mnist.py: ff_out_lstm + ff_out_prev, then ff_out_mus)
    lrelu_emb: bool = False       # binary data, zforcing and rnn: the input embedding is a 200-wide pixel
                                  # table then lrelu(Linear) (lm_lstm_mnist.py: Wemb, ff_in_lstm; the
                                  # backward RNN's own layer ff_in_lstm_r), not the table alone
    lrelu_bwd_head: bool = False  # zforcing with bwd > 0: the backward head reads lrelu(W b_t + W' emb(y_t)),
                                  # not b_t (lm_lstm_mnist.py: ff_out_lstm_r + ff_out_prev_r, ff_out_mus_r)
    ar_hidden: int = 0            # ar_gaussian output: MADE hidden units (0 = 2 * x_dim, the family default)
    param_budget: int = 0         # >0: rnn_dim is chosen so the model has about this many parameters
                                  # (pipeline.models.budget.resolve_budget); 0: rnn_dim as given

    def __post_init__(self):
        self.validate()

    def validate(self):
        _check(self, [
            ("data", self.data in ("audio", "binary", "tokens"), "audio, binary or tokens"),
            ("x_dim", self.x_dim > 0, "must be positive"),
            ("rnn_dim", self.rnn_dim > 0, "must be positive"),
            ("emb_dim", self.emb_dim > 0, "must be positive"),
            ("mlp_dim", self.mlp_dim > 0, "must be positive"),
            ("z_dim", self.z_dim > 0, "must be positive"),
            ("dropout", 0.0 <= self.dropout < 1.0, "must be in [0, 1)"),
            ("gmm_components", self.gmm_components > 0, "must be positive"),
            ("bwd", self.bwd >= 0, "a loss weight cannot be negative"),
            ("lrelu_emb", not self.lrelu_emb or self.data == "binary",
             "the authors' MNIST pixel embedding: binary data only"),
            ("ar_hidden", self.ar_hidden >= 0, "cannot be negative (0 = family default)"),
            ("param_budget", self.param_budget >= 0, "cannot be negative (0 = off)"),
        ])


@dataclass
class TrainConfig:
    lr: float = 1e-3              # Adam learning rate (--lr)
    adam_eps: float = 1e-5        # official code
    beta2: float = 0.999          # Theano code used 0.99
    weight_decay: float = 0.0     # IMDB: 1e-6
    clip: float = 100.0           # global grad-norm clip (IMDB: 10)
    batch_size: int = 32
    max_updates: int = 1000       # stop after this many attempted updates
    max_epochs: int = 100
    # KL annealing ("kla"): kl_weight = min(kl_cap, kl_start + kl_step * good_updates)
    kl_anneal: bool = False
    kl_start: float = 0.2
    kl_step: float = 5e-5
    kl_cap: float = 1.0
    # True: the KL is annealed as above on every row, not only on "+ kla" rows (the authors'
    # MNIST runs: train_lstm_mnist.py kl_start 0.2, kl_rate 5e-5)
    kl_anneal_all: bool = False
    # aux weight grows linearly from 0 to aux_weight over aux_anneal_updates (0 = constant)
    aux_weight: float = 0.0
    aux_anneal_updates: int = 0
    # >0: the aux weight grows over this many epochs instead (train_blizzard.py: 2)
    aux_anneal_epochs: float = 0.0
    # skip an update whose batch-mean KL reaches this (official Blizzard code: 1e4); 0 = off
    kl_skip: float = 0.0
    # stop with NonFiniteTraining when more than this fraction of attempted updates was
    # skipped (checked at each log, from 20 updates on): a run that mostly skips is broken
    max_skip_fraction: float = 0.5
    # learning-rate recipe: "halve" on a worse validation bound (authors' intent), or "constant"
    lr_schedule: str = "halve"
    lr_floor: float = 1e-4
    # the halving's reference: "previous" (the last validation bound) or "best" (the best so
    # far: lm_lstm_imdb.py's `best_valid_err < valid_err[1]`)
    halve_against: str = "previous"
    eval_every: int = 0           # validate every N updates (0 = once per epoch)
    # the validation bound that halves the rate and picks the best weights: 0 = the
    # single-sample ELBO; k > 0 = the IWAE bound with k samples (lm_lstm_imdb.py: 25)
    valid_iwae_k: int = 0
    log_every: int = 50           # read device accumulators every N updates
    ckpt_every: int = 200         # atomic training checkpoint every N updates
    seed: int = 1234
    # the training step's speed (pipeline.compile). compile: off | default (torch.compile)
    # | max (CUDA graphs, CUDA only); compiled CPU code depends on the instruction set, so
    # runs are byte-reproducible across CPUs only with off. precision: fp32 | tf32 (CUDA
    # matmuls) | bf16 (autocast forward, CUDA only)
    compile: str = "off"
    precision: str = "fp32"
    extra: dict = field(default_factory=dict)  # free-form notes carried into checkpoints

    def __post_init__(self):
        self.validate()

    def validate(self):
        _check(self, [
            ("lr", self.lr > 0, "must be positive"),
            ("adam_eps", self.adam_eps > 0, "must be positive"),
            ("beta2", 0 < self.beta2 < 1, "must be in (0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "cannot be negative"),
            ("clip", self.clip > 0, "must be positive"),
            ("batch_size", self.batch_size > 0, "must be positive"),
            ("max_updates", self.max_updates > 0, "must be positive"),
            ("max_epochs", self.max_epochs > 0, "must be positive"),
            ("kl_start", 0 <= self.kl_start <= self.kl_cap, "must be in [0, kl_cap]"),
            ("kl_step", self.kl_step >= 0, "cannot be negative"),
            ("kl_cap", self.kl_cap > 0, "must be positive"),
            ("aux_weight", self.aux_weight >= 0, "a loss weight cannot be negative"),
            ("aux_anneal_updates", self.aux_anneal_updates >= 0, "cannot be negative"),
            ("aux_anneal_epochs", self.aux_anneal_epochs >= 0, "cannot be negative"),
            ("kl_skip", self.kl_skip >= 0, "cannot be negative"),
            ("max_skip_fraction", 0 <= self.max_skip_fraction <= 1, "must be in [0, 1]"),
            ("lr_schedule", self.lr_schedule in ("halve", "constant"), "halve or constant"),
            ("lr_floor", 0 < self.lr_floor <= self.lr or self.lr_schedule == "constant",
             "must be in (0, lr]"),
            ("halve_against", self.halve_against in ("previous", "best"), "previous or best"),
            ("eval_every", self.eval_every >= 0, "cannot be negative"),
            ("valid_iwae_k", self.valid_iwae_k >= 0, "cannot be negative (0 = ELBO)"),
            ("log_every", self.log_every > 0, "must be positive"),
            ("ckpt_every", self.ckpt_every > 0, "must be positive"),
            ("compile", self.compile in COMPILE_MODES, "one of " + ", ".join(COMPILE_MODES)),
            ("precision", self.precision in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
        ])
