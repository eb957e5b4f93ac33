"""Step machinery shared by `radam.RAdam` and `radam.Adam`: state, bucketing and three execution paths.

The maths of each algorithm lives in its own file (radam/radam.py, radam/adam.py). This file only knows the
elementary operations both are made of, written once per execution path:

    path     chosen by        what runs
    single   foreach=False    a per-parameter loop of plain tensor ops (the reference, easiest to read)
    foreach  foreach=True     the same operations as torch._foreach_* over lists (few kernel launches)
    fused    foreach=None     (the default) torch._fused_adam_/_fused_adamw_ for every Adam-form step (one
                              pass over p, g, m, v); foreach for the other steps and where the op is missing

The fused op is a private API: if it is missing or refuses the inputs (it fails at dispatch or in its input
checks, before writing), the step warns once and that device/dtype uses the foreach path from then on.

State per parameter follows torch.optim.Adam/RAdam so their state dicts load:
    state["step"]       number of steps taken (a Python int here; torch's 0-d tensors are accepted on load)
    state["exp_avg"]    m_t, first moment, same shape/dtype/device as the parameter
    state["exp_avg_sq"] v_t, second moment, same shape/dtype/device as the parameter

The Adam-form step. Both optimizers' updating steps have the form (fairseq's arithmetic, eps added to
sqrt(v_t) *before* the bias correction of v):

    theta <- theta * (1 - lr * wd)                                   (decoupled weight decay; or g += wd*theta)
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    theta <- theta - lr * r * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

with r = 1 for Adam and r = r_t for rectified RAdam. torch's fused kernel computes
    theta <- theta * (1 - lr' wd');  theta <- theta - lr' / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps')
which is the same step for lr' = lr * r, eps' = eps / sqrt(1 - b2^t) and wd' = wd / r (r > 0 whenever this
step runs), since sqrt(v)/sqrt(1-b2^t) + eps/sqrt(1-b2^t) = (sqrt(v) + eps) / sqrt(1-b2^t).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

_FUSED_DEVICES = ("cpu", "cuda")
_fused_broken: set[tuple[str, torch.dtype]] = set()  # (device type, dtype) where the fused op raised once


@dataclass
class Bucket:
    """Parameters of one group that share device, dtype and step count t (so one scalar lr/eps/r fits all)."""

    t: int
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    exp_avgs: list[Tensor] = field(default_factory=list)
    exp_avg_sqs: list[Tensor] = field(default_factory=list)


def check_float(name: str, value, *, low: float = 0.0, high: float | None = None, hint: str = "") -> None:
    """Raise a one-line ValueError naming the argument and the bad value unless low <= value < high."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if value < low or (high is not None and value >= high):
        upper = "" if high is None else f" and < {high}"
        raise ValueError(f"invalid {name}: {value!r} (need >= {low}{upper}{hint})")


