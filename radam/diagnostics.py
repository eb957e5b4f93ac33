r"""Diagnostics of the adaptive learning rate while training: what Sec. 3 of the paper measures, per layer.

Paper: Liu, Jiang, He, Chen, Liu, Gao, Han, "On the Variance of the Adaptive Learning Rate and Beyond",
ICLR 2020, arXiv:1908.03265, Sec. 3 (Figs. 2-3: the gradient distribution distorted within ~10 updates),
Theorem 1 / Eq. 2 (Var[psi]), Sec. 4 / Algorithm 2 (rho_t, r_t).

Symbols (as in radam/radam.py and radam/theory.py): b2 = beta_2, eps, t = state "step" (1 after the first
step), v_t = state "exp_avg_sq", g_t = the gradient (p.grad, as the optimizer saw it), theta = the parameters.
For one key (a parameter group, or a module when parameter names are given) and its coordinates i:

    rho_inf = 2 / (1 - b2) - 1,    rho_t = rho_inf - 2 t b2^t / (1 - b2^t)                  (Sec. 4)
    r_t     = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))      (Alg. 2; NaN if rho_t <= 4)
    psi_i   = sqrt(1 - b2^t) / (sqrt(v_t,i) + eps)            (the adaptive lr, eps as in Algorithm 2)

    psi_median, psi_q25, psi_q75, psi_iqr = q75 - q25      quantiles of psi_i (linear interpolation, as numpy)
    psi_log_spread = sd_i(ln psi_i)                        (population s.d., natural log: scale-free)
    psi_cv2        = Var_i[psi_i] / Mean_i[psi_i]^2        (population moments: scale-free)

Eq. 2 next to the measurement. Theorem 1 assumes psi^2 ~ Scale-inv-chi^2(rho, tau^2) (the gradients of a
coordinate ~ N(0, sigma^2), tau^2 = 1/sigma^2), with rho = rho_t for Adam's EMA (Sec. 4). Then

    psi_var_eq2 = Var[psi] / tau^2          (Eq. 2, radam.theory.psi_variance(rho_t); inf for rho_t <= 2)
    E[psi^2] = tau^2 rho / (rho - 2),  so   psi_cv2_eq2 = Var[psi] / (E[psi^2] - Var[psi])    (tau-free)

psi_cv2 measures the spread across coordinates, which have different sigma_i: with psi_i = tau_i X_i, X_i iid
as above and independent of tau_i, Var/Mean^2 = (E[tau^2] / E[tau]^2)(1 + cv2_eq2) - 1 >= cv2_eq2. So the
measured value tends to psi_cv2_eq2 from above: the excess is the spread of the coordinates' scales, which
stays as rho_t grows, while the Eq. 2 part shrinks like 1 / (2 rho_t) (Eq. 5).

Update and gradient (Fig. 2's signal):

    update_ratio    = ||theta_t - theta_{t-1}|| / ||theta_{t-1}||     (needs snapshot() before opt.step())
    grad_small_frac = #{i : |g_i| < eps} / #i,    grad_abs_median = median_i |g_i|

Cost. Each key is measured on a fixed uniform sample (without replacement) of at most ``max_coords`` of its
coordinates, drawn once from a private generator (the global RNG is untouched, so training is unchanged);
keys with fewer coordinates are measured exactly. The statistics are then O(max_coords) per key whatever the
model size, computed in float64. The norms of update_ratio are over the same sample (an estimate of the full
ratio; exact when the key is not sampled). benchmarks/diagnostics_cost.py measures the cost against a step.

Supported: radam.RAdam, radam.Adam, torch.optim.Adam / AdamW / RAdam (amsgrad=False; real parameters).
The statistics are defined the same way for all of them: torch's Adam adds eps after the bias correction, so
its own adaptive lr differs from psi_i where sqrt(v_hat_t) is not >> eps (see radam/adam.py).

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    >>> opt = torch.optim.Adam(model.parameters())
    >>> diag = Diagnostics(opt, model.named_parameters())
    >>> model(torch.randn(16, 4)).pow(2).mean().backward()
    >>> diag.snapshot(); opt.step()
    >>> sorted(diag.measure())
    ['0', '1']
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Iterable

import torch

from radam.adam import Adam
from radam.radam import RAdam

SUPPORTED = (RAdam, Adam, torch.optim.Adam, torch.optim.AdamW, torch.optim.RAdam)
STATS = ("t", "rho_t", "r_t", "coords", "sampled", "psi_median", "psi_q25", "psi_q75", "psi_iqr",
         "psi_log_spread", "psi_cv2", "psi_cv2_eq2", "psi_var_eq2", "update_ratio", "grad_small_frac",
         "grad_abs_median")


@dataclass
class _Key:
    """One measured key: its parameters and, per parameter, the flat indices of its sampled coordinates."""

    name: str
    params: list[torch.Tensor]
    index: list[torch.Tensor | None] = field(default_factory=list)  # None: all of the parameter's coordinates
    coords: int = 0


def module_key(name: str, depth: int | None = None) -> str:
    """The module a parameter name belongs to ("enc.layers.0.fc1.weight" -> "enc.layers.0.fc1"), cut to its
    first ``depth`` components; a top-level parameter ("weight") is its own key."""
    parts = name.split(".")
    parts = parts[:-1] or parts
    return ".".join(parts if depth is None else parts[:depth])


class Diagnostics:
    """Measures rho_t, r_t, psi_t's distribution, the update ratio and small gradients of ``optimizer``.

    Args:
        optimizer: one of SUPPORTED, amsgrad off.
        named_parameters: (name, parameter) pairs, e.g. ``model.named_parameters()``: one key per module
            (see module_key). None: one key per parameter group ("group0", "group1", ...).
        depth: with names, keep the first ``depth`` components of the module path (e.g. 3 -> "encoder.layers.0").
        max_coords: at most this many coordinates per key are sampled (>= 1); see the module docstring.
        seed: seed of the private generator that draws the samples.

    Use: ``snapshot()`` before ``optimizer.step()`` (only on the updates you measure), ``measure()`` after it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, named_parameters: Iterable | None = None, *,
                 depth: int | None = None, max_coords: int = 1024, seed: int = 0):
        _check_optimizer(optimizer)
        if not (isinstance(max_coords, int) and max_coords >= 1):
            raise ValueError(f"max_coords must be an integer >= 1 (e.g. 1024); got {max_coords!r}")
        if depth is not None and not (isinstance(depth, int) and depth >= 1):
            raise ValueError(f"depth must be None or an integer >= 1; got {depth!r}")
        self.optimizer = optimizer
        self.keys = _keys(optimizer, named_parameters, depth)
        generator = torch.Generator().manual_seed(seed)
        for key in self.keys:
            _draw_sample(key, max_coords, generator)
        self._before: list[list[torch.Tensor]] | None = None

    def snapshot(self) -> None:
        """Remember the sampled coordinates of theta_{t-1}; call it right before ``optimizer.step()``."""
        self._before = [[_sample(p, i).clone() for p, i in zip(k.params, k.index)] for k in self.keys]

    def measure(self) -> dict[str, dict[str, float]]:
        """key -> {stat: value} (STATS) for every key whose parameters have optimizer state; call it after
        ``optimizer.step()``. update_ratio is None unless snapshot() was called before that step."""
        before, self._before = self._before, None
        groups = {p: g for g in self.optimizer.param_groups for p in g["params"]}
        rows = [_gather(k, self.optimizer.state, groups, before[n] if before else None) for n, k in enumerate(self.keys)]
        rows = [r for r in rows if r is not None]
        return dict(zip([r.name for r in rows], _statistics(rows))) if rows else {}


