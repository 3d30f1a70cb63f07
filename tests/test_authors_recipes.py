"""The rest of the authors' recipes as switches: the MNIST output head, input embedding and
backward head of lm_lstm_mnist.py (model.lrelu_head, model.lrelu_emb, model.lrelu_bwd_head),
their MNIST KL annealing on every row (train.kl_anneal_all) and their IMDB halving against
the best bound (train.halve_against). Each is off by default, where the computation is
today's."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline import train as T
from pipeline.config import ConfigError, ModelConfig, TrainConfig
from pipeline.datasets.batches import ArrayLoader, PixelLoader
from pipeline.models import build_model
from pipeline.models.base import gather_time, reverse_index
from pipeline.models.layers import AUTHORS_PIXEL_TABLE, Embedding
from pipeline.models.zforcing import ZForcing
from pipeline.rows import get_row
from pipeline.train import schedule_weights
from stages import params as P

CFG = ModelConfig(name="zforcing", data="binary", x_dim=1, output="bernoulli",
                  rnn_dim=6, emb_dim=4, mlp_dim=5, z_dim=3)


def _batch():
    pixels = (np.random.default_rng(0).random((2, 7)) < 0.4).astype(np.uint8)
    return PixelLoader(pixels, batch_size=2, shuffle=False).batch(0, 0)


def _noise(k=1):
    return torch.randn(2 * k, 7, 3, generator=torch.Generator().manual_seed(1))


def _hand_lrelu(v):
    """The authors' lrelu: slope 1/3 below 0, clipped to [-3, 3]."""
    return torch.where(v > 0, v, v / 3.0).clamp(-3.0, 3.0)


def _run(model, batch, noise):
    """(terms, what the output projection read) of one forward pass."""
    seen = []
    hook = model.out.proj.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    try:
        with torch.no_grad():
            terms = model(batch, noise)
    finally:
        hook.remove()
    return terms, seen[0]


# ---------------------------------------------------------------- 1: the MNIST output head

