"""Bucketed whole-utterance evaluation: sorting by length changes which sequences share a
batch, never a sequence's bounds (with per-sequence noise), nor the padded-mean quirk's
denominator."""
import numpy as np
import pytest
import torch

from pipeline.bounds import evaluate, iwae_bound
from pipeline.config import ModelConfig
from pipeline.datasets.batches import ArrayLoader, TokenLoader, UtteranceLoader
from pipeline.eval_noise import SequenceNoise
from pipeline.models import build_model

FRAME = 4


def utterances(n=11, batch_size=4, bucket=False, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(3, 16, n) + 1                       # frames per utterance
    offsets = np.concatenate([[0], np.cumsum(frames)])
    data = rng.integers(-3000, 3000, (offsets[-1], FRAME)).astype(np.int16)
    return UtteranceLoader(data, offsets, 10.0, 900.0, batch_size=batch_size, bucket=bucket)


def model(name="zforcing"):
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name, x_dim=FRAME, rnn_dim=16, emb_dim=8, mlp_dim=8,
                                   z_dim=4)).eval()


def per_sequence(m, loader, seed=5):
    """{sequence index: (elbo, log_weight, iwae_7)} with per-sequence noise."""
    out = {}
    with torch.no_grad():
        for i in range(loader.num_batches):
            ids, batch = loader.ids(0, i), loader.batch(0, i)
            noise = SequenceNoise.for_batch(seed, ids, batch)
            terms = m(batch, noise.draw(m, batch))
            iw = iwae_bound(m, batch, 7, chunk=3, noise=noise)
            for row, j in enumerate(ids):
                out[int(j)] = torch.stack([terms.elbo[row], terms.log_weight[row], iw[row]])
    return out


def test_bucketing_sorts_by_length_and_keeps_every_sequence():
    plain, bucketed = utterances(), utterances(bucket=True)
    lengths = plain.lengths()
    order = bucketed.order(0)
    assert list(lengths[order]) == sorted(lengths)
    assert sorted(order) == list(range(len(lengths)))
    assert bucketed.num_batches == plain.num_batches == 3
    # each sequence's rows are the same whichever batch holds it
    for i in range(bucketed.num_batches):
        b = bucketed.batch(0, i)
        for row, j in enumerate(bucketed.ids(0, i)):
            n = int(lengths[j])
            ref = plain._gather(np.array([j]))
            assert torch.equal(b.x[row, :n], ref.x[0]) and torch.equal(b.y[row, :n], ref.y[0])
            assert b.mask[row].sum() == n and b.mask[row, n:].sum() == 0
    padded = lambda ld: sum(ld.batch(0, i).mask.numel() for i in range(ld.num_batches))  # noqa: E731
    assert padded(bucketed) < padded(plain)


def test_bucketed_shuffle_moves_whole_batches():
    loader = utterances(n=13, batch_size=4, bucket=True)
    loader.shuffle, loader.seed = True, 3
    sorted_blocks = {tuple(loader.ids(0, i)) for i in range(4)}
    loader._cached = (None, None)
    a = [tuple(loader.ids(0, i)) for i in range(4)]
    b = [tuple(loader.ids(1, i)) for i in range(4)]
    assert set(a) == set(b) == sorted_blocks  # the same batches in another order
    assert a != b and a == [tuple(loader.ids(0, i)) for i in range(4)]


def test_per_sequence_bounds_do_not_depend_on_bucketing():
    m = model()
    plain, bucketed = per_sequence(m, utterances()), per_sequence(m, utterances(bucket=True))
    assert plain.keys() == bucketed.keys() == set(range(11))
    for j in plain:
        assert torch.allclose(plain[j], bucketed[j], rtol=1e-5, atol=1e-4), (j, plain[j], bucketed[j])
    # and the noise is really per sequence: another seed gives other bounds
    other = per_sequence(m, utterances(), seed=6)
    assert not torch.allclose(plain[0], other[0])


@pytest.mark.parametrize("name", ["zforcing", "srnn", "rnn"])
def test_evaluate_gives_the_same_figures_bucketed(name):
    m = model(name)
    a = evaluate(m, utterances(), iwae_k=6, iwae_chunk=4, seed=2, noise="sequence")
    b = evaluate(m, utterances(bucket=True), iwae_k=6, iwae_chunk=4, seed=2, noise="sequence")
    # the quirk's denominator keeps its meaning: batches x batch size of the official batching
    assert a["sequences"] == b["sequences"] == 11 and a["padded_sequences"] == b["padded_sequences"] == 12
    assert a["steps"] == b["steps"]
    for k in ("elbo_per_seq", "iwae_per_seq", "kl_per_seq", "elbo_per_step"):
        assert b[k] == pytest.approx(a[k], rel=1e-6), k


def test_sequence_noise_makes_iwae_independent_of_chunking():
    m, loader = model(), utterances()
    full = evaluate(m, loader, iwae_k=6, iwae_chunk=6, seed=1, noise="sequence")
    for chunk in (1, 4):
        got = evaluate(m, loader, iwae_k=6, iwae_chunk=chunk, seed=1, noise="sequence")
        assert got["iwae_per_seq"] == pytest.approx(full["iwae_per_seq"], rel=1e-6)
    # the single-sample figures are those of draw 0, the IWAE's first sample, whatever K
    for k in (0, 2):
        got = evaluate(m, loader, iwae_k=k, iwae_chunk=4, seed=1, noise="sequence")
        for key in ("elbo_per_seq", "kl_per_seq", "aux_per_seq"):
            assert got[key] == pytest.approx(full[key], rel=1e-6), (k, key)
    assert full["iwae_per_seq"] > full["elbo_per_seq"]
    # batch noise (the default) depends on the chunking: the same figure, other draws
    a = evaluate(m, loader, iwae_k=6, iwae_chunk=6, seed=1)["iwae_per_seq"]
    assert evaluate(m, loader, iwae_k=6, iwae_chunk=1, seed=1)["iwae_per_seq"] != a


def test_token_loader_buckets_and_equal_length_loaders_refuse():
    lengths = np.array([3, 7, 2, 7, 5], dtype=np.int32)
    tokens = np.zeros((5, 9), dtype=np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n + 1] = np.arange(1, n + 2)
    loader = TokenLoader(tokens, lengths, batch_size=2, shuffle=False, bucket=True)
    # shortest first, ties in index order; the short last batch holds the longest
    assert [list(loader.ids(0, i)) for i in range(3)] == [[2, 0], [4, 1], [3]]
    assert loader.batch(0, 1).mask.shape == (2, 7)
    same = ArrayLoader(torch.zeros(4, 3, 2), torch.zeros(4, 3, 2))
    same.bucket = True
    with pytest.raises(ValueError, match="nothing to bucket"):
        same.order(0)
    with pytest.raises(ValueError, match="noise must be"):
        evaluate(model(), utterances(), noise="global")
