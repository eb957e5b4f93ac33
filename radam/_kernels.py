"""Step machinery shared by `radam.RAdam` and `radam.Adam`: state, bucketing and the execution paths.

The maths of each algorithm lives in its own file (radam/radam.py, radam/adam.py). This file only knows the
elementary operations both are made of, written once per execution path:

    path     chosen by        what runs
    single   foreach=False    a per-parameter loop of plain tensor ops (the reference, easiest to read)
    foreach  foreach=True     the same operations as torch._foreach_* over lists (few kernel launches)
    fused    foreach=None     (the default) torch._fused_adam_/_fused_adamw_ for every Adam-form step (one
                              pass over p, g, m, v); foreach for the other steps and where the op cannot be used
    tensor   capturable=True  every step-dependent scalar (t, bias corrections, rho_t, r_t) is a tensor and the
             or compiling     branches are torch.where: no host synchronisation (CUDA graphs) and, under
                              torch.compile, one graph for every step (no recompilation as t grows)

The fused op is a private API: if it is missing or refuses the inputs (it fails at dispatch or in its input
checks, before writing), the step warns once and that device/dtype uses the foreach path from then on. It
treats its tensors as flat arrays, so it only gets parameters that are dense (non-overlapping, no gaps) and
whose gradient and moments have the same strides; views such as x[..., 0] or x[::2] take the foreach path.

State per parameter follows torch.optim.Adam/RAdam so their state dicts load:
    state["step"]       number of steps taken: a Python int (eager), a 0-d float32 tensor on the
                        parameter's device in tensor mode; torch's 0-d tensors are accepted on load
    state["exp_avg"]    m_t, first moment, same shape/dtype/device as the parameter
    state["exp_avg_sq"] v_t, second moment, same shape/dtype/device as the parameter
Complex parameters are optimized as torch does, as their real views (torch.view_as_real of p, g, m and v).

The Adam-form step. Both optimizers' updating steps have the form (fairseq's arithmetic, eps added to
sqrt(v_t) *before* the bias correction of v):

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2          (g += wd theta first for classic L2)
    theta <- theta - (lr wd theta + lr r sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps))

with r = 1 for Adam and r = r_t for rectified RAdam. Decoupled weight decay is part of the one update of theta:
theta is rounded once, after decay and step are summed, so a decay far below the spacing of theta's dtype
(lr wd = 3e-8 is half the float32 spacing below 1) is kept in expectation. Applied on its own, as
theta * (1 - lr wd) (torch's AdamW, the factor is rounded to a multiple of 2^-24 first: 2x the decay at 3e-8,
none at 1e-10) or as theta - lr wd theta (rounded back to theta itself below half a spacing), it is not.

torch's fused kernel computes
    theta <- theta * (1 - lr' wd');  theta <- theta - lr' / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps')
which is the same step for lr' = lr * r, eps' = eps / sqrt(1 - b2^t) and lr' wd' = lr wd, since
sqrt(v)/sqrt(1-b2^t) + eps/sqrt(1-b2^t) = (sqrt(v) + eps) / sqrt(1-b2^t). In float32 arithmetic (also the
kernel's arithmetic for bf16/fp16) its factor 1 - lr wd is a multiple of 2^-24 and theta * factor is rounded
before the step. So: the quantisation error of the factor is carried to the next step (error diffusion: the
decay applied so far stays within 2^-25 of the decay asked for), and below lr wd = KERNEL_MIN_DECAY (2^-20,
~9.5e-7, where theta * factor itself is rounded by a fraction of a spacing comparable to the decay) a float32
bucket takes the foreach path instead, whose single rounding keeps the decay. bf16/fp16 buckets stay on the
kernel (its float32 arithmetic errs far below their spacing, and beats the foreach path's bf16/fp16
arithmetic); float64 needs neither.
"""

from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

