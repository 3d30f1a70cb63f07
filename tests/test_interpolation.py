"""The IMDB latent interpolation (pipeline/models/interpolate.py, the evaluate stage's
text.json, the IMDB page) and the paper's Table 3 rows in paper_numbers.yaml. A tiny
untrained zforcing_lm (rnn_dim 8, vocabulary 20) built as tests/test_model_lm.py does."""
import json
import os
from html import escape as html_escape

import numpy as np
import pytest
import torch

from pipeline.models import interpolate as I
from pipeline.config import ModelConfig
from pipeline.datasets.batches import Batch
from pipeline.datasets.text import BOS_ID, EOS_ID
from pipeline.models import build_model
from pipeline.models.lm_probe import perturb
from pipeline.report import pages, tables

V = 20


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(name="zforcing_lm", data="tokens", x_dim=V, rnn_dim=8,
                                   emb_dim=8, mlp_dim=8, z_dim=4))


def _sentence(words):
    """One sentence as a batch: x = [<S>, w..], y = [w.., </S>]."""
    row = torch.tensor([[BOS_ID, *words, EOS_ID]])
    return Batch(row[:, :-1], row[:, 1:], torch.ones(1, len(words) + 1))


A, B = _sentence([5, 9, 7, 11, 4]), _sentence([13, 6, 8])


def test_alphas_follow_the_number_of_points_and_end_exactly_at_0_and_1():
    for n in (2, 3, 11):
        a = I.alphas(n)
        assert len(a) == n and a[0] == 0.0 and a[-1] == 1.0
        assert all(x < y for x, y in zip(a, a[1:]))
    for bad in (0, 1, 2.0):
        with pytest.raises(ValueError):
            I.alphas(bad)


@pytest.mark.parametrize("points", [2, 5, 11])
def test_the_number_of_decoded_points_follows_its_parameter(points):
    res = I.interpolate(_model(), A, B, points, generator=torch.Generator().manual_seed(0))
    assert len(res["alpha"]) == len(res["greedy"]) == len(res["sample"]) == points


def test_first_and_last_points_are_the_reconstructions_at_the_posterior_means():
    model = _model()
    res = I.interpolate(model, A, B, 5, generator=torch.Generator().manual_seed(0))
    steps = max(A.mask.shape[1], B.mask.shape[1])
    # the page's latent perturbation at 0 sd decodes the same posterior means greedily
    for one, got in ((A, res["greedy"][0]), (B, res["greedy"][-1])):
        want = perturb(model, one, 0, 0.0, greedy=True, max_len=steps)[0].tolist()
        assert got == [t for t in want if t != 0]
        # and decoding the posterior means computed here, directly, gives it too
        with torch.no_grad():
            zero = one.mask.new_zeros(model.noise_shape(one))
            mu = model.posterior_path(one, zero)[2][:, 0]          # mu_q itself
        assert I.decode_mix(model, mu, mu, 0.5, steps) == got
        # the latents of an end are the posterior means themselves, bit for bit
        used, n = [], one.mask.shape[1]
        other = I.posterior_means(model, B if one is A else A)[:, 0]
        ends = (mu, other) if one is A else (other, mu)
        assert I.decode_mix(model, *ends, 0.0 if one is A else 1.0, steps, latents=used) == got
        assert torch.equal(torch.cat(used[:n]), mu)
    # the two ends see different latents: swapping the sentences swaps the ends
    rev = I.interpolate(model, B, A, 5, generator=torch.Generator().manual_seed(0))
    assert rev["greedy"][0] == res["greedy"][-1] and rev["greedy"][-1] == res["greedy"][0]


def test_mixing_really_uses_both_sentences():
    model = _model()
    za = I.posterior_means(model, A)[:, 0]
    zb = I.posterior_means(model, B)[:, 0]
    # a latent path far from the posterior means changes the decoding (the latents matter)
    far = [I.decode_mix(model, za, 50 * zb + 20, a, 6) for a in (0.0, 0.5, 1.0)]
    assert far[0] == I.decode_mix(model, za, zb, 0.0, 6)
    assert far[0] != far[2]


def test_deterministic_for_a_seed_and_the_seed_matters():
    model = _model()
    run = lambda s: I.interpolate(model, A, B, 7, generator=torch.Generator().manual_seed(s))  # noqa: E731
    assert run(3) == run(3)
    samples = {json.dumps(run(s)["sample"]) for s in range(4)}
    assert len(samples) > 1                       # the drawn tokens come from the generator
    assert len({json.dumps(run(s)["greedy"]) for s in range(4)}) == 1   # greedy: none drawn
    assert I.choose_pair(50, 7) == I.choose_pair(50, 7)
    pairs = {I.choose_pair(50, s) for s in range(6)}
    assert len(pairs) > 1 and all(i != j and 0 <= i < 50 and 0 <= j < 50 for i, j in pairs)
    with pytest.raises(ValueError):
        I.choose_pair(1, 0)
    with pytest.raises(ValueError):
        I.interpolate(model, Batch(torch.cat([A.x] * 2), torch.cat([A.y] * 2),
                                   torch.cat([A.mask] * 2)), B, 3)


