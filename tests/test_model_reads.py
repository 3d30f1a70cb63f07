"""Each model reads exactly the ModelConfig fields it declares (pipeline.models.config_reads).

A training stage depends on those alone (data/rows/<bench>/<row>.json, written by the check
stage), so an undeclared read would leave a stale cell that `dvc status` calls up to date.
Checked by perturbation: a field outside the declaration leaves the initial weights and every
loss term bit for bit; each field inside changes them (or is refused)."""
import dataclasses
import hashlib

import pytest
import torch

from pipeline.bounds import draw_noise
from pipeline.config import ConfigError, ModelConfig, TrainConfig
from pipeline.datasets.batches import Batch
from pipeline.models import MODELS, build_model, config_reads, config_record
from pipeline.train import Stepper, make_optimizer

X_DIM = {"audio": 6, "binary": 1, "tokens": 11}
OUTPUT = {"audio": "gaussian", "binary": "bernoulli", "tokens": "categorical"}
# a value other than the default for each field a model could read
OTHER = {"rnn_dim": 12, "emb_dim": 10, "mlp_dim": 10, "z_dim": 3, "dropout": 0.25,
         "output": "gmm", "gmm_components": 3, "z_force": False, "cond_ln": True, "use_l2": True,
         "bwd": 0.0, "bwd_in_aux": True, "lrelu_head": True, "ar_hidden": 5,
         "lrelu_emb": True, "lrelu_bwd_head": True}
FIXED = {"name", "data", "x_dim", "param_budget"}  # the row and data; the stage's own budget


def _batch(data: str) -> Batch:
    g = torch.Generator().manual_seed(0)
    if data == "audio":
        return Batch(torch.randn(3, 5, 6, generator=g), torch.randn(3, 5, 6, generator=g), torch.ones(3, 5))
    high = 2 if data == "binary" else X_DIM["tokens"]
    y = torch.randint(1 if data == "tokens" else 0, high, (3, 5), generator=g)
    x = torch.cat([torch.zeros(3, 1, dtype=y.dtype), y[:, :-1]], 1)
    return Batch(x, y, torch.ones(3, 5))


def _fingerprint(cfg: ModelConfig) -> str:
    """The initial weights, every loss term, and the weights after one training step (the
    trainer reads the model's cfg too: bwd, bwd_in_aux)."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode() + p.detach().numpy().tobytes())
    batch = _batch(cfg.data)
    noise = draw_noise(model, batch, torch.Generator().manual_seed(2))
    torch.manual_seed(1)  # dropout
    t = model(batch, noise)
    for term in (t.log_px, t.kl, t.aux, t.bwd_nll):
        h.update(term.detach().numpy().tobytes())
    train = TrainConfig(lr=0.01, aux_weight=0.5)
    step = Stepper(model, make_optimizer(model, train), train, torch.device("cpu"))
    torch.manual_seed(1)
    step(batch, noise)
    for p in model.parameters():
        h.update(p.detach().numpy().tobytes())
    return h.hexdigest()


CASES = [(name, data) for name in MODELS for data in ("audio", "binary", "tokens")
         if getattr(MODELS[name], "family", None) in (None, OUTPUT[data]) or data == "audio"]


def _base(name: str, data: str) -> ModelConfig | None:
    try:
        # a backward head (bwd > 0), so that the keys of its readout show
        cfg = ModelConfig(name=name, data=data, x_dim=X_DIM[data], rnn_dim=8, emb_dim=6,
                          mlp_dim=6, z_dim=2, gmm_components=2, output=OUTPUT[data], bwd=0.5)
        _fingerprint(cfg)
        return cfg
    except (ValueError, RuntimeError):  # a model that does not take this kind of data
        return None


@pytest.mark.parametrize("name,data", CASES)
def test_model_reads_exactly_what_it_declares(name, data):
    base = _base(name, data)
    if base is None:
        pytest.skip(f"{name} does not take {data} data")
    ref, reads = _fingerprint(base), config_reads(name, base.output)
    for f in dataclasses.fields(ModelConfig):
        if f.name in FIXED:
            continue
        try:
            other = dataclasses.replace(base, **{f.name: OTHER[f.name]})
        except ConfigError:  # refused for this data by ModelConfig itself, on every row alike
            continue
        try:
            moved = _fingerprint(other) != ref
        except (ValueError, RuntimeError):  # refused by the model: it reads it, to refuse it
            moved = True
        if f.name == "output" and data != "audio":
            continue  # the data decides the family there (stages/params.py), never the params
        assert moved == (f.name in reads), (
            f"{name} on {data} data {'reads' if moved else 'does not read'} model.{f.name}, "
            f"but declares {sorted(reads)}")


def test_record_keeps_what_was_built_and_read():
    cfg = ModelConfig(name="rnn_gmm", x_dim=6, rnn_dim=8, emb_dim=6, z_dim=3, gmm_components=4)
    rec = config_record(dataclasses.replace(cfg, output="gmm"))
    assert rec["gmm_components"] == 4 and rec["rnn_dim"] == 8 and rec["name"] == "rnn_gmm"
    assert "z_dim" not in rec and "z_force" not in rec  # an LSTM has no latent
    rebuilt = ModelConfig(**rec)
    assert _fingerprint(rebuilt) == _fingerprint(cfg)


def _rows_reading(edit) -> set:
    """The (bench, row) pairs whose data/rows file changes under `edit` of the default
    profile's params.yaml: the training stages it reruns."""
    import copy

    import yaml

    from stages.check import check
    from test_pipeline_e2e import ROOT
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    moved = copy.deepcopy(params)
    edit(moved)
    before, after = check(params)[1], check(moved)[1]
    return {(b, r) for b in before for r in before[b] if before[b][r] != after[b][r]}


def test_a_model_key_reaches_only_the_rows_that_read_it():
    zf = {"zforcing", "zforcing_kla", "zforcing_aux", "zforcing_kla_aux"}
    speech = {(b, r) for b in ("timit", "blizzard") for r in zf}
    assert _rows_reading(lambda p: p["model"].update(gmm_components=3)) == {
        (b, r) for b in ("timit", "blizzard") for r in ("rnn_gmm", "vrnn_gmm")}
    assert _rows_reading(lambda p: p["model"].update(z_force=False)) == speech | {
        ("mnist", "zforcing"), ("mnist", "zforcing_aux"), ("imdb", "zforcing"),
        ("imdb", "zforcing_aux"), ("imdb", "zforcing_beta_lo"), ("imdb", "zforcing_beta_hi")}
    # the language model refuses cond_ln: one table's override
    assert _rows_reading(lambda p: p["benchmarks"]["timit"]["model"].update(cond_ln=True)) == {
        ("timit", r) for r in zf}
