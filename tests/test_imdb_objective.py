"""The authors' IMDB objective (lm_lstm_imdb.py) as switches, on a tiny language model and
a few tokens: the backward language model at the aux weight (model.bwd_in_aux), Adam's
beta2, a constant aux weight, the aux ramp in epochs, selection on the validation IWAE
(train.valid_iwae_k), and the per-sentence normalisation we share with the authors.
Every switch off leaves the loss of today."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pipeline import train as T
from pipeline.config import ConfigError, ModelConfig, TrainConfig
from pipeline.datasets.batches import ArrayLoader, Batch
from pipeline.models import build_model
from pipeline.train import Stepper, aux_ramp_updates, make_optimizer, schedule_weights

V = 9
BETA = 0.3


def _model(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(name="zforcing_lm", data="tokens", x_dim=V, rnn_dim=6,
                                   emb_dim=4, mlp_dim=4, z_dim=2, **kw))


def _batch():
    """Two sentences, 3 and 2 tokens: x = [<S>, w..], y = [w.., </S>], one padded step."""
    x = torch.tensor([[1, 5, 6], [1, 7, 0]])
    y = torch.tensor([[5, 6, 2], [7, 2, 0]])
    return Batch(x, y, torch.tensor([[1.0, 1, 1], [1, 1, 0]]))


def _noise():
    return torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(1))


def _cfg(**kw):
    base = dict(lr=1e-3, batch_size=2, aux_weight=BETA, aux_anneal_updates=0, clip=1e9)
    return TrainConfig(**{**base, **kw})


def _step_loss(model, cfg, batch=None, noise=None) -> float:
    """The loss one Stepper update minimises (read from its device accumulator)."""
    step = Stepper(model, make_optimizer(model, cfg), cfg, "cpu")
    step(batch or _batch(), _noise() if noise is None else noise)
    return float(step.acc[0])


def _terms(model):
    with torch.no_grad():
        return model(_batch(), _noise())


# ---------------------------------------------------------------- 1: backward LM in aux

def test_backward_lm_term_is_beta_times_the_backward_nll():
    model = _model(bwd_in_aux=True)
    terms = _terms(model)
    # the backward head's NLL by hand: b_t (over y_t..y_T) predicts x_t, real steps only
    with torch.no_grad():
        b = model.backward_states(_batch())                       # (T, B, r)
        logp = F.log_softmax(model.bwd_out.proj(b), -1)
    x, mask = _batch().x, _batch().mask
    by_hand = [-sum(float(logp[t, s, x[s, t]]) for t in range(3) if mask[s, t]) for s in range(2)]
    assert terms.bwd_nll.tolist() == pytest.approx(by_hand, rel=1e-5)
    # authors: weight_aux * (aux + nll_rev), averaged over the batch
    expected = float((-terms.log_px + terms.kl + BETA * (terms.aux + terms.bwd_nll)).mean())
    assert _step_loss(copy.deepcopy(model), _cfg()) == pytest.approx(expected, rel=1e-5)
    # the same model with the switch off: the backward term leaves the loss
    off = copy.deepcopy(model)
    off.cfg = dataclasses.replace(off.cfg, bwd_in_aux=False)
    without = float((-terms.log_px + terms.kl + BETA * terms.aux).mean())
    assert _step_loss(off, _cfg()) == pytest.approx(without, rel=1e-5)
    assert expected - without == pytest.approx(BETA * float(terms.bwd_nll.mean()), rel=1e-4)


def test_backward_lm_term_follows_the_rows_aux_weight():
    """β = 0 (the plain Z-Forcing row) adds nothing; model.bwd still adds its own λ."""
    model = _model(bwd_in_aux=True, bwd=0.5)
    terms = _terms(model)
    zero = float((-terms.log_px + terms.kl + 0.5 * terms.bwd_nll).mean())
    assert _step_loss(copy.deepcopy(model), _cfg(aux_weight=0.0)) == pytest.approx(zero, rel=1e-5)
    both = float((-terms.log_px + terms.kl + BETA * terms.aux + (0.5 + BETA) * terms.bwd_nll).mean())
    assert _step_loss(copy.deepcopy(model), _cfg()) == pytest.approx(both, rel=1e-5)


def test_defaults_leave_todays_loss_unchanged():
    assert ModelConfig().bwd_in_aux is False
    d = TrainConfig()
    assert (d.valid_iwae_k, d.aux_anneal_epochs, d.beta2) == (0, 0.0, 0.999)
    model = _model()
    assert model.bwd_out is None                       # no head is built: same parameters
    terms = _terms(model)
    switch_free = float((-terms.log_px + terms.kl + BETA * terms.aux).mean())
    assert _step_loss(model, _cfg()) == pytest.approx(switch_free, rel=1e-6)


# ---------------------------------------------------------------- 2: normalisation

def test_loss_is_per_sentence_as_in_the_authors_code():
    """lm_lstm_imdb.py sums each term over a sentence's tokens and averages over sentences
    (`(nll * x_mask).sum(0)` then `.mean()`): no per-token division, in theirs or ours."""
    model = _model()
    terms = _terms(model)
    tokens = float(_batch().mask.sum())                 # 5
    per_sentence = float((-terms.log_px + terms.kl).sum()) / 2
    loss = _step_loss(model, _cfg(aux_weight=0.0))
    assert loss == pytest.approx(per_sentence, rel=1e-6)
    assert loss != pytest.approx(float((-terms.log_px + terms.kl).sum()) / tokens, rel=1e-3)


# ---------------------------------------------------------------- 3: Adam's beta2

def test_beta2_reaches_the_optimizer():
    model = _model()
    cfg = _cfg(beta2=0.99)
    opt = make_optimizer(model, cfg)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    step = Stepper(model, opt, cfg, "cpu")
    step(_batch(), _noise())
    w = model.out.proj.weight
    # one Adam step: v_1 = (1 - beta2) g^2, the second moment of the Theano adam()
    assert torch.allclose(opt.state[w]["exp_avg_sq"], 0.01 * w.grad ** 2, rtol=1e-5, atol=1e-12)


# ---------------------------------------------------------------- 4: constant beta

def test_constant_beta_ignores_the_anneal_schedule():
    good = torch.tensor(0.0, dtype=torch.float64)
    constant = _cfg(aux_anneal_updates=0)
    assert float(schedule_weights(good, constant)[1]) == pytest.approx(BETA)
    assert float(schedule_weights(good + 10_000, constant)[1]) == pytest.approx(BETA)
    annealed = _cfg(aux_anneal_updates=300)
    assert float(schedule_weights(good, annealed)[1]) == 0.0
    assert float(schedule_weights(good + 150, annealed)[1]) == pytest.approx(BETA / 2)
    # at the first update the loss already carries the full β · aux
    model = _model()
    terms = _terms(model)
    assert _step_loss(copy.deepcopy(model), constant) == pytest.approx(
        float((-terms.log_px + terms.kl + BETA * terms.aux).mean()), rel=1e-5)
    assert _step_loss(model, annealed) == pytest.approx(float((-terms.log_px + terms.kl).mean()), rel=1e-5)


def _loader(n=8):
    g = torch.Generator().manual_seed(3)
    words = torch.randint(3, V, (n, 4), generator=g)
    x = torch.cat([torch.ones(n, 1, dtype=torch.long), words[:, :-1]], 1)
    return ArrayLoader(x, words, batch_size=2, shuffle=False)


def test_aux_anneal_in_epochs_counts_the_loaders_batches():
    """train_blizzard.py: aux_step = aux_end / (2 * nbatches)."""
    assert aux_ramp_updates(_cfg(aux_anneal_epochs=2.0), 50) == 100
    assert aux_ramp_updates(_cfg(aux_anneal_updates=300), 50) == 300     # epochs 0: updates
    cfg = _cfg(aux_anneal_epochs=0.5, aux_anneal_updates=999, max_updates=3, log_every=1)
    out = T.train(_model(), _loader(), cfg)                             # 4 batches: ramp of 2
    weights = [r["aux_weight"] for r in out["history"] if r["kind"] == "train"]
    assert weights == pytest.approx([0.0, BETA / 2, BETA])
    with pytest.raises(ConfigError, match="aux_anneal_epochs"):
        TrainConfig(aux_anneal_epochs=-1.0)


# ---------------------------------------------------------------- 5: selection on IWAE

@pytest.mark.parametrize("k, best_at, halved", [(0, 2, False), (25, 1, True)])
def test_selection_on_the_validation_iwae(monkeypatch, k, best_at, halved):
    """Two validations: the ELBO improves (-10 -> -8), the IWAE gets worse (-5 -> -7).
    On the ELBO the second weights are kept and the rate stays; on the IWAE (the authors'
    `valid_err[1]`) the first weights are kept and the rate halves."""
    figures = iter([{"elbo_per_seq": -10.0, "iwae_per_seq": -5.0},
                    {"elbo_per_seq": -8.0, "iwae_per_seq": -7.0}])
    seen, states = [], []

    def fake_evaluate(model, loader, **kw):
        seen.append(kw.get("iwae_k", 0))
        states.append({n: v.detach().clone() for n, v in model.state_dict().items()})
        res = next(figures)
        return {**res, "elbo_per_step": res["elbo_per_seq"] / 3, "kl_per_seq": 1.0}

    monkeypatch.setattr(T, "evaluate", fake_evaluate)
    cfg = _cfg(max_updates=4, eval_every=2, log_every=2, lr_schedule="halve", lr_floor=1e-5, valid_iwae_k=k)
    out = T.train(_model(), _loader(), cfg, valid_loader=_loader(4))
    assert seen == [k, k]
    for name, value in out["best_state"].items():
        assert torch.equal(value, states[best_at - 1][name]), name
    valid = [r for r in out["history"] if r["kind"] == "valid"]
    assert valid[1]["lr_halved"] is halved
    assert ("valid_iwae_per_seq" in valid[0]) is bool(k)


def test_selection_bound_of_an_exact_model_is_its_elbo():
    assert T.selection_bound({"elbo_per_seq": -3.0}, _cfg(valid_iwae_k=25)) == -3.0
    assert T.selection_bound({"elbo_per_seq": -3.0, "iwae_per_seq": -2.0}, _cfg()) == -3.0
