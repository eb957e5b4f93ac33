r"""RAdam: Adam with a rectified adaptive learning rate (Algorithm 2).

Paper: Liu, Jiang, He, Chen, Liu, Gao, Han, "On the Variance of the Adaptive Learning Rate and Beyond",
ICLR 2020, arXiv:1908.03265. Original code: https://github.com/LiyuanLucasLiu/RAdam (radam.py).

Symbols (paper -> argument): alpha_t = lr, beta_1, beta_2 = betas, epsilon = eps, g_t = gradient,
m_t / v_t = first / second moment (state "exp_avg" / "exp_avg_sq"), t = state "step" (1 at the first step).

For t = 1, 2, ...:

    v_t = b2 v_{t-1} + (1 - b2) g_t^2                 m_t = b1 m_{t-1} + (1 - b1) g_t
    m_hat_t = m_t / (1 - b1^t)
    rho_inf = 2 / (1 - b2) - 1                                                     (Sec. 4)
    rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    if rho_t > threshold:                                       (the variance of psi_t is tractable)
        psi_t = sqrt(1 - b2^t) / (sqrt(v_t) + eps)             (adaptive lr; eps before sqrt(1 - b2^t))
        r_t = sqrt( (rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t) )   (Alg. 2)
        theta_t = theta_{t-1} - alpha_t r_t m_hat_t psi_t
    elif degenerated_to_sgd:
        theta_t = theta_{t-1} - alpha_t m_hat_t                 (SGD with bias-corrected momentum)
    else:
        theta_t = theta_{t-1}                                   (no update; m and v still accumulate)

First steps (Appendix C, Table 3), option `first_steps`: a sequence of (rule, n) pairs that replace the
branch above for the first steps, in order: the first n_1 steps follow rule_1, the next n_2 rule_2, ...; after
them Algorithm 2 as above. m_t and v_t are updated on every step whatever the rule. Rules:

    "sgd":   theta_t = theta_{t-1} - alpha_t m_hat_t                 (the un-rectified step of Algorithm 2)
    "adam":  theta_t = theta_{t-1} - alpha_t m_hat_t psi_t           (plain Adam: r_t taken as 1)
    "skip":  theta_t = theta_{t-1}                                   (no update, no weight decay)

Table 3 with the paper's threshold=4 (rho_t <= 4 exactly for t <= 4 when b2 = 0.999): RAdam throughout
(91.08) is first_steps=() (Algorithm 2 takes the SGD step for t = 1..4); "Adam for steps 1-4, then RAdam"
(89.98) is (("adam", 4),); "SGD 1-4, Adam 5-8, then RAdam" (90.29) is (("sgd", 4), ("adam", 4)); and
(("skip", 4),) skips the first four updates. The default () is Algorithm 2 unchanged.

Weight decay wd: decoupled (default, as the original code): theta <- theta - alpha_t wd theta - (the update),
on the steps that update theta only, not scaled by r_t; decay and update are summed before theta is rounded
(radam/_kernels.py: this keeps lr wd = 3e-8 in float32, which theta (1 - alpha_t wd) does not). With decoupled_weight_decay=False it is classic L2:
g_t <- g_t + wd theta_{t-1} on every step, before the moments (torch.optim.RAdam's default).

Threshold. The paper's rule is rho_t > 4 (threshold=4): r_t has the factor (rho_t - 4), so rho_t > 4 is
needed, and threshold < 4 is rejected. The original code ("more conservative since it's an approximated
value"), torch.optim.RAdam and every peer use 5, the default here (the original code and optax test
rho_t >= 5, torch and this class rho_t > 5: they differ only if rho_t == 5 exactly). For b2 = 0.999:
rho_4 = 3.9975, rho_5 = 4.996, rho_6 = 5.994, so the first rectified step is t = 5 under the paper's rule and
t = 6 under the code's. rho_t increases to rho_inf; if b2 <= 0.6 then rho_inf <= 4 and RAdam is SGD with
bias-corrected momentum for ever (or, with degenerated_to_sgd=False, never moves).

Differences from torch.optim.RAdam: none in the algorithm with decoupled_weight_decay=True and threshold=5
(torch's rule is rho_t > 5, eps also added before sqrt(1 - b2^t)); in float32 the decoupled decay is rounded
once with the step (torch: theta * (1 - lr wd) first). The default decoupled_weight_decay is True here (the
original code), False in torch. The options threshold, degenerated_to_sgd and first_steps are extra.
torch.optim.RAdam state dicts load here and ours load there (same state keys).

Speed: a rectified step is an Adam step with lr' = lr r_t (see radam/_kernels.py), so with foreach=None it runs
as one pass of torch's fused Adam kernel; the first few, un-rectified steps use foreach ops.

Options as torch.optim.RAdam: maximize (ascend: g -> -g), complex parameters (as their real views),
capturable (step-dependent scalars as tensors, no host synchronisation; also allowed on CPU), differentiable
(autograd through the step; runs the single-tensor path), and torch.compile of a whole training step (traces
the tensor-mode step: one graph for all t).

Example:
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = RAdam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    >>> model(torch.randn(8, 4)).pow(2).mean().backward(); opt.step(); opt.zero_grad()
"""

