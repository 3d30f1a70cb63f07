"""The IWAE fold: a model that takes k samples of each sequence in one pass (sharing its
data-only work) returns the terms of the batch repeated k times, so the bound is today's."""
import math

import pytest
import torch

from pipeline.bounds import iwae_bound, repeat_batch
from pipeline.config import ModelConfig
from pipeline.datasets.batches import Batch
from pipeline.models import build_model

AUDIO = [dict(name="zforcing"), dict(name="zforcing", z_force=False, bwd=0.5),
         dict(name="zforcing", cond_ln=True), dict(name="vrnn_gauss"), dict(name="vrnn_i_gauss"),
         dict(name="srnn")]
TOKENS = [dict(name="zforcing_lm", data="tokens", output="categorical", bwd=0.5)]
B, T, K, DIM, VOCAB = 3, 7, 5, 4, 11


def make(opts):
    torch.manual_seed(0)
    x_dim = VOCAB if opts.get("data") == "tokens" else DIM
    cfg = ModelConfig(x_dim=x_dim, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4, **opts)
    return build_model(cfg).double().eval()


def batch(tokens: bool) -> Batch:
    g = torch.Generator().manual_seed(1)
    if tokens:
        x = torch.randint(0, VOCAB, (B, T), generator=g)
        y = torch.randint(0, VOCAB, (B, T), generator=g)
    else:
        x = torch.randn(B, T, DIM, generator=g, dtype=torch.float64)
        y = torch.randn(B, T, DIM, generator=g, dtype=torch.float64)
    lengths = torch.tensor([T, 4, 2])                 # padding: the fold must keep it out
    mask = (torch.arange(T) < lengths[:, None]).double()
    return Batch(x, y, mask)


@pytest.mark.parametrize("opts", AUDIO + TOKENS, ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_folded_samples_equal_the_repeated_batch(opts):
    model = make(opts)
    assert model.folds_samples
    b = batch(opts.get("data") == "tokens")
    eps = torch.randn(K * B, T, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        folded = model(b, eps).as_dict()
        repeated = model(repeat_batch(b, K), eps).as_dict()
    for name, want in repeated.items():
        assert folded[name].shape == want.shape, name
        torch.testing.assert_close(folded[name], want, rtol=0, atol=1e-6, msg=name)
    # and the samples differ: a fold that ignored the noise would pass the check above too
    assert folded["log_qz"].view(K, B).std(0).min() > 1e-3


@pytest.mark.parametrize("opts", AUDIO[:1] + AUDIO[3:] + TOKENS, ids=lambda o: o["name"])
def test_iwae_bound_equals_the_bound_of_the_repeated_batch(opts):
    model = make(opts)
    b = batch(opts.get("data") == "tokens")
    with torch.no_grad():
        got = iwae_bound(model, b, K, chunk=2, generator=torch.Generator().manual_seed(3))
        # today's computation, written out: every chunk the repeated batch, same noise stream
        g, weights = torch.Generator().manual_seed(3), []
        for c in (2, 2, 1):
            rep = repeat_batch(b, c)
            eps = torch.randn(model.noise_shape(rep), generator=g, dtype=torch.float32)
            weights.append(model(rep, eps.double()).log_weight.view(c, B))
        want = torch.logsumexp(torch.cat(weights), 0) - math.log(K)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_noise_rows_must_be_a_multiple_of_the_batch():
    model = make(AUDIO[0])
    with pytest.raises(ValueError, match="noise of 7 rows for a batch of 3"):
        model(batch(False), torch.zeros(7, T, 4, dtype=torch.float64))
