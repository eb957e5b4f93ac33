"""Learning-rate schedules of the paper's experiments, as torch.optim.lr_scheduler objects.

Paper: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020, arXiv:1908.03265
(Sec. 3 warmup study; Sec. 5 experimental settings). Untuned warmup: Ma & Yarats, "On the Adequacy of
Untuned Warmup for Adaptive Optimization", AAAI 2021, arXiv:1910.04209.
Inverse square root: fairseq's `inverse_sqrt` scheduler (https://github.com/facebookresearch/fairseq).

Conventions shared by every scheduler here:
- The optimizer's configured lr of each param group is that group's peak lr ("base lr", lr_g below).
  Every group follows the schedule with its own lr_g.
- Call `scheduler.step()` once per update, after `optimizer.step()`.
- t counts the updates already taken: the first optimizer step uses t = 0, the second t = 1, ...
  This is fairseq's convention (`lr_scheduler.step_update(num_updates)`, called with 0 before training
  and with the new count after each update), so t = torch's `scheduler.last_epoch`.
- Each lr is a closed-form function of (t, lr_g): `state_dict()` / `load_state_dict()` restore the exact
  sequence, and the schedulers must not be combined with torch's ChainedScheduler (the last one would
  overwrite the others). To compose warmup with decay, use the `max_updates` / `milestones` options of
  UntunedLinearWarmup, which multiply the warmup factor by a decay.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def _per_group(value, optimizer: Optimizer, name: str) -> list[float]:
    """A float for every param group: one shared value, or a sequence with one entry per group."""
    n = len(optimizer.param_groups)
    values = list(value) if isinstance(value, Sequence) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but the optimizer has {n} param groups; give one per group")
    return [float(v) for v in values]


def _check_updates(value: int, name: str, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------- closed forms
def linear_warmup_linear_decay(
    t: int, lr: float, warmup_init_lr: float, warmup_updates: int, max_updates: int, min_lr: float
) -> float:
    """lr(t) = warmup_init_lr + (lr - warmup_init_lr) t / W        for t < W      (linear warmup)
             = lr + (min_lr - lr) (t - W) / (T - W)                for W <= t <= T (linear decay)
             = min_lr                                              for t > T,
    with W = warmup_updates and T = max_updates. W = 0: no warmup, lr(0) = lr."""
    if t < warmup_updates:
        return warmup_init_lr + (lr - warmup_init_lr) * t / warmup_updates
    if t >= max_updates:
        return min_lr
    return lr + (min_lr - lr) * (t - warmup_updates) / (max_updates - warmup_updates)


def inverse_sqrt(t: int, lr: float, warmup_init_lr: float, warmup_updates: int) -> float:
    """fairseq `inverse_sqrt`: lr(t) = warmup_init_lr + (lr - warmup_init_lr) t / W for t < W,
    then lr(t) = lr sqrt(W / t) for t >= W (so lr(W) = lr). W >= 1 (fairseq divides by t = 0 otherwise)."""
    if t < warmup_updates:
        return warmup_init_lr + (lr - warmup_init_lr) * t / warmup_updates
    return lr * math.sqrt(warmup_updates / t)


def multi_step(t: int, lr: float, milestones: Sequence[int], gamma: float) -> float:
    """lr(t) = lr * gamma^k, k = number of milestones m with m <= t (milestones counted in updates)."""
    return lr * gamma ** bisect.bisect_right(milestones, t)


def untuned_warmup_factor(t: int, beta2: float) -> float:
    """Ma & Yarats (2019): omega = min(1, (1 - b2) / 2 * s) at their 1-based update s = t + 1.
    The first update gets omega = (1 - b2)/2 (not 0); omega = 1 from s = 2 / (1 - b2) on (2000 for 0.999)."""
    return min(1.0, (1.0 - beta2) / 2.0 * (t + 1))


# ---------------------------------------------------------------------------------------- schedulers
class LinearWarmupLinearDecay(LRScheduler):
    """The paper's NMT schedule (Sec. 3, Fig. 1): linear warmup from `warmup_init_lr` over `warmup_updates`
    to each group's lr, then linear decay to `min_lr` at `max_updates`, then constant `min_lr`.
    See `linear_warmup_linear_decay` for the formula. Paper values: warmup_init_lr = 1e-8,
    warmup_updates = 4000 (Adam-warmup; 0 for the other variants), max_updates = 70000, min_lr = 1e-9.
    `warmup_init_lr` and `min_lr` are absolute lrs: one value for all groups, or one per group.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_updates: int,
        warmup_updates: int = 0,
        warmup_init_lr: float | Sequence[float] = 1e-8,
        min_lr: float | Sequence[float] = 1e-9,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_updates = _check_updates(warmup_updates, "warmup_updates", 0)
        self.max_updates = _check_updates(max_updates, "max_updates", 1)
        if self.max_updates <= self.warmup_updates:
            raise ValueError(
                f"max_updates ({max_updates}) must exceed warmup_updates ({warmup_updates}); raise max_updates"
            )
        self.warmup_init_lrs = _per_group(warmup_init_lr, optimizer, "warmup_init_lr")
        self.min_lrs = _per_group(min_lr, optimizer, "min_lr")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [
            linear_warmup_linear_decay(self.last_epoch, lr, init, self.warmup_updates, self.max_updates, end)
            for lr, init, end in zip(self.base_lrs, self.warmup_init_lrs, self.min_lrs)
        ]