@pytest.mark.parametrize("name", ["zforcing", "rnn"])
def test_lrelu_head_is_lrelu_of_state_and_input_then_linear(name):
    """Same weights, head off and on: off, the head reads the state h_t itself; on, it reads
    lrelu(W h_t + b + W' emb(x_t) + b') (lm_lstm_mnist.py: ff_out_lstm + ff_out_prev, lrelu,
    ff_out_mus), and log p is the Bernoulli of its clipped linear map, by hand."""
    torch.manual_seed(0)
    off = build_model(dataclasses.replace(CFG, name=name))
    torch.manual_seed(0)
    on = build_model(dataclasses.replace(CFG, name=name, lrelu_head=True))
    missing = on.load_state_dict(off.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["readout.input.bias", "readout.input.weight",
                               "readout.state.bias", "readout.state.weight"]
    assert not any(k.startswith("readout") for k in off.state_dict())
    with torch.no_grad():   # weights with both signs and a clipped unit
        on.readout.state.weight.copy_(torch.linspace(-2, 2, 36).reshape(6, 6))
        on.readout.input.weight.copy_(torch.linspace(3, -3, 24).reshape(6, 4))
        on.readout.input.bias.fill_(0.25)
    batch = _batch()
    noise = _noise() if name == "zforcing" else None
    _, h = _run(off, batch, noise)                     # today's head input: the states
    terms, feats = _run(on, batch, noise)
    ex = on.emb(batch.x)                               # (B, T, e)
    if isinstance(on, ZForcing):
        ex = ex.transpose(0, 1)                        # Z-Forcing's head runs time-major
    r = on.readout
    want = _hand_lrelu(h @ r.state.weight.T + r.state.bias + ex @ r.input.weight.T + r.input.bias)
    assert torch.allclose(feats, want, atol=1e-6)
    assert (want == 3.0).any() or (want == -3.0).any() or (want < 0).any()
    logits = (feats @ on.out.proj.weight.T + on.out.proj.bias).squeeze(-1).clamp(-8, 8)
    y = batch.y.float().transpose(0, 1) if isinstance(on, ZForcing) else batch.y.float()
    log_p = -F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    mask = batch.mask.transpose(0, 1) if isinstance(on, ZForcing) else batch.mask
    assert torch.allclose(terms.log_px, (log_p * mask).sum(0 if isinstance(on, ZForcing) else 1),
                          atol=1e-5)


@pytest.mark.parametrize("name", ["zforcing", "rnn"])
def test_head_off_reads_the_states_as_today(name):
    """Off: no new parameters and the head reads exactly the LSTM states."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(CFG, name=name))
    assert model.readout is None
    batch = _batch()
    terms, feats = _run(model, batch, _noise() if name == "zforcing" else None)
    y, mask, t = batch.y, batch.mask, 1
    if name == "zforcing":                             # its head runs time-major
        y, mask, t = y.transpose(0, 1), mask.transpose(0, 1), 0
    else:
        with torch.no_grad():
            assert torch.equal(feats, model.rnn(model.emb(batch.x))[0])
    with torch.no_grad():
        assert torch.equal(terms.log_px, (model.out.log_prob(feats, y) * mask).sum(t))


@pytest.mark.parametrize("mnist", [{}, {"lrelu_emb": True, "bwd": 0.5, "lrelu_bwd_head": True}])
def test_lrelu_head_in_samples_generation_and_reconstruction(mnist):
    """k samples share the input embeddings; generate and reconstruct read the same head
    (and the same embedding and backward head, with the other MNIST switches on)."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(CFG, lrelu_head=True, **mnist))
    with torch.no_grad():
        two = model(_batch(), _noise(2))
        one = model(_batch(), _noise(2)[:2])
    assert torch.allclose(two.log_px[:2], one.log_px, atol=1e-6)
    assert torch.allclose(two.bwd_nll[:2], one.bwd_nll, atol=1e-6)
    assert model.generate(2, 5).shape == (2, 5)
    assert model.reconstruct(_batch(), generator=torch.Generator().manual_seed(0)).shape == (2, 7)
    rnn = build_model(dataclasses.replace(CFG, name="rnn", lrelu_head=True))
    assert rnn.generate(3, 4).shape == (3, 4)


# ---------------------------------------------------------------- 1b: the MNIST input embedding

def _hand_emb(table, layer, x):
    """lm_lstm_mnist.py by hand: Wemb[x], then lrelu(. W + b) (ff_in_lstm / ff_in_lstm_r)."""
    return _hand_lrelu(table.weight[x.long()] @ layer.weight.T + layer.bias)


def _bwd_states(model, batch, emb_y):
    """b_t, time-major: the backward LSTM over each sequence's reversed embedded targets."""
    rev = reverse_index(batch.mask)
    return gather_time(model.bwd_rnn(gather_time(emb_y, rev))[0], rev).transpose(0, 1)


def test_lrelu_emb_is_a_200_wide_table_then_lrelu_with_its_own_backward_layer():
    """On: the forward path reads lrelu(W Wemb[x] + b), the backward RNN lrelu(W_r Wemb[y] + b_r),
    one table of width 200 (lm_lstm_mnist.py's dim_input default) shared by both."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(CFG, lrelu_emb=True, bwd=0.5))
    emb = model.emb
    assert emb.table.weight.shape == (2, AUTHORS_PIXEL_TABLE) == (2, 200)
    assert emb.proj.weight.shape == emb.proj_bwd.weight.shape == (4, 200)
    with torch.no_grad():   # a unit clipped at 3 and a negative one, so lrelu is exercised
        emb.proj.bias.copy_(torch.tensor([40.0, -0.5, 0.0, -40.0]))
    batch = _batch()
    with torch.no_grad():
        fwd, bwd = emb(batch.x), emb.backward_path(batch.y)
        assert torch.allclose(fwd, _hand_emb(emb.table, emb.proj, batch.x), atol=1e-6)
        assert torch.allclose(bwd, _hand_emb(emb.table, emb.proj_bwd, batch.y), atol=1e-6)
        assert (fwd == 3.0).any() and (fwd < 0).any() and (fwd == -3.0).any()
        assert not torch.allclose(fwd[:, 1:], bwd[:, :-1])     # two layers, not one
        seen = []
        hook = model.bwd_rnn.register_forward_hook(lambda m, i, o: seen.append(i[0]))
        model(batch, _noise())
        hook.remove()
        assert torch.equal(seen[0], gather_time(bwd, reverse_index(batch.mask)))


@pytest.mark.parametrize("name", ["zforcing", "rnn"])
def test_lrelu_emb_model_equals_a_plain_table_holding_its_two_rows(name):
    """Pixels are 0 or 1, so the embedding on is the plain model whose table holds the two
    rows computed by hand: everything downstream reads the projected embedding."""
    torch.manual_seed(0)
    on = build_model(dataclasses.replace(CFG, name=name, lrelu_emb=True))
    off = build_model(dataclasses.replace(CFG, name=name))
    shared = {k: v for k, v in on.state_dict().items() if not k.startswith("emb.")}
    assert not off.load_state_dict(shared, strict=False).unexpected_keys
    if name == "zforcing":   # one layer for both paths, so that one table can stand for both
        with torch.no_grad():
            on.emb.proj_bwd.load_state_dict(on.emb.proj.state_dict())
    assert (on.emb.proj_bwd is not None) is (name == "zforcing")   # the LSTM has no backward RNN
    with torch.no_grad():
        off.emb.net.weight.copy_(_hand_emb(on.emb.table, on.emb.proj, torch.tensor([0, 1])))
        batch, noise = _batch(), (_noise() if name == "zforcing" else None)
        a, b = on(batch, noise), off(batch, noise)
    assert torch.allclose(a.log_px, b.log_px, atol=1e-5) and torch.allclose(a.kl, b.kl, atol=1e-5)


# ---------------------------------------------------------------- 1c: the MNIST backward head

def test_lrelu_bwd_head_is_lrelu_of_backward_state_and_input_then_linear():
    """On (with model.bwd > 0): the backward head predicts x_t from
    lrelu(W b_t + b + W' e(y_t) + b'), e(y_t) the backward RNN's input at the step that made
    b_t (lm_lstm_mnist.py: ff_out_lstm_r + ff_out_prev_r, lrelu, ff_out_mus_r), by hand."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(CFG, bwd=0.5, lrelu_bwd_head=True))
    r = model.bwd_readout
    with torch.no_grad():
        r.state.weight.copy_(torch.linspace(-2, 2, 36).reshape(6, 6))
        r.input.weight.copy_(torch.linspace(3, -3, 24).reshape(6, 4))
        batch = _batch()
        terms = model(batch, _noise())
        ey = model.emb(batch.y)
        b = _bwd_states(model, batch, ey)
        feats = _hand_lrelu(b @ r.state.weight.T + r.state.bias
                            + ey.transpose(0, 1) @ r.input.weight.T + r.input.bias)
        logits = (feats @ model.bwd_out.proj.weight.T + model.bwd_out.proj.bias).squeeze(-1).clamp(-8, 8)
        x, mask = batch.x.float().transpose(0, 1), batch.mask.transpose(0, 1)
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    assert (feats == 3.0).any() or (feats == -3.0).any() or (feats < 0).any()
    assert torch.allclose(terms.bwd_nll, (nll * mask).sum(0), atol=1e-5)
    # without a backward head (model.bwd 0) the switch builds nothing
    assert build_model(dataclasses.replace(CFG, lrelu_bwd_head=True)).bwd_readout is None


# ---------------------------------------------------------------- off: today's computation

# Recorded with the code before model.lrelu_emb and model.lrelu_bwd_head existed (c78d955),
# from the fixed seeds below: the parameters (their order fixes what the seed draws) and terms
OLD_KEYS = {
    "zforcing": ["emb.net.weight", "bwd_rnn.weight_ih_l0", "bwd_rnn.weight_hh_l0",
                 "bwd_rnn.bias_ih_l0", "bwd_rnn.bias_hh_l0", "prior.l1.weight", "prior.l1.bias",
                 "prior.l2.weight", "prior.l2.bias", "post.l1.weight", "post.l1.bias",
                 "post.l2.weight", "post.l2.bias", "aux.l1.weight", "aux.l1.bias", "aux.l2.weight",
                 "aux.l2.bias", "z_proj.weight", "z_proj.bias", "w_ih.weight", "w_ih.bias",
                 "w_hh.weight", "out.proj.weight", "out.proj.bias", "bwd_out.proj.weight",
                 "bwd_out.proj.bias"],
    "rnn": ["emb.net.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
            "rnn.bias_hh_l0", "out.proj.weight", "out.proj.bias"]}
OLD_TERMS = {
    "zforcing": {"log_px": [-4.945979118347168, -5.031493663787842],
                 "kl": [2.208019256591797, 2.2591309547424316],
                 "aux": [38.995086669921875, 38.20283126831055],
                 "bwd_nll": [4.7952961921691895, 4.403436183929443]},
    "rnn": {"log_px": [-5.087947368621826, -5.256479740142822]}}


@pytest.mark.parametrize("name", ["zforcing", "rnn"])
def test_switches_off_compute_as_before(name):
    """Off (the default): the plain embedding shared by both paths, the backward head on b_t
    itself, the same parameters in the same order, and the terms recorded before."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(CFG, name=name, bwd=0.5 if name == "zforcing" else 0.0))
    assert type(model.emb) is Embedding and list(model.state_dict()) == OLD_KEYS[name]
    batch = _batch()
    with torch.no_grad():
        terms = model(batch, _noise() if name == "zforcing" else None)
        if name == "zforcing":      # the old path: b_t from the shared table, the head on b_t
            assert model.bwd_readout is None
            assert torch.equal(model.emb.backward_path(batch.y), model.emb(batch.y))
            b = _bwd_states(model, batch, model.emb(batch.y))
            old = -(model.bwd_out.log_prob(b, batch.x.transpose(0, 1)) * batch.mask.T).sum(0)
            assert torch.equal(terms.bwd_nll, old)
    for key, want in OLD_TERMS[name].items():
        assert torch.allclose(getattr(terms, key), torch.tensor(want), rtol=1e-6, atol=0), key


# ---------------------------------------------------------------- params

@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    from pathlib import Path

    import yaml
    from dvc.utils.hydra import compose_and_dump
    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("paper") / "params.yaml"
    compose_and_dump(out, str(root / "conf"), None, "config", str(root), ["profile=paper"])
    return yaml.safe_load(out.read_text())


def _with(params, bench, section, **kw):
    b = params["benchmarks"][bench]
    return {**params, "benchmarks": {**params["benchmarks"],
                                     bench: {**b, section: {**(b.get(section) or {}), **kw}}}}


def test_paper_profile_turns_each_switch_on_for_its_table(paper):
    mnist = {"kind": "binary", "x_dim": 1}
    for row in ("lstm", "zforcing", "zforcing_aux"):
        m = P.model_settings(paper, "mnist", get_row("mnist", row), mnist)
        assert m.lrelu_head and m.lrelu_emb and m.lrelu_bwd_head
        cfg, _ = P.train_settings(paper, "mnist", get_row("mnist", row), 0)
        assert cfg.kl_anneal_all and (cfg.kl_start, cfg.kl_step, cfg.kl_cap) == (0.2, 5e-5, 1.0)
        assert cfg.halve_against == "previous"      # lm_lstm_mnist.py: old_valid_err
    imdb, _ = P.train_settings(paper, "imdb", get_row("imdb", "zforcing_aux"), 0)
    assert imdb.halve_against == "best" and not imdb.kl_anneal_all
    lm = P.model_settings(paper, "imdb", get_row("imdb", "zforcing"), {"kind": "tokens", "x_dim": 9})
    assert not (lm.lrelu_head or lm.lrelu_emb or lm.lrelu_bwd_head)
    speech = P.model_settings(paper, "timit", get_row("timit", "zforcing"), {"kind": "audio", "x_dim": 200})
    assert not (speech.lrelu_head or speech.lrelu_emb or speech.lrelu_bwd_head)


def test_lrelu_head_is_refused_where_no_model_has_it(paper):
    params = _with(paper, "imdb", "model", lrelu_head=True)
    with pytest.raises(P.ParamError, match=r"^benchmarks\.imdb\.model\.lrelu_head: only the Z-Forcing"):
        P.model_settings(params, "imdb", get_row("imdb", "zforcing"), {"kind": "tokens", "x_dim": 9})
    for key in ("lrelu_emb", "lrelu_bwd_head"):
        with pytest.raises(P.ParamError, match=rf"^benchmarks\.imdb\.model\.{key}: only "):
            P.model_settings(_with(paper, "imdb", "model", **{key: True}), "imdb",
                             get_row("imdb", "zforcing"), {"kind": "tokens", "x_dim": 9})
        with pytest.raises(P.ParamError, match=rf"^model\.{key}: expected true or false"):
            P.checked(f"model.{key}", "yes")
    with pytest.raises(P.ParamError, match=r"^benchmarks\.timit\.model\.lrelu_emb: only .*audio"):
        P.model_settings(_with(paper, "timit", "model", lrelu_emb=True), "timit",
                         get_row("timit", "zforcing"), {"kind": "audio", "x_dim": 200})
    # the speech Z-Forcing has a backward head (model.bwd) too: its readout is allowed there
    assert P.model_settings(_with(paper, "timit", "model", lrelu_bwd_head=True), "timit",
                            get_row("timit", "zforcing"), {"kind": "audio", "x_dim": 200}).lrelu_bwd_head
    with pytest.raises(ConfigError, match="lrelu_emb"):
        ModelConfig(data="audio", lrelu_emb=True)
    with pytest.raises(P.ParamError, match="train.halve_against"):
        P.checked("train.halve_against", "worst")
    with pytest.raises(P.ParamError, match="train.kl_anneal_all"):
        P.checked("train.kl_anneal_all", "yes")
    with pytest.raises(ConfigError, match="halve_against"):
        TrainConfig(halve_against="worst")


# ---------------------------------------------------------------- 2: KL annealing on every row

def test_kl_anneal_all_anneals_a_row_without_kla(paper):
    row = get_row("mnist", "zforcing_aux")
    assert not row.kla
    good = torch.tensor(2000.0, dtype=torch.float64)
    cfg, _ = P.train_settings(paper, "mnist", row, 0)
    kl_w, _ = schedule_weights(good, cfg)
    assert not cfg.kl_anneal and kl_w.item() == pytest.approx(0.2 + 5e-5 * 2000)   # 0.3
    assert schedule_weights(torch.tensor(1e6, dtype=torch.float64), cfg)[0].item() == 1.0
    off, _ = P.train_settings(_with(paper, "mnist", "train", kl_anneal_all=False), "mnist", row, 0)
    assert schedule_weights(good, off)[0].item() == 1.0                              # today


# ---------------------------------------------------------------- 3: the halving rule

def _loader(n=8):
    g = torch.Generator().manual_seed(0)
    words = torch.randint(3, 9, (n, 3), generator=g)
    x = torch.cat([torch.ones(n, 1, dtype=torch.long), words[:, :-1]], 1)
    return ArrayLoader(x, words, batch_size=2, shuffle=False)


@pytest.mark.parametrize("against, halved", [("previous", [False, True, False]),
                                             ("best", [False, True, True])])
def test_halving_against_the_best_or_the_previous_bound(monkeypatch, against, halved):
    """Validation bounds -5, -7, -6: the third is better than the previous (-7) but worse
    than the best (-5). Against the previous bound the rate halves once; against the best
    (lm_lstm_imdb.py: best_valid_err < valid_err) it halves at the third too."""
    bounds = iter([-5.0, -7.0, -6.0])

    def fake_evaluate(model, loader, **kw):
        b = next(bounds)
        return {"elbo_per_seq": b, "elbo_per_step": b / 3, "kl_per_seq": 1.0}

    monkeypatch.setattr(T, "evaluate", fake_evaluate)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="zforcing_lm", data="tokens", x_dim=9, rnn_dim=6,
                                    emb_dim=4, mlp_dim=4, z_dim=2))
    cfg = TrainConfig(lr=1e-3, batch_size=2, max_updates=6, eval_every=2, log_every=2,
                      lr_schedule="halve", lr_floor=1e-5, halve_against=against, clip=1e9)
    out = T.train(model, _loader(), cfg, valid_loader=_loader(4))
    valid = [r for r in out["history"] if r["kind"] == "valid"][:3]
    assert [r["lr_halved"] for r in valid] == halved
    assert valid[-1]["lr"] == pytest.approx(1e-3 / 2 ** sum(halved))
    assert out["position"]["best_valid"] == -5.0