_FUSED_DEVICES = ("cpu", "cuda")
_fused_broken: set[tuple[str, torch.dtype]] = set()  # (device type, dtype) where the fused op raised once
KERNEL_MIN_DECAY = 2.0 ** -20  # decoupled lr*wd below which float32-arithmetic buckets leave the fused kernel


@dataclass
class Bucket:
    """Parameters of one group that share device, dtype and step count t (so one scalar lr/eps/r fits all).

    In tensor mode t is 0 and `steps` holds each parameter's step tensor (already incremented)."""

    t: int
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    exp_avgs: list[Tensor] = field(default_factory=list)
    exp_avg_sqs: list[Tensor] = field(default_factory=list)
    steps: list[Tensor] = field(default_factory=list)
    shared: dict = field(default_factory=dict)  # one dict per group and step() call, shared by its buckets

    def subset(self, keep: list[bool]) -> "Bucket":
        pick = lambda xs: [x for x, k in zip(xs, keep) if k]  # noqa: E731
        return Bucket(self.t, pick(self.params), pick(self.grads), pick(self.exp_avgs), pick(self.exp_avg_sqs),
                      pick(self.steps), self.shared)


# ---------------------------------------------------------------------------------------------------------------
# Argument checks: one line, torch's wording first (so code written for torch.optim still matches), then the fix.
# ---------------------------------------------------------------------------------------------------------------

def check_float(name: str, value, *, low: float = 0.0, high: float | None = None, hint: str = "",
                label: str | None = None) -> None:
    """Raise a one-line ValueError "<label>: <value> (<name> must be ...)" unless low <= value < high.

    label is torch's wording (e.g. "Invalid learning rate"); default "Invalid <name>"."""
    label = label or f"Invalid {name}"
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element, got shape {tuple(value.shape)}")
        value = value.item()
    upper = "" if high is None else f" and < {high}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{label}: {value!r} ({name} must be a real number >= {low}{upper}{hint})")
    if value < low or (high is not None and value >= high):
        raise ValueError(f"{label}: {value!r} ({name} must be >= {low}{upper}{hint})")


def check_betas(betas) -> tuple[float, float]:
    """betas must be a pair (b1, b2) (any sequence, e.g. a Hydra ListConfig), each in [0, 1); returns floats."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i in (0, 1):
        check_float(f"betas[{i}] (beta{i + 1})", betas[i], low=0.0, high=1.0,
                    label=f"Invalid beta parameter at index {i}")
    return float(betas[0]), float(betas[1])


def check_bool(group: dict, name: str) -> None:
    if not isinstance(group[name], bool):
        raise ValueError(f"{name} must be True or False, got {group[name]!r}")


def check_adam_options(group: dict) -> None:
    """The options both optimizers share: lr, eps, weight_decay, betas (normalised to floats), foreach,
    maximize, capturable, differentiable."""
    check_float("lr", group["lr"], label="Invalid learning rate")
    check_float("eps", group["eps"], label="Invalid epsilon value")
    check_float("weight_decay", group["weight_decay"], label="Invalid weight_decay value")
    group["betas"] = check_betas(group["betas"])
    resolve_path(group["foreach"])
    for name in ("maximize", "capturable", "differentiable"):
        check_bool(group, name)


COMMON_OPTIONS = {"foreach": None, "maximize": False, "capturable": False, "differentiable": False}


class BucketedOptimizer(torch.optim.Optimizer):
    """What RAdam and Adam share: checked options on every group, one step per (device, dtype, t) bucket,
    the tensor mode, and loading torch's own state dicts.

    A subclass defines `check_group(group)` (one-line ValueErrors; may normalise values), `bucket_step(bucket,
    group)` (its algorithm with Python-number scalars), `tensor_coefficients(t, group)` (the same algorithm's
    per-step coefficients as tensors of t, for tensor mode) and `torch_missing_options` (its options that
    torch's state dicts lack, with the values that reproduce torch's behaviour).
    """

    torch_missing_options: dict = {}

    def __init__(self, params, defaults: dict) -> None:
        self.check_group(defaults)
        super().__init__(params, {**defaults, "kernel_decay_carry": 0.0})

    def check_group(self, group: dict) -> None:
        raise NotImplementedError

    def bucket_step(self, bucket: Bucket, group: dict) -> None:
        raise NotImplementedError

    def tensor_coefficients(self, t: Tensor, group: dict) -> "TensorCoefficients":
        raise NotImplementedError

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self.check_group(self.param_groups[-1])

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for name, value in {**self.torch_missing_options, **COMMON_OPTIONS, "kernel_decay_carry": 0.0}.items():
                group.setdefault(name, value)
        normalize_step_state(self)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            self.check_group(group)

    def step(self, closure=None):
        """Take one optimization step; `closure` re-evaluates the loss and returns it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tensor_mode = group["capturable"] or torch.compiler.is_compiling()
            with torch.set_grad_enabled(group["differentiable"]):
                for bucket in gather_buckets(self, group, type(self).__name__, tensor_mode):
                    if tensor_mode:
                        tensor_step_(bucket, group, self.tensor_coefficients)
                    else:
                        self.bucket_step(bucket, group)
        return loss