def check_betas(betas) -> tuple[float, float]:
    """betas must be a pair (b1, b2) (any sequence, e.g. a Hydra ListConfig), each in [0, 1); returns floats."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    check_float("betas[0] (beta1)", betas[0], low=0.0, high=1.0)
    check_float("betas[1] (beta2)", betas[1], low=0.0, high=1.0)
    return float(betas[0]), float(betas[1])


class BucketedOptimizer(torch.optim.Optimizer):
    """What RAdam and Adam share: checked options on every group, one step per (device, dtype, t) bucket,
    and loading torch's own state dicts.

    A subclass defines `check_group(group)` (one-line ValueErrors; may normalise values), `bucket_step(bucket,
    group)` (its algorithm) and `torch_missing_options` (its options that torch's state dicts lack, with the
    values that reproduce torch's behaviour).
    """

    torch_missing_options: dict = {}

    def __init__(self, params, defaults: dict) -> None:
        self.check_group(defaults)
        super().__init__(params, defaults)

    def check_group(self, group: dict) -> None:
        raise NotImplementedError

    def bucket_step(self, bucket: "Bucket", group: dict) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self.check_group(self.param_groups[-1])

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for name, value in {**self.torch_missing_options, "foreach": None}.items():
                group.setdefault(name, value)
        normalize_step_state(self)

    @torch.no_grad()
    def step(self, closure=None):
        """Take one optimization step; `closure` re-evaluates the loss and returns it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for bucket in gather_buckets(self, group, type(self).__name__):
                self.bucket_step(bucket, group)
        return loss


def check_adam_options(group: dict) -> None:
    """The options every optimizer here shares: lr, eps, weight_decay, betas (normalised to floats), foreach."""
    check_float("lr", group["lr"])
    check_float("eps", group["eps"])
    check_float("weight_decay", group["weight_decay"])
    group["betas"] = check_betas(group["betas"])
    resolve_path(group["foreach"])


def gather_buckets(optimizer: torch.optim.Optimizer, group: dict, name: str) -> list[Bucket]:
    """Advance the step counter of every parameter of `group` that has a gradient and bucket them.

    Parameters without a gradient are skipped (their state, step count included, is untouched), sparse and
    complex gradients raise. State is created on the first step.
    """
    buckets: dict[tuple, Bucket] = {}
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients (parameter of shape {tuple(p.shape)}); "
                               "use dense gradients (e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam")
        if p.is_complex():
            raise RuntimeError(f"{name} does not support complex parameters (shape {tuple(p.shape)}); "
                               "optimize torch.view_as_real(p) instead")
        state = optimizer.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        key = (p.device, p.dtype, state["step"])
        bucket = buckets.setdefault(key, Bucket(t=state["step"]))
        bucket.params.append(p)
        bucket.grads.append(p.grad)
        bucket.exp_avgs.append(state["exp_avg"])
        bucket.exp_avg_sqs.append(state["exp_avg_sq"])
    return list(buckets.values())


def normalize_step_state(optimizer: torch.optim.Optimizer) -> None:
    """After load_state_dict: turn torch's 0-d tensor steps (torch.optim.Adam/RAdam state dicts) into ints."""
    for state in optimizer.state.values():
        if "step" in state and isinstance(state["step"], Tensor):
            state["step"] = int(round(state["step"].item()))


# ---------------------------------------------------------------------------------------------------------------
# Elementary operations, each with a single-tensor and a foreach form. All update their first argument in place.
# ---------------------------------------------------------------------------------------------------------------

def add_l2(grads: list[Tensor], params: list[Tensor], wd: float, foreach: bool) -> list[Tensor]:
    """Classic L2 regularisation: g + wd * theta, as new tensors (p.grad is left as the user computed it)."""
    if wd == 0:
        return grads
    if foreach:
        return list(torch._foreach_add(grads, params, alpha=wd))
    return [g.add(p, alpha=wd) for g, p in zip(grads, params)]


def update_first_moment_(exp_avgs: list[Tensor], grads: list[Tensor], b1: float, foreach: bool) -> None:
    """m <- b1 m + (1 - b1) g  (written as a lerp: m + (1 - b1)(g - m))."""
    if foreach:
        torch._foreach_lerp_(exp_avgs, grads, 1 - b1)
    else:
        for m, g in zip(exp_avgs, grads):
            m.lerp_(g, 1 - b1)


def update_second_moment_(exp_avg_sqs: list[Tensor], grads: list[Tensor], b2: float, foreach: bool) -> None:
    """v <- b2 v + (1 - b2) g^2."""
    if foreach:
        torch._foreach_mul_(exp_avg_sqs, b2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - b2)
    else:
        for v, g in zip(exp_avg_sqs, grads):
            v.mul_(b2).addcmul_(g, g, value=1 - b2)


def decay_(params: list[Tensor], lr: float, wd: float, foreach: bool) -> None:
    """Decoupled weight decay: theta <- theta * (1 - lr * wd)."""
    if lr * wd == 0:
        return
    if foreach:
        torch._foreach_mul_(params, 1 - lr * wd)
    else:
        for p in params:
            p.mul_(1 - lr * wd)