# ------------------------------------------------------------------------------------------------- set-up
def _check_optimizer(optimizer) -> None:
    if not isinstance(optimizer, SUPPORTED):
        names = ", ".join(f"{c.__module__}.{c.__name__}" for c in SUPPORTED)
        raise TypeError(f"Diagnostics reads Adam-family state (exp_avg_sq, step); got {type(optimizer).__name__}, "
                        f"supported: {names}")
    for group in optimizer.param_groups:
        if group.get("amsgrad"):
            raise ValueError("Diagnostics does not support amsgrad=True (its step divides by max_exp_avg_sq, "
                             "not v_t); use amsgrad=False")
        if any(p.is_complex() for p in group["params"]):
            raise ValueError("Diagnostics supports real parameters only; measure the complex ones' real views")


def _keys(optimizer, named_parameters, depth) -> list[_Key]:
    if named_parameters is None:
        return [_Key(f"group{i}", list(g["params"])) for i, g in enumerate(optimizer.param_groups)]
    optimized = {p for g in optimizer.param_groups for p in g["params"]}
    keys: dict[str, _Key] = {}
    for name, p in named_parameters:
        if p in optimized:
            keys.setdefault(module_key(name, depth), _Key(module_key(name, depth), [])).params.append(p)
    if not keys:
        raise ValueError("none of the named parameters is in the optimizer; pass the model the optimizer steps")
    return list(keys.values())


def _draw_sample(key: _Key, max_coords: int, generator: torch.Generator) -> None:
    """A uniform sample of the key's coordinates (all of them if there are at most max_coords), split into
    sorted flat indices per parameter."""
    sizes = [p.numel() for p in key.params]
    key.coords = sum(sizes)
    if key.coords <= max_coords:
        key.index = [None] * len(sizes)  # every coordinate
        return
    chosen = torch.randperm(key.coords, generator=generator)[:max_coords].sort().values
    bounds = [0, *itertools.accumulate(sizes)]
    key.index = [chosen[(chosen >= lo) & (chosen < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:])]