def gather_buckets(optimizer: torch.optim.Optimizer, group: dict, name: str, tensor_mode: bool) -> list[Bucket]:
    """Advance the step counter of every parameter of `group` that has a gradient and bucket them.

    Parameters without a gradient are skipped (their state, step count included, is untouched), sparse
    gradients raise, complex parameters enter as real views. State is created on the first step.
    """
    buckets: dict[tuple, Bucket] = {}
    shared: dict = {}
    for p in group["params"]:
        grad = p.grad
        if grad is None:
            continue
        if grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients (parameter of shape {tuple(p.shape)}); "
                               "use dense gradients (e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam")
        state = optimizer.state[p]
        if len(state) == 0:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device) if tensor_mode else 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if tensor_mode:
            if not isinstance(state["step"], Tensor) or state["step"].device != p.device:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device)
            state["step"] += 1
            key, t = (p.device, p.dtype), 0
        elif isinstance(state["step"], Tensor):  # a tensor step (tensor mode before, or set by hand): keep it one
            state["step"] += 1
            t = int(state["step"].item())
            key = (p.device, p.dtype, t)
        else:
            state["step"] += 1
            t = state["step"]
            key = (p.device, p.dtype, t)
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = Bucket(t=t, shared=shared)
        tensors = (p, grad, state["exp_avg"], state["exp_avg_sq"])
        if p.is_complex():
            tensors = tuple(torch.view_as_real(x) for x in tensors)
        bucket.params.append(tensors[0])
        bucket.grads.append(tensors[1])
        bucket.exp_avgs.append(tensors[2])
        bucket.exp_avg_sqs.append(tensors[3])
        if tensor_mode:
            bucket.steps.append(state["step"])
    return list(buckets.values())


