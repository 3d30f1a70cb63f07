"""benchmarks/authors_zforcing.py (the authors' model.py and train_timit.py update, ported)
computes our Z-Forcing's function, and benchmarks/authors_speed.py runs.

With our weights copied into the port (same flags), the per-sequence NLL, KL, aux cost,
backward-head NLL and log p(z), log q(z) agree to 1e-6 in float64 on one batch with the
same noise, and so do the gradients of the training loss. Where the two differ on
purpose, the data and flags here make them coincide:
- every frame is scored (full masks): the authors' backward LSTM runs over the whole padded
  batch reversed, so with padding their b_t of a shorter sequence has read the padding
  first (our model reverses each sequence within its length);
- their LSTM cell has two bias vectors (bias_ih, bias_hh) where ours has one: the copy puts
  ours in bias_ih and zeros in bias_hh, so the function is the same, but both vectors
  take an Adam step, so the next update differs;
- with z_force their aux net still reads [0 * h_{t-1}; z_t] (its h columns get a zero
  gradient); ours reads z_t alone: the copy fills their h columns with noise to show they
  do not matter.
"""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from authors_zforcing import AuthorsStep, AuthorsZForcing  # noqa: E402

from pipeline.config import ModelConfig  # noqa: E402
from pipeline.datasets.batches import Batch  # noqa: E402
from pipeline.models import build_model  # noqa: E402

R, E, M, Z, B, T = 16, 8, 6, 4, 3, 5


def pair(**flags):
    torch.manual_seed(0)
    cfg = ModelConfig(x_dim=200, rnn_dim=R, emb_dim=E, mlp_dim=M, z_dim=Z, **flags)
    ours = build_model(cfg).double()
    port = AuthorsZForcing(200, E, R, Z, M, 400, cond_ln=cfg.cond_ln, z_force=cfg.z_force,
                           use_l2=cfg.use_l2).double()
    port.load_state_dict(port_weights(ours, port, cfg))
    return ours, port


def port_weights(ours, port, cfg) -> dict:
    """Our parameters under the port's names (model.py's layout)."""
    o = dict(ours.named_parameters())
    w = {k: v.detach().clone() for k, v in port.state_dict().items()}
    w["emb_mod.0.weight"], w["emb_mod.0.bias"] = o["emb.net.weight"], o["emb.net.bias"]
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        w[f"bwd_mod.{name}"] = o[f"bwd_rnn.{name}"]
    for theirs, mine in (("pri_mod", "prior"), ("inf_mod", "post"), ("aux_mod", "aux")):
        w[f"{theirs}.0.bias"] = o[f"{mine}.l1.bias"]
        w[f"{theirs}.2.weight"], w[f"{theirs}.2.bias"] = o[f"{mine}.l2.weight"], o[f"{mine}.l2.bias"]
        w[f"{theirs}.0.weight"] = o[f"{mine}.l1.weight"]
    if cfg.z_force:  # their aux net reads [0 * h; z]: the h columns are noise, the z ones ours
        w["aux_mod.0.weight"] = torch.cat([torch.randn_like(o["aux.l1.weight"].new_empty(M, R)),
                                           o["aux.l1.weight"]], 1)
    w["fwd_mod.weight_hh"] = o["w_hh.weight"].t()
    w["fwd_out_mod.weight"], w["fwd_out_mod.bias"] = o["out.proj.weight"], o["out.proj.bias"]
    if cfg.bwd > 0:
        w["bwd_out_mod.weight"], w["bwd_out_mod.bias"] = o["bwd_out.proj.weight"], o["bwd_out.proj.bias"]
    if cfg.cond_ln:
        w["fwd_mod.weight_ih"] = o["w_ih.weight"].t()
        w["fwd_mod.ln_ih.gain"], w["fwd_mod.ln_ih.bias"] = o["ln_in.gain"][None], o["ln_in.bias"][None]
        for i in (0, 2):
            w[f"gen_mod.{i}.weight"], w[f"gen_mod.{i}.bias"] = o[f"z_ln.{i}.weight"], o[f"z_ln.{i}.bias"]
    else:  # their LSTM input is [gen_mod(z); emb(x)], ours [emb(x); z_proj(z)]
        w_ih = o["w_ih.weight"]
        w["fwd_mod.weight_ih"] = torch.cat([w_ih[:, E:], w_ih[:, :E]], 1).t()
        w["fwd_mod.bias_ih"], w["fwd_mod.bias_hh"] = o["w_ih.bias"], torch.zeros_like(o["w_ih.bias"])
        w["gen_mod.weight"], w["gen_mod.bias"] = o["z_proj.weight"], o["z_proj.bias"]
    return {k: v.detach().clone().contiguous() for k, v in w.items()}


