"""The training loop: the per-update loss of docs/model.md, schedules, clipping, skipped updates,
device-side logging, validation with the learning-rate recipe, and exact resume.

Per update:  loss = mean_b[ -log p(y|...) + bwd*NLL_bwd + aux_w*AUX + kl_w*KL ]
  kl_w  = min(kl_cap, kl_start + kl_step * good_updates) with kl_anneal (or kl_anneal_all), else 1
  aux_w = aux_weight * min(1, good_updates / aux_anneal_updates)   (constant if 0;
          aux_anneal_epochs > 0 counts that many epochs of the loader instead)
  bwd   = model.bwd, plus aux_w when model.bwd_in_aux (the authors' IMDB cost)
An update whose loss or gradient norm is not finite (or whose batch-mean KL reaches
kl_skip) is skipped on the device: fused Adam receives a found-inf flag, as mixed-precision
grad scalers do, so parameters, optimiser moments and step count stay put, and the
good-update counter that drives the schedules does not advance. Loss terms are summed
into device tensors and read every `log_every` updates: the step itself never waits for
the host and never branches on a tensor value. At those reads a run that skipped more than
cfg.max_skip_fraction of its updates stops with NonFiniteTraining.

Resume is exact: everything an update does (log, validation, epoch end, and on the last
update the final log and validation) happens before its checkpoint, which is the last
thing written for that update, and the final checkpoint says the run is done. A process
killed anywhere replays from the last complete update to the same history and weights.
A checkpoint carries a fingerprint of the settings and the model, and one from another
run is refused with CheckpointMismatch instead of being continued.

Data-parallel (ddp: a pipeline.distributed.DataParallel, one process per rank under
torchrun): each rank trains on its shard of every global batch and the update equals the
single-process update of that batch; rank 0 alone writes checkpoints (see distributed.py).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint
from .bounds import draw_noise, evaluate
from .compile import training_forward
from .config import TrainConfig
from .distributed import DataParallel, DistributedError, rank_seed
from .errors import UserError

# order of the device-side accumulator vector
ACC = ("loss", "log_px", "kl", "aux", "bwd_nll", "steps", "sequences", "grad_norm", "updates")
# the skip fraction is judged from this many attempted updates on (or at the end of a
# shorter run): over a handful of updates one bad batch would be a large fraction
MIN_SKIP_CHECK = 20


class NonFiniteTraining(UserError):
    """Most updates were skipped: the loss or gradient is not finite on most batches."""


@dataclass
class Position:
    """Where the run is: enough to resume at exactly the next batch."""
    epoch: int = 0
    index: int = 0            # next batch within the epoch
    updates: int = 0          # attempted updates so far (good + skipped)
    lr: float = 0.0
    prev_valid: float | None = None
    best_valid: float | None = None
    history: list = field(default_factory=list)
    done: bool = False        # the final log and validation are in history


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    # fused Adam honours `found_inf`, which is how non-finite updates are skipped on device
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2),
                            eps=cfg.adam_eps, weight_decay=cfg.weight_decay, fused=True)


def aux_ramp_updates(cfg: TrainConfig, batches_per_epoch: int | None = None) -> int:
    """Updates over which the aux weight grows from 0: aux_anneal_epochs epochs of this
    loader when set (train_blizzard.py anneals over two epochs), else aux_anneal_updates."""
    if cfg.aux_anneal_epochs and batches_per_epoch:
        return max(1, round(cfg.aux_anneal_epochs * batches_per_epoch))
    return cfg.aux_anneal_updates


def schedule_weights(good: torch.Tensor, cfg: TrainConfig, aux_updates: int | None = None):
    """(kl_weight, aux_weight) as device tensors, from the good-update counter.
    aux_updates: the aux ramp's length (aux_ramp_updates); None = cfg.aux_anneal_updates."""
    anneal = cfg.kl_anneal or cfg.kl_anneal_all   # a "+ kla" row, or every row (train.kl_anneal_all)
    kl_w = (torch.clamp(cfg.kl_start + cfg.kl_step * good, max=cfg.kl_cap) if anneal
            else torch.ones_like(good))
    ramp = cfg.aux_anneal_updates if aux_updates is None else aux_updates
    if ramp:
        aux_w = cfg.aux_weight * torch.clamp(good / ramp, max=1.0)
    else:
        aux_w = torch.full_like(good, cfg.aux_weight)
    return kl_w, aux_w