from __future__ import annotations

import functools
import math

import torch

from radam import _kernels as K

FIRST_STEP_RULES = ("sgd", "adam", "skip")  # Appendix C (Table 3): what may replace Algorithm 2 on the first steps


class RAdam(K.BucketedOptimizer):
    """Rectified Adam (Algorithm 2 of Liu et al., ICLR 2020); the maths is in the module docstring.

    Args (positional order as torch.optim.RAdam; the paper's options are keyword-only):
        params: parameters or parameter groups (every option below can be set per group).
        lr: alpha_t, >= 0 (a float or a 1-element tensor). betas: (b1, b2), each in [0, 1).
        eps: added to sqrt(v_t), >= 0.
        weight_decay: wd >= 0, decoupled (theta -= lr wd theta) unless decoupled_weight_decay=False (L2).
        decoupled_weight_decay: True (the paper's code; default here) or False (classic L2, torch's default).
        threshold: rectify when rho_t > threshold; 5 = original code / torch (default), 4 = the paper. >= 4.
        degenerated_to_sgd: before rectification, take the SGD-momentum step (True, the paper) or none (False).
        first_steps: (rule, n) pairs, rule in "sgd" | "adam" | "skip", that override the first steps
            (Appendix C, Table 3; see the module docstring). () = Algorithm 2 on every step.
        foreach: None = fastest path (fused kernel for rectified steps), True = foreach ops, False = a plain
            per-parameter loop (the reference).
        maximize: maximize the objective (as torch). capturable: step-dependent scalars as tensors on the
            parameters' device (CUDA graphs; works on CPU too). differentiable: autograd through the step.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = True, *, threshold: float = 5.0,
                 degenerated_to_sgd: bool = True, first_steps=(), foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, threshold=threshold,
                        degenerated_to_sgd=degenerated_to_sgd, decoupled_weight_decay=decoupled_weight_decay,
                        first_steps=first_steps, foreach=foreach, maximize=maximize, capturable=capturable,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    # torch.optim.RAdam state dicts: its threshold (rho_t > 5), SGD-momentum steps before it, L2 weight decay
    # unless its group says decoupled_weight_decay=True (then that value is kept).
    torch_missing_options = {"threshold": 5.0, "degenerated_to_sgd": True, "decoupled_weight_decay": False,
                             "first_steps": ()}

    def check_group(self, group: dict) -> None:
        _check_group(group)

    def bucket_step(self, bucket: K.Bucket, group: dict) -> None:
        _radam_bucket_step(bucket, group)

    def tensor_coefficients(self, t: torch.Tensor, group: dict) -> K.TensorCoefficients:
        return _radam_tensor_coefficients(t, group)


def _check_group(group: dict) -> None:
    """One-line ValueErrors naming the argument and the bad value."""
    K.check_adam_options(group)
    K.check_float("threshold", group["threshold"], low=4.0,
                  hint="; r_t has the factor rho_t - 4: the paper uses 4, the original code and torch 5")
    for name in ("degenerated_to_sgd", "decoupled_weight_decay"):
        K.check_bool(group, name)
    group["first_steps"] = _check_first_steps(group["first_steps"])


def _check_first_steps(first_steps) -> tuple[tuple[str, int], ...]:
    """(rule, n) pairs (any sequences, e.g. YAML lists) -> a tuple of (str, int) tuples."""
    fix = "; use e.g. first_steps=[['sgd', 4], ['adam', 4]] with rules " + " | ".join(FIRST_STEP_RULES)
    if isinstance(first_steps, (str, bytes)) or not hasattr(first_steps, "__iter__"):
        raise ValueError(f"first_steps must be a sequence of (rule, n) pairs, got {first_steps!r}{fix}")
    pairs = []
    for pair in first_steps:
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise ValueError(f"first_steps entry {pair!r} is not a (rule, n) pair{fix}")
        rule, n = pair
        if rule not in FIRST_STEP_RULES:
            raise ValueError(f"first_steps rule {rule!r} is unknown{fix}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"first_steps count {n!r} for rule {rule!r} must be an integer >= 0{fix}")
        pairs.append((str(rule), int(n)))
    return tuple(pairs)


def first_step_rule(first_steps: tuple[tuple[str, int], ...], t: int) -> str | None:
    """The rule that replaces Algorithm 2 at step t (1-based), or None once the first steps are over."""
    end = 0
    for rule, n in first_steps:
        end += n
        if t <= end:
            return rule
    return None


@functools.lru_cache(maxsize=64)
def _rho_and_rectification(b2: float, t: int) -> tuple[float, float]:
    """(rho_t, r_t) for step t, computed once per (b2, t) however many buckets and groups share them:
    rho_inf = 2 / (1 - b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t) and
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)), NaN where rho_t <= 4.
    (The same numbers as radam.theory, which is NumPy-vectorised; this file needs only the standard library.)"""
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho = rho_inf - 2.0 * t * b2 ** t / (1.0 - b2 ** t)
    if rho <= 4.0 or rho_inf <= 4.0:
        return rho, math.nan
    return rho, math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


def _radam_bucket_step(b: K.Bucket, group: dict) -> None:
    """Algorithm 2 for one bucket of parameters that share step t."""
    lr, wd = float(group["lr"]), group["weight_decay"]
    b1, b2 = group["betas"]
    decoupled, path = group["decoupled_weight_decay"], K.group_path(group)
    rule = first_step_rule(group["first_steps"], b.t)
    rho, r_t = _rho_and_rectification(b2, b.t)
    if rule == "adam" or (rule is None and rho > group["threshold"]):
        K.adam_form_step_(b, group, r=1.0 if rule == "adam" else r_t, path=path)
        return
    # Un-rectified phase (the first few steps, or a "sgd"/"skip" rule): moments, then SGD-momentum or nothing.
    foreach = path != "single"
    grads = K.prepare_grads(b.grads, b.params, maximize=group["maximize"], l2=0.0 if decoupled else wd,
                            foreach=foreach)
    K.update_first_moment_(b.exp_avgs, grads, b1, foreach)
    K.update_second_moment_(b.exp_avg_sqs, grads, b2, foreach)
    if rule == "sgd" or (rule is None and group["degenerated_to_sgd"]):
        K.momentum_step_(b.params, b.exp_avgs, lr / (1 - b1 ** b.t), lr * wd if decoupled else 0.0, foreach)


def _radam_tensor_coefficients(t: torch.Tensor, group: dict) -> K.TensorCoefficients:
    """Algorithm 2 (with first_steps) as tensors of t, branch-free: the same step as _radam_bucket_step."""
    lr, wd = group["lr"], group["weight_decay"]
    b1, b2 = group["betas"]
    bias1, bias2 = 1 - b1 ** t, 1 - b2 ** t
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho = rho_inf - 2 * t * b2 ** t / bias2
    rectified = rho > group["threshold"]
    if rho_inf > 4.0:
        r = torch.sqrt(torch.clamp((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho), min=0))
    else:  # rho_t < rho_inf <= 4: never rectified
        r = torch.zeros_like(t)
    sgd = ~rectified if group["degenerated_to_sgd"] else torch.zeros_like(rectified)
    start = 0
    for rule, n in group["first_steps"]:
        active = (t > start) & (t <= start + n)
        start += n
        if rule == "adam":
            rectified, r, sgd = rectified | active, torch.where(active, torch.ones_like(r), r), sgd & ~active
        elif rule == "sgd":
            rectified, sgd = rectified & ~active, sgd | active
        else:  # skip
            rectified, sgd = rectified & ~active, sgd & ~active
    moves = (rectified | sgd).to(t.dtype)  # (a bool mask times a Python float would be float32)
    decay = lr * wd * moves if group["decoupled_weight_decay"] else 0.0
    return K.TensorCoefficients(adaptive=lr * r * torch.sqrt(bias2) / bias1 * rectified,
                                momentum=lr / bias1 * sgd, decay=decay, first_moment_weight=1 - b1)