def _prepared(root, sentences):
    """A prepared token dataset with only a test split (the prepare stage's layout)."""
    os.makedirs(root, exist_ok=True)
    T = max(map(len, sentences)) + 1
    rows = np.zeros((len(sentences), T + 1), np.int64)
    for i, s in enumerate(sentences):
        rows[i, :len(s) + 2] = [BOS_ID, *s, EOS_ID]
    np.save(os.path.join(root, "test.npy"), rows)
    np.save(os.path.join(root, "test_len.npy"), np.array([len(s) + 1 for s in sentences]))
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump({"kind": "tokens", "splits": {"test": {"layout": "tokens", "file": "test.npy",
                                                         "lengths": "test_len.npy"}}}, f)
    itos = ["<pad>", "<S>", "</S>", "<unk>"] + [f"w{i}" for i in range(4, V)]
    with open(os.path.join(root, "vocab.json"), "w") as f:
        json.dump(itos, f)
    return itos


def test_the_evaluate_stage_writes_it_deterministically(tmp_path):
    from stages.evaluate import _interpolation
    from stages.params import EvalOptions
    sents = [[5, 9, 7], [13, 6, 8, 10], [4, 4, 12, 19, 5], [17, 16]]
    itos = _prepared(str(tmp_path), sents)
    model, opts = _model(), EvalOptions(interp_points=4, seed=2)
    out = _interpolation(model, str(tmp_path), opts, itos)
    assert out == _interpolation(model, str(tmp_path), opts, itos)
    i, j = out["test_index"]
    assert (i, j) == I.choose_pair(len(sents), 2)
    assert out["sentences"] == [" ".join(f"w{w}" for w in sents[k]) for k in (i, j)]
    assert [p["alpha"] for p in out["points"]] == I.alphas(4)
    first = perturb(model, _sentence(sents[i]), 0, 0.0, greedy=True,
                    max_len=max(len(sents[i]), len(sents[j])) + 1)[0].tolist()
    words = [itos[t] for t in first if t not in (0, EOS_ID)]
    assert out["points"][0]["greedy"] == " ".join(words[:len(words)])
    assert _interpolation(model, str(tmp_path), EvalOptions(interp_points=3, seed=2),
                          itos)["points"][-1]["alpha"] == 1.0
    _prepared(str(tmp_path / "one"), sents[:1])
    assert _interpolation(model, str(tmp_path / "one"), opts, itos) is None


def test_interp_points_is_validated():
    from stages import params as P
    rule = P.RULES["eval.interp_points"]
    assert rule.test(0) and rule.test(2) and rule.test(11) and not rule.test(1)
    assert P.EvalOptions().interp_points == 11


TEXT = {"samples": ["a b"], "interpolation": {
    "test_index": [7, 3], "sentences": ["the film was fine", "i hated <it>"],
    "points": [{"alpha": 0.0, "greedy": "the film was good", "sample": "the film"},
               {"alpha": 0.5, "greedy": "the film i hated", "sample": "film hated"},
               {"alpha": 1.0, "greedy": "i hated it", "sample": "i hated"}]}}


def _cell(root, row, text):
    d = os.path.join(root, "eval", "imdb", row, "s0")
    os.makedirs(d)
    info = {"bench": "imdb", "row": row, "seed": 0, "paper_name": row, "exact": False,
            "bound_kind": "iwae", "iwae_k": 5, "params": 100, "test_quirk": None,
            "data": {"comparable": False, "title_note": "a stand-in"}}
    for name, obj in (("metrics.json", {"bound": -40.0, "kl": 1.0, "ppl": 60.0, "ppl_elbo": 61.0,
                                         "kl_per_word": 0.1, "active_units": 1}),
                      ("info.json", info), ("text.json", text)):
        with open(os.path.join(d, name), "w") as f:
            json.dump(obj, f)


def test_the_imdb_page_shows_the_interpolation_and_the_papers_beta_rows(tmp_path):
    _cell(str(tmp_path), "zforcing_aux", TEXT)
    _cell(str(tmp_path), "zforcing", {"samples": ["a b"]})
    page = pages.Bench("imdb", str(tmp_path / "eval"), str(tmp_path / "models"), str(tmp_path),
                       {"dpi": 40, "audio_examples": 0, "audio_seconds": 1.0}, "test", [0], ["zforcing", "zforcing_aux"])
    html = page.examples()
    assert "Latent interpolation (zforcing_aux, seed 0)" in html
    assert "test sentence 7, “the film was fine”" in html and "i hated &lt;it&gt;" in html
    order = [html.index(s) for s in ("the film was good", "the film i hated", "i hated it")]
    assert order == sorted(order)
    assert html.count("Latent interpolation (") == 1          # zforcing wrote none
    table = page.table()
    assert "The paper's rows, one per β" in table
    for p in tables.spec(tables.load_paper(), "imdb")["published_only"]:
        assert html_escape(p["name"]) in table
    assert "not known" in table


def test_the_papers_imdb_beta_rows_load_with_sources():
    rows = tables.spec(tables.load_paper(), "imdb")["published_only"]
    betas = [p for p in rows if "beta" in p]
    assert len(betas) >= 3 and any(p["beta"] == 0 for p in betas)
    for p in betas:
        assert p["source"] and "Table 3" in p["source"] and p["kind"] == "<="
        for key in ("value", "kl", "ppl_elbo"):   # a number, or null with a note saying so
            assert p[key] is None or isinstance(p[key], (int, float)), (p["name"], key)
        if any(p[k] is None for k in ("value", "kl", "ppl_elbo")):
            assert "not known" in p["note"], p["name"]
        assert p["confidence"] is None or p["confidence"] in tables.load_paper()["confidence"]
    assert pages.paper_rows_html(tables.spec(tables.load_paper(), "timit")) == ""