class Stepper:
    """One optimisation step, all on the device. Holds the counters the schedules read."""

    def __init__(self, model, opt, cfg: TrainConfig, device, ddp: DataParallel | None = None,
                 aux_updates: int | None = None):
        self.model, self.opt, self.cfg, self.ddp = model, opt, cfg, ddp
        self.aux_updates = aux_updates
        self.params = [p for p in model.parameters() if p.requires_grad]
        mcfg = getattr(model, "cfg", None)
        self.bwd = float(getattr(mcfg, "bwd", 0.0))
        # model.bwd_in_aux: the backward head's NLL also weighs the aux weight (lm_lstm_imdb.py)
        self.bwd_in_aux = bool(getattr(mcfg, "bwd_in_aux", False))
        # the model, or its compiled / autocast forward (train.compile, train.precision)
        self.forward = training_forward(model, cfg.compile, cfg.precision, device)
        z = lambda: torch.zeros((), device=device, dtype=torch.float64)  # noqa: E731
        self.good, self.skipped = z(), z()
        self.acc = torch.zeros(len(ACC), device=device, dtype=torch.float64)
        self.found_inf = torch.zeros((), device=device)
        opt.found_inf = self.found_inf
        opt.grad_scale = None

    def __call__(self, batch, noise):
        cfg = self.cfg
        kl_w, aux_w = schedule_weights(self.good, cfg, self.aux_updates)
        terms = self.forward(batch, noise)
        bwd_w = self.bwd + aux_w.float() if self.bwd_in_aux else self.bwd
        per_seq = (-terms.log_px + bwd_w * terms.bwd_nll
                   + aux_w.float() * terms.aux + kl_w.float() * terms.kl)
        loss = per_seq.mean()
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        verdict = [loss.detach(), terms.kl.detach().mean()]  # what decides a skip
        if self.ddp is not None:  # the global batch's gradient, loss and KL: one all-reduce
            verdict = self.ddp.average_grads(self.params, *verdict)
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.clip)
        bad = ~torch.isfinite(verdict[0]) | ~torch.isfinite(gnorm)
        if cfg.kl_skip:
            bad = bad | (verdict[1] >= cfg.kl_skip)
        self.found_inf.copy_(bad)
        self.opt.step()
        ok = ~bad
        self.good += ok
        self.skipped += bad
        vec = torch.stack([loss.detach(), terms.log_px.detach().sum(), terms.kl.detach().sum(),
                           terms.aux.detach().sum(), terms.bwd_nll.detach().sum(),
                           terms.steps.sum(), torch.tensor(float(batch.size), device=loss.device),
                           gnorm.detach(), torch.ones((), device=loss.device)]).double()
        self.acc += torch.where(ok, vec, torch.zeros_like(vec))
        return kl_w, aux_w

    def state(self) -> dict:
        return {"good": self.good, "skipped": self.skipped, "acc": self.acc}

    def load_state(self, s: dict):
        self.good.copy_(s["good"]), self.skipped.copy_(s["skipped"]), self.acc.copy_(s["acc"])

    def read_and_reset(self, kl_w, aux_w) -> dict:
        """One host read of the accumulators: means per good update since the last read.
        Data-parallel: summed over ranks first (loss and grad_norm then count once per rank,
        as does `updates`, so their means are the global ones)."""
        if self.ddp is not None:
            self.ddp.sum_(self.acc)
        a = dict(zip(ACC, self.acc.tolist()))
        self.acc.zero_()
        n = max(a["updates"], 1.0)
        return {"loss": a["loss"] / n,
                "nll_per_step": -a["log_px"] / max(a["steps"], 1.0),
                "log_px_per_seq": a["log_px"] / max(a["sequences"], 1.0),
                "kl_per_seq": a["kl"] / max(a["sequences"], 1.0),
                "aux_per_seq": a["aux"] / max(a["sequences"], 1.0),
                "bwd_nll_per_seq": a["bwd_nll"] / max(a["sequences"], 1.0),
                "elbo_per_seq": (a["log_px"] - a["kl"]) / max(a["sequences"], 1.0),
                "grad_norm": a["grad_norm"] / n,
                "kl_weight": float(kl_w), "aux_weight": float(aux_w),
                "good_updates": int(self.good), "skipped_updates": int(self.skipped),
                "frames": a["steps"]}


def selection_bound(res: dict, cfg: TrainConfig) -> float:
    """The validation figure (nats per sequence, higher is better) that halves the rate and
    picks the best weights: the IWAE bound when train.valid_iwae_k > 0 (lm_lstm_imdb.py
    selects on the validation IWAE), else the single-sample ELBO. An exact model's IWAE
    is its likelihood."""
    if cfg.valid_iwae_k:
        return res.get("iwae_per_seq", res["elbo_per_seq"])
    return res["elbo_per_seq"]