def data():
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randn(B, T, 200, generator=g, dtype=torch.float64) for _ in range(2))
    return Batch(x, y, torch.ones(B, T, dtype=torch.float64)), torch.randn(B, T, Z, generator=g,
                                                                          dtype=torch.float64)


def port_terms(port, batch, noise):
    tm = lambda a: a.transpose(0, 1)  # noqa: E731
    return port(tm(batch.x), tm(batch.y), tm(batch.mask), port.init_hidden(B), eps=tm(noise),
                return_stats=True)


@pytest.mark.parametrize("flags", [dict(), dict(z_force=False, bwd=0.5),
                                   dict(cond_ln=True, use_l2=True)],
                         ids=["default", "no_z_force_bwd", "cond_ln_l2"])
def test_the_port_computes_our_terms_and_gradients(flags):
    ours, port = pair(**flags)
    batch, noise = data()
    terms = ours(batch, noise)
    fwd, bwd, aux, kl, log_pz, log_qz = port_terms(port, batch, noise)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # noqa: E731
    close(fwd, -terms.log_px), close(kl, terms.kl), close(aux, terms.aux)
    close(log_pz, terms.log_pz), close(log_qz, terms.log_qz)
    if ours.cfg.bwd > 0:
        close(bwd, terms.bwd_nll)
    assert terms.kl.min() > 0 and terms.aux.abs().min() > 0  # the terms are not trivially 0
    # the same training loss, the same gradients (moved to the port's layout)
    weigh = lambda f, b, a, k: (f + 0.5 * b + 0.01 * a + 0.3 * k).mean()  # noqa: E731
    weigh(-terms.log_px, terms.bwd_nll, terms.aux, terms.kl).backward()
    weigh(fwd, bwd if ours.cfg.bwd > 0 else 0 * bwd, aux, kl).backward()
    for p in ours.parameters():
        p.data = p.grad
    want = port_weights(ours, port, ours.cfg)
    for name, p in port.named_parameters():
        if name in ("fwd_mod.bias_hh", "fwd_mod.ln_hh.gain", "fwd_mod.ln_hh.bias") or (
                name == "aux_mod.0.weight" and ours.cfg.z_force):
            continue  # no counterpart in ours (see the module docstring)
        if name.startswith("bwd_out_mod") and ours.cfg.bwd == 0:
            continue
        close(p.grad, want[name])


def test_the_backward_rnn_reads_padding_in_the_port_only():
    ours, port = pair()
    batch, noise = data()
    batch.mask[0, 3:] = 0
    terms = ours(batch, noise)
    kl = port_terms(port, batch, noise)[3]
    torch.testing.assert_close(kl[1:], terms.kl[1:], rtol=0, atol=1e-6)
    assert not torch.allclose(kl[0], terms.kl[0])


def test_one_authors_update_trains():
    torch.manual_seed(0)
    model = AuthorsZForcing(200, E, R, Z, M, 400, cond_ln=True, z_force=True)
    step = AuthorsStep(model, bwd=1.0, aux_sta=0.01, aux_end=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(T, B, 200), torch.randn(T, B, 200)
    loss = step(x, y, torch.ones(T, B))
    assert math.isfinite(loss)
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert sum(changed) >= len(changed) - 2  # all but ln_hh's unused gain and bias
    assert step.kld_weight == pytest.approx(0.2 + 5e-5)


def test_authors_speed_runs_one_tiny_update():
    out = subprocess.run([sys.executable, "benchmarks/authors_speed.py", "--config", "tiny",
                          "--rounds", "1", "--updates", "1", "--warmup", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json
    rec = json.loads(out.stdout.splitlines()[-1])
    assert rec["config"] == "tiny" and rec["mode"] == "fast" and rec["threads"] == 1
    assert set(rec["ms_per_update"]) == {"ours", "authors"} and rec["authors_over_ours"] > 0