def momentum_step_(params: list[Tensor], exp_avgs: list[Tensor], step_size: float, foreach: bool) -> None:
    """theta <- theta - step_size * m."""
    if foreach:
        torch._foreach_add_(params, exp_avgs, alpha=-step_size)
    else:
        for p, m in zip(params, exp_avgs):
            p.add_(m, alpha=-step_size)


def adaptive_step_(params: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                   step_size: float, eps: float, foreach: bool) -> None:
    """theta <- theta - step_size * m / (sqrt(v) + eps)."""
    if foreach:
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)
    else:
        for p, m, v in zip(params, exp_avgs, exp_avg_sqs):
            p.addcdiv_(m, v.sqrt().add_(eps), value=-step_size)


def adam_form_step_(b: Bucket, *, lr: float, r: float, b1: float, b2: float, eps: float, wd: float,
                    decoupled: bool, path: str) -> None:
    """The Adam-form step of the module docstring on one bucket: moments, weight decay and update.

    path: "single", "foreach" or "fused" (the fused op when it exists for this device/dtype, else foreach).
    r > 0 is the multiplier of the step (1 for Adam, r_t for rectified RAdam).
    """
    if path == "fused" and _fused_adam_form_(b, lr=lr, r=r, b1=b1, b2=b2, eps=eps, wd=wd, decoupled=decoupled):
        return
    foreach = path != "single"
    grads = b.grads if decoupled else add_l2(b.grads, b.params, wd, foreach)
    if decoupled:
        decay_(b.params, lr, wd, foreach)
    update_first_moment_(b.exp_avgs, grads, b1, foreach)
    update_second_moment_(b.exp_avg_sqs, grads, b2, foreach)
    step_size = lr * r * math.sqrt(1 - b2 ** b.t) / (1 - b1 ** b.t)
    adaptive_step_(b.params, b.exp_avgs, b.exp_avg_sqs, step_size, eps, foreach)


def fused_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's private fused Adam ops exist (and have not failed before) for this device and dtype."""
    return (hasattr(torch, "_fused_adamw_") and hasattr(torch, "_fused_adam_")
            and device.type in _FUSED_DEVICES and dtype.is_floating_point
            and (device.type, dtype) not in _fused_broken)


def _fused_adam_form_(b: Bucket, *, lr: float, r: float, b1: float, b2: float, eps: float, wd: float,
                      decoupled: bool) -> bool:
    """Run the Adam-form step through torch._fused_adam(w)_ with lr' = lr r, eps' = eps / sqrt(1 - b2^t),
    wd' = wd / r (decoupled) or wd (L2). Returns False, having changed nothing, if the op is unavailable or
    refuses the inputs (a private API: its failure switches this device/dtype to the foreach path for good).
    """
    device, dtype = b.params[0].device, b.params[0].dtype
    if not fused_available(device, dtype):
        return False
    # The kernel reads t from 0-d float32 tensors on the parameters' device (the caller counts the steps);
    # torch.full fills on the device, where torch.tensor(t, device="cuda") would copy and synchronise.
    step = torch.full((), float(b.t), dtype=torch.float32, device=device)
    op = torch._fused_adamw_ if decoupled else torch._fused_adam_
    try:
        op(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, [], [step] * len(b.params),
           amsgrad=False, lr=lr * r, beta1=b1, beta2=b2, weight_decay=wd / r if decoupled else wd,
           eps=eps / math.sqrt(1 - b2 ** b.t), maximize=False, grad_scale=None, found_inf=None)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError) as err:
        _fused_broken.add((device.type, dtype))
        warnings.warn(f"torch fused Adam op failed on {device.type}/{dtype} ({type(err).__name__}: {err}); "
                      "using the foreach path from now on", RuntimeWarning, stacklevel=3)
        return False
    return True


def resolve_path(foreach: bool | None) -> str:
    """foreach=None -> "fused" (fastest available), True -> "foreach", False -> "single"."""
    if foreach is None:
        return "fused"
    if not isinstance(foreach, bool):
        raise ValueError(f"foreach must be None, True or False, got {foreach!r}")
    return "foreach" if foreach else "single"