def check_skips(skipped: int, attempted: int, cfg: TrainConfig, final: bool = False) -> None:
    """Raise NonFiniteTraining when too large a fraction of the updates was skipped."""
    if not (attempted >= MIN_SKIP_CHECK or final) or skipped <= cfg.max_skip_fraction * attempted:
        return
    cause = "the loss or gradient was not finite"
    if cfg.kl_skip:
        cause += f" or the batch KL reached train.kl_skip={cfg.kl_skip:g}"
    raise NonFiniteTraining(
        f"{skipped} of {attempted} updates were skipped because {cause} (more than "
        f"train.max_skip_fraction={cfg.max_skip_fraction:g}): the training data likely holds "
        f"NaN/inf values, or train.lr={cfg.lr:g} is too high")


def _rng_state(gen: torch.Generator, device, ddp: DataParallel | None = None) -> dict:
    s = {"torch": torch.get_rng_state(), "noise": gen.get_state()}
    if torch.device(device).type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    if ddp is not None:  # the torch RNGs (dropout) differ per rank; the noise generator does not
        s["ranks"] = {k: ddp.gather_bytes(s[k]) for k in ("torch", "cuda") if k in s}
    return s


def _set_rng_state(s: dict, gen: torch.Generator, device, rank: int = 0):
    # generator states are CPU byte tensors, whatever map_location moved them to
    own = {k: v[rank] for k, v in s.get("ranks", {}).items()}
    torch.set_rng_state(own.get("torch", s["torch"]).cpu())
    gen.set_state(s["noise"].cpu())
    if "cuda" in s:
        torch.cuda.set_rng_state(own.get("cuda", s["cuda"]).cpu(), device)


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _resume(path: Path, fingerprint: dict, model, opt, step: Stepper, gen, device, rank: int = 0):
    """Load the checkpoint at `path` into model, optimiser, counters and RNGs after checking
    it belongs to this run. Returns (Position, best state or None)."""
    ck = checkpoint.load(path, map_location=device)
    if not isinstance(ck, dict):
        raise checkpoint.BadCheckpoint(f"{path} is not a training checkpoint; delete it to start over")
    checkpoint.check_fingerprint(ck.get("fingerprint"), fingerprint, path)
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optim"])
        step.load_state(ck["counters"])
        if rank:  # rank 0's checkpoint holds the accumulators summed over all ranks
            step.acc.zero_()
        _set_rng_state(ck["rng"], gen, device, rank)
        pos = Position(**ck["position"])
        best = _cpu_copy(ck["best_model"]) if ck["best_model"] is not None else None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise checkpoint.BadCheckpoint(f"{path} is an incomplete or altered training checkpoint "
                                       f"({type(err).__name__}); delete it to start over") from err
    opt.found_inf, opt.grad_scale = step.found_inf, None
    return pos, best


def _agree_on_resume(ddp: DataParallel, exists: bool, path) -> None:
    """Every rank must resume from the same file, or none: rank 0 alone writes it."""
    seen = ddp.gather_flags(exists)
    if any(seen) and not all(seen):
        raise DistributedError(f"{path} is visible to ranks {[r for r, s in enumerate(seen) if s]} "
                               f"only: put the checkpoint folder (--ckpt-root) on a filesystem "
                               f"every node shares")