def _sample(t: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    return flat if index is None else flat.index_select(0, index)


# ---------------------------------------------------------------------------------------------- measuring
@dataclass
class _Row:
    """One key's sampled coordinates at step t: v_t, theta_t, theta_{t-1} (or None) and |g_t| (or None)."""

    name: str
    b2: float
    eps: float
    t: float
    coords: int
    v: torch.Tensor
    theta: torch.Tensor
    before: torch.Tensor | None
    grad: torch.Tensor | None


def _gather(key: _Key, state, groups, before) -> _Row | None:
    v, theta, old, grad, hyper = [], [], [], [], set()
    for j, (p, idx) in enumerate(zip(key.params, key.index)):
        s = state.get(p, {})
        if "exp_avg_sq" not in s or (idx is not None and len(idx) == 0):
            continue  # not stepped yet (or no sampled coordinate here)
        hyper.add((float(groups[p]["betas"][1]), float(s["step"]), float(groups[p]["eps"])))
        v.append(_sample(s["exp_avg_sq"], idx))
        theta.append(_sample(p, idx))
        if before is not None:
            old.append(before[j])
        if p.grad is not None:
            grad.append(_sample(p.grad, idx))
    if not v:
        return None
    if len(hyper) > 1:
        raise ValueError(f"key {key.name!r} mixes parameters with different (beta2, step, eps) {sorted(hyper)}; "
                         f"measure per group (no names) or choose a depth that separates them")
    (b2, t, eps), = hyper
    cat = lambda xs: torch.cat(xs).double()  # noqa: E731
    return _Row(key.name, b2, eps, t, key.coords, cat(v), cat(theta), cat(old) if before is not None else None,
                cat(grad).abs() if len(grad) == len(v) else None)


def _padded(columns: list[torch.Tensor | None], width: int) -> torch.Tensor:
    """keys x width float64 matrix, NaN where a key has fewer (or no) coordinates."""
    empty = torch.empty(0, dtype=torch.float64)
    out = torch.nn.utils.rnn.pad_sequence([empty if c is None else c for c in columns], batch_first=True,
                                          padding_value=math.nan)
    return torch.nn.functional.pad(out, (0, width - out.shape[1]), value=math.nan)


def _statistics(rows: list[_Row]) -> list[dict[str, float | None]]:
    """The statistics of every key at once: one (keys x coordinates) matrix per quantity, NaN-padded."""
    width = max(len(r.v) for r in rows)
    corr = torch.tensor([_bias_correction_sqrt(r.b2, r.t) for r in rows], dtype=torch.float64)[:, None]
    eps = torch.tensor([r.eps for r in rows], dtype=torch.float64)[:, None]
    psi = corr / (_padded([r.v for r in rows], width).sqrt() + eps)
    sampled = (~psi.isnan()).sum(1)
    psi = psi.where(psi.isfinite(), math.nan)  # v = 0 with eps = 0: psi is infinite, left out
    q25, q50, q75 = torch.nanquantile(psi, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=1)
    mean = psi.nanmean(1)
    cv2 = (psi - mean[:, None]).square().nanmean(1) / mean.square()
    log_psi = psi.log()
    log_spread = (log_psi - log_psi.nanmean(1)[:, None]).square().nanmean(1).sqrt()
    columns = {"sampled": sampled.double(), "psi_median": q50, "psi_q25": q25, "psi_q75": q75, "psi_iqr": q75 - q25,
               "psi_log_spread": log_spread, "psi_cv2": cv2}
    columns["update_ratio"] = _update_ratios(rows, width)
    columns.update(_grad_statistics(rows, width, eps))
    values = {k: v.tolist() for k, v in columns.items()}
    out = []
    for i, r in enumerate(rows):
        stats = {"t": r.t, "coords": float(r.coords), **_theory(r.b2, r.t), **{k: v[i] for k, v in values.items()}}
        if r.before is None:
            stats["update_ratio"] = None
        if r.grad is None:
            stats["grad_small_frac"] = stats["grad_abs_median"] = None
        out.append({k: stats[k] for k in STATS})
    return out


def _update_ratios(rows: list[_Row], width: int) -> torch.Tensor:
    theta = _padded([r.theta for r in rows], width)
    before = _padded([r.before for r in rows], width)
    return (theta - before).square().nansum(1).sqrt() / before.square().nansum(1).sqrt()


def _grad_statistics(rows: list[_Row], width: int, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    g = _padded([r.grad for r in rows], width)
    counted = (~g.isnan()).sum(1).clamp(min=1)
    return {"grad_small_frac": (g < eps).sum(1) / counted, "grad_abs_median": g.nanquantile(0.5, dim=1)}


def _bias_correction_sqrt(b2: float, t: float) -> float:
    """sqrt(1 - b2^t) without cancellation for b2 near 1."""
    return math.sqrt(-math.expm1(t * math.log(b2))) if b2 > 0 else 1.0


@functools.lru_cache(maxsize=64)  # every key of one step shares (b2, t)
def _theory(b2: float, t: float) -> dict[str, float]:
    from radam import theory  # NumPy, imported on first use (the optimizers need only torch)

    rho = float(theory.rho_t(b2, t))
    var = float(theory.psi_variance(rho)) if rho > 2 else math.inf  # Var[psi] is infinite for rho <= 2
    second_moment = rho / (rho - 2) if rho > 2 else math.inf       # E[psi^2] / tau^2
    cv2 = var / (second_moment - var) if rho > 2 else math.inf
    return {"rho_t": rho, "r_t": float(theory.rectification(b2, t)), "psi_var_eq2": var, "psi_cv2_eq2": cv2}
