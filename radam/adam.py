r"""Adam as run for the baselines of the RAdam paper (fairseq's arithmetic), with Adam-2k's freeze.

Paper: Liu, Jiang, He, Chen, Liu, Gao, Han, "On the Variance of the Adaptive Learning Rate and Beyond",
ICLR 2020, arXiv:1908.03265, Sec. 3 (Adam-vanilla, Adam-warmup, Adam-2k, Adam-eps). Original code:
https://github.com/LiyuanLucasLiu/RAdam (nmt/my_module/adam2.py, built on fairseq's optim/adam.py).

Symbols: alpha = lr, b1, b2 = betas, eps, wd = weight_decay, N = freeze_steps, t = state "step" (global: it
counts the frozen steps too), m_t / v_t = state "exp_avg" / "exp_avg_sq".

For t = 1, 2, ...:

    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    if t <= N:                                  (Adam-2k: only v moves; theta, m and weight decay are frozen)
        m_t = m_{t-1},  theta_t = theta_{t-1}
    else:
        theta <- theta (1 - alpha wd)                                           (decoupled weight decay)
        m_t = b1 m_{t-1} + (1 - b1) g_t
        theta_t = theta - alpha * sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)

The bias corrections use the global t, as the original runs did. For v this is exact: v has averaged every
gradient since t = 1. For m it is not: after the freeze m restarts from 0 and at step N + k holds
(1 - b1^k) of its steady-state weight, but it is divided by (1 - b1^(N+k)) ~= 1. So the first updates after
the freeze are damped by (1 - b1^k) (0.1 at k = 1, 0.65 at k = 10, 0.99 at k = 44 for b1 = 0.9): a short
implicit warmup of the momentum, on top of a v estimated from N gradients (with b2 = 0.999 and N = 2000,
1 - b2^N = 0.86, rho_N ~= 1374: the variance of the adaptive lr is already small, which is the paper's point).

Why radam.Adam(eps=1e-4) is not torch.optim.AdamW(eps=1e-4) early in training. Here (and in fairseq) eps is
added to sqrt(v_t) before the bias correction:
    m_hat / ((sqrt(v_t) + eps) / sqrt(1 - b2^t)) = m_hat / (sqrt(v_hat_t) + eps / sqrt(1 - b2^t)),
torch adds eps after it: m_hat / (sqrt(v_hat_t) + eps). So torch's step is this step with eps replaced by
eps * sqrt(1 - b2^t): at t = 1 and b2 = 0.999 that is eps * 0.0316, i.e. torch with eps=1e-4 behaves like
fairseq with eps ~= 3e-6 on the first step, and the two only meet for t >> 1/(1 - b2). Adam-eps (paper Sec. 3)
relies on the large eps damping exactly those first steps, so it needs this arithmetic. With eps = 0 both are
the same algorithm (decoupled weight decay alpha wd, as torch.optim.AdamW). With foreach=None the updating
steps run through torch's fused AdamW kernel with eps' = eps / sqrt(1 - b2^t) (radam/_kernels.py).

Options as torch.optim.AdamW: the positional order (params, lr, betas, eps, weight_decay, amsgrad; amsgrad
must be False), maximize, complex parameters, capturable, differentiable, torch.compile (see radam/_kernels.py).

Example:
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = Adam(model.parameters(), lr=3e-4, weight_decay=1e-4, freeze_steps=2000)   # Adam-2k
"""

from __future__ import annotations

import torch

from radam import _kernels as K


class Adam(K.BucketedOptimizer):
    """Adam with fairseq's arithmetic and decoupled weight decay; the maths is in the module docstring.

    Args (positional order as torch.optim.AdamW; freeze_steps and the torch flags are keyword-only):
        params: parameters or parameter groups (every option can be set per group).
        lr: alpha >= 0. betas: (b1, b2), each in [0, 1). eps: added to sqrt(v_t) before bias correction, >= 0.
        weight_decay: decoupled, theta -= lr wd theta on updating steps; >= 0.
        amsgrad: only False (accepted so that torch's positional order works).
        freeze_steps: N >= 0; Adam-2k uses N = 2000: the first N steps only update v.
        foreach: None = fastest path (fused kernel), True = foreach ops, False = per-parameter loop.
        maximize, capturable, differentiable: as torch.optim.AdamW (see radam/_kernels.py).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, freeze_steps: int = 0,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False):
        if amsgrad is not False:
            raise ValueError(f"amsgrad={amsgrad!r} is not supported: radam.Adam is fairseq's Adam without the "
                             "AMSGrad maximum; use torch.optim.AdamW(amsgrad=True) for it")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, freeze_steps=freeze_steps,
                        foreach=foreach, maximize=maximize, capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults)

    torch_missing_options = {"freeze_steps": 0}  # torch.optim.Adam(W) state dicts: plain Adam

    def check_group(self, group: dict) -> None:
        _check_group(group)

    def bucket_step(self, bucket: K.Bucket, group: dict) -> None:
        _adam_bucket_step(bucket, group)

    def tensor_coefficients(self, t: torch.Tensor, group: dict) -> K.TensorCoefficients:
        return _adam_tensor_coefficients(t, group)


def _check_group(group: dict) -> None:
    """One-line ValueErrors naming the argument and the bad value."""
    K.check_adam_options(group)
    if group.get("amsgrad", False):  # a torch.optim.Adam(W) state dict with amsgrad=True
        raise ValueError("amsgrad=True is not supported by radam.Adam; use torch.optim.AdamW(amsgrad=True)")
    n = group["freeze_steps"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"Invalid freeze_steps: {n!r} (need an integer >= 0, e.g. 2000 for Adam-2k)")


def _adam_bucket_step(b: K.Bucket, group: dict) -> None:
    """One step for a bucket of parameters sharing step t: frozen (v only) or the full Adam-form step."""
    path = K.group_path(group)
    if b.t <= group["freeze_steps"]:  # g^2 is the same for maximize
        K.update_second_moment_(b.exp_avg_sqs, b.grads, group["betas"][1], foreach=path != "single")
        return
    K.adam_form_step_(b, group, r=1.0, path=path)


def _adam_tensor_coefficients(t: torch.Tensor, group: dict) -> K.TensorCoefficients:
    """The same step as _adam_bucket_step as tensors of t, branch-free (frozen steps: zero coefficients)."""
    lr, wd = group["lr"], group["weight_decay"]
    b1, b2 = group["betas"]
    updating = (t > group["freeze_steps"]).to(t.dtype)  # (a bool mask times a Python float would be float32)
    return K.TensorCoefficients(adaptive=lr * torch.sqrt(1 - b2 ** t) / (1 - b1 ** t) * updating,
                                momentum=0.0, decay=lr * wd * updating, first_moment_weight=(1 - b1) * updating)