def train(model, loader, cfg: TrainConfig, *, valid_loader=None, device="cpu",
          ckpt_path: str | Path | None = None, on_log: Callable[[dict], None] | None = None,
          on_eval: Callable[[dict], None] | None = None, eval_kwargs: dict | None = None,
          ddp: DataParallel | None = None) -> dict:
    """Train `model` on `loader` (an object with num_batches and batch(epoch, index)).

    Resumes from `ckpt_path` when it exists (CheckpointMismatch if another run wrote it,
    BadCheckpoint if it is unreadable) and saves there every cfg.ckpt_every updates and at
    the end; a finished checkpoint returns its result without training.
    Returns {"history", "best_state", "last_state", "position", "skipped"}.
    With `ddp`, `loader` is the global-batch loader (a pipeline.datasets loader) and every
    rank calls train() alike; callbacks are best passed on rank 0 only.
    """
    if loader.num_batches <= 0:
        raise ValueError("the training loader has no batches")
    rank = ddp.rank if ddp is not None else 0
    if ddp is not None:
        loader = ddp.shard(loader)  # this rank's rows of every global batch
    model.to(device)
    model.train()
    torch.manual_seed(rank_seed(cfg.seed, rank))
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    opt = make_optimizer(model, cfg)
    step = Stepper(model, opt, cfg, device, ddp, aux_updates=aux_ramp_updates(cfg, loader.num_batches))
    pos = Position(lr=cfg.lr)
    best_state = None
    ckpt_path = Path(ckpt_path) if ckpt_path else None
    fingerprint = checkpoint.fingerprint(model, cfg)
    resume = bool(ckpt_path) and ckpt_path.exists()
    if ddp is not None:
        fingerprint["world_size"] = ddp.world  # the float sums, hence the weights, depend on it
        _agree_on_resume(ddp, resume, ckpt_path)
    if resume:
        pos, best_state = _resume(ckpt_path, fingerprint, model, opt, step, gen, device, rank)
    elif ddp is not None:
        ddp.broadcast_(model.state_dict().values())  # one starting point for every rank
    for group in opt.param_groups:
        group["lr"] = pos.lr

    def save():
        if not ckpt_path:
            return
        counters, rng = step.state(), _rng_state(gen, device, ddp)
        if ddp is not None:  # every rank takes part in the gathering; rank 0 alone writes
            counters["acc"] = ddp.sum_(step.acc.clone())
            if not ddp.is_main:
                return
        checkpoint.save_atomic({
            "model": model.state_dict(), "optim": opt.state_dict(),
            "counters": counters, "rng": rng,
            "position": asdict(pos), "best_model": best_state,
            "train_config": asdict(cfg), "fingerprint": fingerprint}, ckpt_path)

    def validate():
        nonlocal best_state
        figures = None
        if rank == 0:
            res = evaluate(model, valid_loader, device=device, seed=cfg.seed,
                           **{"name": "validation", **(eval_kwargs or {}),
                              **({"iwae_k": cfg.valid_iwae_k} if cfg.valid_iwae_k else {})})
            figures = [res["elbo_per_seq"], res["elbo_per_step"], res["kl_per_seq"],
                       selection_bound(res, cfg)]
        if ddp is not None:  # rank 0's figures: every rank halves the lr and selects alike
            figures = ddp.broadcast_floats(figures, 4)
        # finite: evaluate raises NonFiniteEvaluation otherwise
        elbo, bound_per_step, kl_per_seq, bound = figures
        halved = False
        # train.halve_against: the last validation's bound, or the best so far (lm_lstm_imdb.py)
        ref = pos.best_valid if cfg.halve_against == "best" else pos.prev_valid
        if (cfg.lr_schedule == "halve" and ref is not None
                and bound < ref and pos.lr > cfg.lr_floor):
            pos.lr = max(pos.lr / 2.0, cfg.lr_floor)
            for group in opt.param_groups:
                group["lr"] = pos.lr
            halved = True
        pos.prev_valid = bound
        if pos.best_valid is None or bound > pos.best_valid:
            pos.best_valid = bound
            best_state = _cpu_copy(model.state_dict())
        rec = {"kind": "valid", "update": pos.updates, "epoch": pos.epoch,
               "valid_elbo_per_seq": elbo, "valid_elbo_per_step": bound_per_step,
               "valid_kl_per_seq": kl_per_seq, "lr": pos.lr, "lr_halved": halved}
        if cfg.valid_iwae_k:  # the bound that halved the rate and picked the best weights
            rec["valid_iwae_per_seq"] = bound
        pos.history.append(rec)
        if on_eval:
            on_eval(rec)

    kl_w = aux_w = None
    since_log, t0 = 0, time.perf_counter()

    def log(final: bool):
        nonlocal since_log, t0
        rec = step.read_and_reset(kl_w, aux_w)
        check_skips(rec["skipped_updates"], pos.updates, cfg, final)
        dt = time.perf_counter() - t0
        rec.update(kind="train", update=pos.updates, epoch=pos.epoch, lr=pos.lr,
                   frames_per_s=rec.pop("frames") / dt if dt > 0 else 0.0,
                   ms_per_update=1000.0 * dt / max(since_log, 1))
        pos.history.append(rec)
        since_log, t0 = 0, time.perf_counter()
        if on_log:
            on_log(rec)

    while not pos.done:
        batch = loader.batch(pos.epoch, pos.index).to(device)
        noise = draw_noise(model, batch, gen) if ddp is None else ddp.noise(model, batch, gen)
        kl_w, aux_w = step(batch, noise)
        pos.index += 1
        pos.updates += 1
        since_log += 1
        epoch_end = pos.index >= loader.num_batches
        final = pos.updates >= cfg.max_updates or (epoch_end and pos.epoch + 1 >= cfg.max_epochs)
        if pos.updates % cfg.log_every == 0:
            log(final)
        if valid_loader is not None and cfg.eval_every and pos.updates % cfg.eval_every == 0:
            validate()
        if epoch_end:
            pos.epoch, pos.index = pos.epoch + 1, 0
            if valid_loader is not None and not cfg.eval_every:
                validate()
        if final:  # the rest of the run's last update: its log and validation, if not done above
            if pos.updates % cfg.log_every:
                log(final)
            if valid_loader is not None and pos.history[-1]["kind"] != "valid":
                validate()
            pos.done = True
        if pos.done or pos.updates % cfg.ckpt_every == 0:
            save()  # last: a checkpoint holds only complete updates
    last_state = _cpu_copy(model.state_dict())
    return {"history": pos.history, "best_state": best_state or last_state,
            "last_state": last_state, "position": asdict(pos), "skipped": int(step.skipped)}