class InverseSqrt(LRScheduler):
    """fairseq's `inverse_sqrt`: linear warmup from `warmup_init_lr` (fairseq's default: 0) over
    `warmup_updates`, then lr sqrt(warmup_updates / t). See `inverse_sqrt` for the formula."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_updates: int = 4000,
        warmup_init_lr: float | Sequence[float] = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_updates = _check_updates(warmup_updates, "warmup_updates", 1)
        self.warmup_init_lrs = _per_group(warmup_init_lr, optimizer, "warmup_init_lr")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [
            inverse_sqrt(self.last_epoch, lr, init, self.warmup_updates)
            for lr, init in zip(self.base_lrs, self.warmup_init_lrs)
        ]


class MultiStep(LRScheduler):
    """Step decay: lr(t) = lr_g * gamma^(number of milestones <= t), milestones counted in updates.

    Milestones given in epochs (CIFAR-10: x0.1 at epochs 81 and 122; One Billion Word: x0.1 at the start of
    epoch 10, i.e. after 9 epochs) take `updates_per_epoch` = optimizer updates per epoch (CIFAR-10 at batch 128:
    ceil(50000 / 128) = 391): the milestone in updates is then epoch * updates_per_epoch.
    """

    def __init__(
        self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1, updates_per_epoch: int = 1,
        last_epoch: int = -1,
    ) -> None:
        per_epoch = _check_updates(updates_per_epoch, "updates_per_epoch", 1)
        self.milestones = sorted(_check_updates(m, "every milestone", 1) * per_epoch for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [multi_step(self.last_epoch, lr, self.milestones, self.gamma) for lr in self.base_lrs]


class UntunedLinearWarmup(LRScheduler):
    """Untuned linear warmup over 2 / (1 - b2) updates (Ma & Yarats, 2019), optionally times a decay:

        lr_g(t) = omega_g(t) * d_g(t),   omega_g(t) = min(1, (1 - b2_g) / 2 * (t + 1)),
        d_g(t)  = linear_warmup_linear_decay(t, lr_g, -, 0, max_updates, min_lr)  if max_updates is given,
                = multi_step(t, lr_g, milestones, gamma)                          if milestones is given,
                = lr_g                                                            otherwise.

    b2_g is `beta2` when given, else read from each param group's `betas[1]` (so groups with different b2
    warm up over different lengths). The product form is this module's way to compose warmup and decay.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        beta2: float | None = None,
        max_updates: int | None = None,
        min_lr: float | Sequence[float] = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if beta2 is None:
            if any("betas" not in group for group in optimizer.param_groups):
                raise ValueError("the optimizer's param groups have no 'betas'; pass beta2= explicitly")
            self.beta2s = [float(group["betas"][1]) for group in optimizer.param_groups]
        else:
            self.beta2s = [float(beta2)] * len(optimizer.param_groups)
        if any(not 0.0 <= b2 < 1.0 for b2 in self.beta2s):
            raise ValueError(f"beta2 must lie in [0, 1) for untuned warmup; got {self.beta2s}")
        if max_updates is not None and len(milestones) > 0:
            raise ValueError("give either max_updates (linear decay) or milestones (step decay), not both")
        self.max_updates = None if max_updates is None else _check_updates(max_updates, "max_updates", 1)
        self.min_lrs = _per_group(min_lr, optimizer, "min_lr")
        self.milestones = sorted(_check_updates(m, "every milestone", 1) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def _decayed(self, lr: float, min_lr: float) -> float:
        t = self.last_epoch
        if self.max_updates is not None:
            return linear_warmup_linear_decay(t, lr, lr, 0, self.max_updates, min_lr)
        return multi_step(t, lr, self.milestones, self.gamma)

    def get_lr(self) -> list[float]:
        return [
            untuned_warmup_factor(self.last_epoch, b2) * self._decayed(lr, end)
            for lr, b2, end in zip(self.base_lrs, self.beta2s, self.min_lrs)
        ]