def normalize_step_state(optimizer: torch.optim.Optimizer) -> None:
    """After load_state_dict: turn torch's 0-d tensor steps into ints, except in capturable groups (which keep
    0-d float32 tensors on the parameter's device)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "step" not in state:
                continue
            if group.get("capturable", False):
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device)
            elif isinstance(state["step"], Tensor):
                state["step"] = int(round(state["step"].item()))


# ---------------------------------------------------------------------------------------------------------------
# Elementary operations, each with a single-tensor and a foreach form. All update their first argument in place.
# ---------------------------------------------------------------------------------------------------------------

def prepare_grads(grads: list[Tensor], params: list[Tensor], *, maximize: bool, l2: float,
                  foreach: bool) -> list[Tensor]:
    """The gradients the moments see: -g when maximizing, then + l2 * theta for classic L2 regularisation; as
    new tensors (p.grad is left as the user computed it)."""
    if maximize:
        grads = list(torch._foreach_neg(grads)) if foreach else [torch.neg(g) for g in grads]
    if l2 == 0:
        return grads
    if foreach:
        return list(torch._foreach_add(grads, params, alpha=l2))
    return [g.add(p, alpha=l2) for g, p in zip(grads, params)]


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


LOW_PRECISION = (torch.bfloat16, torch.float16)


def decay_plus(params: list[Tensor], decay: float, foreach: bool) -> list[Tensor] | None:
    """decay * theta as new tensors in the arithmetic dtype (float32 for bf16/fp16 parameters), to which the
    step is added before theta -= update, so that theta is rounded once; None where theta can be updated in
    place (no decay, float32/float64: torch's in-place ops then round once). bf16/fp16 always get the update:
    their in-place add_(m, alpha=-lr) rounds alpha itself to bf16/fp16 (0.1 -> 0.10009765625 in bf16)."""
    if decay == 0 and params[0].dtype not in LOW_PRECISION:
        return None
    params = [p.float() if p.dtype in LOW_PRECISION else p for p in params]
    return list(torch._foreach_mul(params, decay)) if foreach else [p * decay for p in params]


def momentum_step_(params: list[Tensor], exp_avgs: list[Tensor], step_size: float, decay: float,
                   foreach: bool) -> None:
    """theta <- theta - (decay * theta + step_size * m), theta rounded once."""
    update = decay_plus(params, decay, foreach)
    if foreach:
        if update is None:
            torch._foreach_add_(params, exp_avgs, alpha=-step_size)
        else:
            torch._foreach_add_(update, exp_avgs, alpha=step_size)
            torch._foreach_sub_(params, update)
        return
    for i, (p, m) in enumerate(zip(params, exp_avgs)):
        if update is None:
            p.add_(m, alpha=-step_size)
        else:
            p.sub_(update[i].add_(m, alpha=step_size))


def adaptive_step_(params: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                   step_size: float, eps: float, decay: float, foreach: bool) -> None:
    """theta <- theta - (decay * theta + step_size * m / (sqrt(v) + eps)), theta rounded once."""
    update = decay_plus(params, decay, foreach)
    if foreach:
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, eps)
        if update is None:
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)
        else:
            torch._foreach_addcdiv_(update, exp_avgs, denom, value=step_size)
            torch._foreach_sub_(params, update)
        return
    for i, (p, m, v) in enumerate(zip(params, exp_avgs, exp_avg_sqs)):
        denom = v.sqrt() + eps  # not in place: autograd (differentiable=True) needs sqrt's output
        if update is None:
            p.addcdiv_(m, denom, value=-step_size)
        else:
            p.sub_(update[i].addcdiv_(m, denom, value=step_size))


def adam_form_step_(b: Bucket, group: dict, *, r: float, path: str) -> None:
    """The Adam-form step of the module docstring on one bucket: moments, weight decay and update.

    path: "single", "foreach" or "fused" (the fused op for the parameters it can take, foreach for the rest).
    r > 0 is the multiplier of the step (1 for Adam, r_t for rectified RAdam). group supplies lr, betas, eps,
    weight_decay, maximize and decoupled_weight_decay (True if absent).
    """
    if path == "fused":
        kernel = fused_part(b, group)
        if kernel is not None and _fused_adam_form_(kernel, group, r=r):
            if all(kernel.taken):
                return
            b = b.subset([not k for k in kernel.taken])
    foreach = path != "single"
    lr, wd, (b1, b2) = float(group["lr"]), group["weight_decay"], group["betas"]
    decoupled = group.get("decoupled_weight_decay", True)
    grads = prepare_grads(b.grads, b.params, maximize=group["maximize"], l2=0.0 if decoupled else wd,
                          foreach=foreach)
    update_first_moment_(b.exp_avgs, grads, b1, foreach)
    update_second_moment_(b.exp_avg_sqs, grads, b2, foreach)
    step_size = lr * r * math.sqrt(1 - b2 ** b.t) / (1 - b1 ** b.t)
    adaptive_step_(b.params, b.exp_avgs, b.exp_avg_sqs, step_size, group["eps"], lr * wd if decoupled else 0.0,
                   foreach)


# ------------------------------------------------------------ the fused kernel ---------------------------------

@dataclass
class KernelBucket(Bucket):
    taken: list[bool] = field(default_factory=list)  # which parameters of the original bucket are in here


def fused_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's private fused Adam ops exist (and have not failed before) for this device and dtype."""
    return (hasattr(torch, "_fused_adamw_") and hasattr(torch, "_fused_adam_")
            and device.type in _FUSED_DEVICES and dtype.is_floating_point
            and (device.type, dtype) not in _fused_broken)


def is_dense(t: Tensor) -> bool:
    """Non-overlapping and dense: the elements fill a contiguous block of memory in some order of the dims."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def same_layout(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def fused_part(b: Bucket, group: dict) -> KernelBucket | None:
    """The parameters of `b` the fused kernel may update (dense, with g, m and v laid out alike), or None if
    the kernel cannot take this bucket (not available, or a decoupled decay too small for its arithmetic)."""
    p0 = b.params[0]
    if not fused_available(p0.device, p0.dtype):
        return None
    decay = float(group["lr"]) * group["weight_decay"]
    if group.get("decoupled_weight_decay", True) and 0 < decay < KERNEL_MIN_DECAY and p0.dtype == torch.float32:
        return None  # (bf16/fp16: the kernel's float32 arithmetic beats the foreach path's bf16/fp16 arithmetic)
    taken = [kernel_layout(p, g, m, v) for p, g, m, v in zip(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs)]
    if all(taken):
        return KernelBucket(**vars(b), taken=taken)
    if not any(taken):
        return None
    return KernelBucket(**vars(b.subset(taken)), taken=taken)


def kernel_layout(p: Tensor, g: Tensor, m: Tensor, v: Tensor) -> bool:
    """Whether the fused kernel's flat view of p, g, m, v is right: all contiguous (the common case, checked in
    C++), or dense with one layout (transposes, channels_last)."""
    if p.is_contiguous() and g.is_contiguous() and m.is_contiguous() and v.is_contiguous():
        return True
    return is_dense(p) and same_layout(p, g) and same_layout(p, m) and same_layout(p, v)


def float32_below_one(x: float) -> float:
    """The float32 nearest to x (round to nearest even), as a Python float."""
    return struct.unpack("f", struct.pack("f", x))[0]


def kernel_decay(group: dict, dtype: torch.dtype) -> float:
    """The decoupled decay lr*wd to hand the fused kernel this step. In float64 it is lr*wd. In float32
    arithmetic the kernel's factor 1 - decay is a multiple of 2^-24; the part of lr*wd it cannot represent is
    carried in group["kernel_decay_carry"] to the next step, so the decay applied so far stays within 2^-25 of
    the sum of the lr*wd asked for."""
    decay = float(group["lr"]) * group["weight_decay"]
    if dtype == torch.float64 or decay == 0:
        return decay
    wanted = decay + group["kernel_decay_carry"]
    applied = 1.0 - float32_below_one(1.0 - wanted)
    group["kernel_decay_carry"] = wanted - applied
    return applied


def _fused_adam_form_(b: KernelBucket, group: dict, *, r: float) -> bool:
    """Run the Adam-form step through torch._fused_adam(w)_ with lr' = lr r, eps' = eps / sqrt(1 - b2^t) and
    lr' wd' = kernel_decay (decoupled) or wd' = wd (L2). Returns False, having changed nothing, if the op
    refuses the inputs (a private API: its failure switches this device/dtype to the foreach path for good).
    """
    device, dtype = b.params[0].device, b.params[0].dtype
    lr, wd, (b1, b2), eps = float(group["lr"]), group["weight_decay"], group["betas"], group["eps"]
    decoupled = group.get("decoupled_weight_decay", True)
    # The kernel reads t from 0-d float32 tensors on the parameters' device (the caller counts the steps);
    # torch.full fills on the device, where torch.tensor(t, device="cuda") would copy and synchronise.
    step = torch.full((), float(b.t), dtype=torch.float32, device=device)
    op = torch._fused_adamw_ if decoupled else torch._fused_adam_
    carry = group["kernel_decay_carry"]
    if decoupled:
        # once per group and step for all its float32-arithmetic buckets, so that they share one carry
        key = ("kernel_decay", dtype == torch.float64)
        if key not in b.shared:
            b.shared[key] = kernel_decay(group, dtype)
        decay = b.shared[key] if lr * r > 0 else 0.0
        kernel_wd = decay / (lr * r) if decay else 0.0
    else:
        kernel_wd = wd
    try:
        op(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, [], [step] * len(b.params),
           amsgrad=False, lr=lr * r, beta1=b1, beta2=b2, weight_decay=kernel_wd,
           eps=eps / math.sqrt(1 - b2 ** b.t), maximize=group["maximize"], grad_scale=None, found_inf=None)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError) as err:
        group["kernel_decay_carry"] = carry
        b.shared.clear()
        _fused_broken.add((device.type, dtype))
        warnings.warn(f"torch fused Adam op failed on {device.type}/{dtype} ({type(err).__name__}: {err}); "
                      "using the foreach path from now on", RuntimeWarning, stacklevel=4)
        return False
    return True


def resolve_path(foreach: bool | None) -> str:
    """foreach=None -> "fused" (fastest available), True -> "foreach", False -> "single"."""
    if foreach is None:
        return "fused"
    if not isinstance(foreach, bool):
        raise ValueError(f"foreach must be None, True or False, got {foreach!r}")
    return "foreach" if foreach else "single"


def group_path(group: dict) -> str:
    """The eager path of a group: differentiable=True needs autograd through every op, i.e. the single path."""
    return "single" if group["differentiable"] else resolve_path(group["foreach"])


# ---------------------------------------------------------------------------------------------------------------
# Tensor mode: the step as tensor arithmetic in t, branch-free (capturable=True, and whenever torch.compile traces)
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class TensorCoefficients:
    """theta <- theta - (decay theta + adaptive m / (sqrt(v) + eps) + momentum m), after
    m <- m + first_moment_weight (g - m); every field a 0-d tensor (or number) computed from t."""

    adaptive: Tensor
    momentum: Tensor | float
    decay: Tensor | float
    first_moment_weight: Tensor | float


def coefficient_dtype(device: torch.device) -> torch.dtype:
    """float64 for the 0-d step coefficients (rho_t - 4 loses ~4 digits to cancellation at t = 6 in float32),
    except on devices without float64 (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def tensor_step_(b: Bucket, group: dict, coefficients) -> None:
    """One step of a tensor-mode bucket. The coefficients of all its parameters are computed at once, from the
    stacked step counts (under torch.compile one small kernel, instead of each element recomputing them), then
    each parameter takes one fused update."""
    b2, eps = group["betas"][1], group["eps"]
    decoupled = group.get("decoupled_weight_decay", True)
    l2 = 0.0 if decoupled else group["weight_decay"]
    t = torch.stack(b.steps).to(coefficient_dtype(b.params[0].device))
    c = coefficients(t, group)
    table = torch.stack([x.to(t.dtype).expand_as(t) if isinstance(x, Tensor) else torch.full_like(t, x)
                         for x in (c.decay, c.momentum, c.adaptive, c.first_moment_weight)])  # no host copies
    for i, (p, g, m, v) in enumerate(zip(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs)):
        decay, momentum, adaptive, first_moment_weight = table[:, i]
        g = -g if group["maximize"] else g
        if l2:
            g = g + l2 * p
        m.lerp_(g, first_moment_weight)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.sub_(p * decay + m * momentum + m / (v.sqrt() + eps) * adaptive)
