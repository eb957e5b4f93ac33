"""The variance analysis behind RAdam: rho_t, the rectification term r_t, Var[psi] and its simulation.

Paper: Liu, Jiang, He, Chen, Liu, Gao, Han, "On the Variance of the Adaptive Learning Rate and Beyond",
ICLR 2020, arXiv:1908.03265, Sections 3-4, Theorem 1, Eqs. 2 and 5, Algorithm 2, Figs. 8 and 9.
Original code: https://github.com/LiyuanLucasLiu/RAdam (radam.py; the simulation behind README "Figure 1").

Symbols (as in the paper):
    beta2 (b2)      second-moment decay rate of Adam
    psi_t           the adaptive learning rate, psi_t = sqrt((1 - b2^t) / v_t)
    rho             degrees of freedom of the scaled inverse chi-square law assumed for psi^2
    rho_inf         rho_inf = 2 / (1 - b2) - 1
    rho_t           rho_t = rho_inf - 2 t b2^t / (1 - b2^t)     (t = 1, 2, ...; the step of Algorithm 2)
    r_t             r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    tau^2 = 1/sigma^2   scale of psi^2 (tau = 1 throughout the paper's figures)

Every function takes Python scalars or numpy arrays (any shape; broadcasting applies) and returns numpy
float64 values of the broadcast shape (a numpy scalar for scalar inputs). Only numpy is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

try:
    import numpy as np
except ModuleNotFoundError as err:  # the optimizers need only torch; this module needs NumPy too
    raise ModuleNotFoundError("radam.theory needs NumPy: pip install numpy (or radam-optim[theory])") from err

# Above this x = rho / 2, ln Gamma(x + 1/2) - ln Gamma(x) is summed from its asymptotic series; below it, the
# recurrence Gamma(x + 1) = x Gamma(x) shifts x up to this value first (exact up to rounding).
_SERIES_MIN_X = 10.0
# Bernoulli numbers B_2, B_4, ..., B_18 (exact rationals, as floats).
_BERNOULLI_EVEN = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798)


# ----------------------------------------------------------------------------------------------- validation
def _check_beta2(beta2) -> np.ndarray:
    b2 = np.asarray(beta2, dtype=np.float64)
    if np.any(~np.isfinite(b2)) or np.any(b2 < 0.0) or np.any(b2 >= 1.0):
        raise ValueError(f"beta2 must lie in [0, 1) (e.g. 0.999); got {beta2!r}")
    return b2


def _check_step(step) -> np.ndarray:
    t = np.asarray(step, dtype=np.float64)
    if np.any(~np.isfinite(t)) or np.any(t < 1) or np.any(t != np.floor(t)):
        raise ValueError(f"step must be an integer >= 1 (the first update is t = 1); got {step!r}")
    return t


def _check_rho(rho, lower: float, why: str) -> np.ndarray:
    r = np.asarray(rho, dtype=np.float64)
    if np.any(~np.isfinite(r)) or np.any(r <= lower):
        raise ValueError(f"rho must be finite and > {lower:g} ({why}); got {rho!r}")
    return r


def _one_minus_power(b2: np.ndarray, t: np.ndarray) -> np.ndarray:
    """1 - b2^t without cancellation for b2 close to 1 (b2 = 0 gives 1)."""
    with np.errstate(divide="ignore"):
        log_b2 = np.log(b2)  # -inf for b2 = 0, and expm1(-inf) = -1
    return -np.expm1(t * log_b2)


# ------------------------------------------------------------------------------------------------ rho, r_t
def rho_inf(beta2):
    """Maximum length of the approximating simple moving average: rho_inf = 2 / (1 - b2) - 1  (Sec. 4).

    b2 = 0.999 -> 1999. rho_inf <= 4 exactly when b2 <= 0.6: then no step is ever rectified (RAdam is
    SGD with momentum throughout, Algorithm 2).
    """
    b2 = _check_beta2(beta2)
    return (2.0 / (1.0 - b2) - 1.0)[()]


def rho_t(beta2, step):
    """Length of the SMA with the EMA's centre of mass at step t: rho_t = rho_inf - 2 t b2^t / (1 - b2^t).

    Sec. 4 / Algorithm 2, with t = 1 for the first update. rho_1 = 1 for every b2, and rho_t increases
    monotonically to rho_inf. b2 = 0.999: rho_4 = 3.9975, rho_5 = 4.996, rho_6 = 5.994.
    """
    b2, t = _check_beta2(beta2), _check_step(step)
    return (rho_inf(b2) - 2.0 * t * np.power(b2, t) / _one_minus_power(b2, t))[()]


def rectification(beta2, step):
    """Variance rectification term of Algorithm 2 (Sec. 4):

        r_t = sqrt( (rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t) )

    r_t^2 = Var_approx[psi | rho_inf] / Var_approx[psi | rho_t] with Var_approx the Eq. 5 approximation, so
    r_t psi_t has (approximately) the variance of the converged adaptive learning rate.
    Defined only where rho_t > 4: the result is NaN at the steps with rho_t <= 4 (the un-rectified phase,
    where Algorithm 2 takes an SGD-momentum step), and at every step when rho_inf <= 4 (b2 <= 0.6).
    b2 = 0.999: r_6 = 0.0258, r_100 = 0.215, r_1000 = 0.645, r_4000 = 0.962.
    """
    r_inf, r = rho_inf(beta2), np.asarray(rho_t(beta2, step))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (r - 4.0) * (r - 2.0) * r_inf / ((r_inf - 4.0) * (r_inf - 2.0) * r)
        out = np.where((r > 4.0) & (r_inf > 4.0), np.sqrt(ratio), np.nan)
    return out[()]


def first_rectified_step(beta2: float, threshold: float = 4.0) -> int | None:
    """Smallest step t >= 1 with rho_t > threshold, or None when no step ever qualifies (rho_inf <= threshold).

    threshold = 4 is the paper's rule (Algorithm 2: "if rho_t > 4"); the original code and optax use
    rho_t >= 5, torch.optim.RAdam rho_t > 5 (the two differ only if rho_t == 5 exactly).
    b2 = 0.999: 5 with threshold 4, 6 with threshold 5. b2 <= 0.6 (rho_inf <= 4) with threshold 4: None.
    rho_t increases monotonically in t, so the answer is found by doubling then bisection.
    """
    b2 = float(_check_beta2(beta2))
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number (the paper uses 4); got {threshold!r}")
    if rho_inf(b2) <= threshold:
        return None
    hi = 1
    while rho_t(b2, hi) <= threshold:
        hi *= 2
    lo = hi // 2  # rho_t(lo) <= threshold < rho_t(hi), or lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rho_t(b2, mid) > threshold:
            hi = mid
        else:
            lo = mid
    return hi


# ---------------------------------------------------------------------------------------------- Var[psi]
def _log_gamma_half_ratio_correction(x: np.ndarray) -> np.ndarray:
    """G(x) = ln Gamma(x + 1/2) - ln Gamma(x) - (1/2) ln x, for x > 1, to full float64 accuracy.

    For x >= 10 the asymptotic series (from ln Gamma(x + a) ~ (x + a - 1/2) ln x - x + ln(2 pi)/2
    + sum_k (-1)^k B_k(a) / (k (k-1) x^(k-1)) with B_k(1/2) = (2^(1-k) - 1) B_k):
        G(x) = sum_{j>=1} (2^(1-2j) - 2) B_2j / (2j (2j-1) x^(2j-1)) = -1/(8x) + 1/(192 x^3) + ...
    Nine terms leave a remainder below 1e-17 at x = 10. Smaller x are shifted up with
        G(x) = G(x + n) + (1/2) ln((x + n) / x) - sum_{k<n} ln(1 + 1 / (2 (x + k))).
    """
    n = np.maximum(np.ceil(_SERIES_MIN_X - x), 0.0)  # shifts needed, 0 for x >= 10
    y = x + n
    series = np.zeros_like(y)
    for j, bernoulli in enumerate(_BERNOULLI_EVEN, start=1):
        series += (2.0 ** (1 - 2 * j) - 2.0) * bernoulli / (2 * j * (2 * j - 1) * y ** (2 * j - 1))
    shift = 0.5 * np.log(y / x)
    for k in range(int(n.max(initial=0.0))):
        shift -= np.where(k < n, np.log1p(0.5 / (x + k)), 0.0)
    return series + shift


def psi_variance(rho, tau: float = 1.0):
    """Var[psi] when psi^2 ~ Scale-inv-chi^2(rho, tau^2): Theorem 1, Eq. 2,

        Var[psi] = tau^2 ( rho / (rho - 2) - rho 2^(2 rho - 5) / pi * B((rho - 1)/2, (rho - 1)/2)^2 ),

    with B the Beta function. By Legendre's duplication formula the second term equals
    (rho/2) (Gamma((rho-1)/2) / Gamma(rho/2))^2; with x = rho/2 and G(x) = ln Gamma(x+1/2) - ln Gamma(x)
    - ln(x)/2 (see _log_gamma_half_ratio_correction) this is evaluated without cancellation as

        Var[psi] / tau^2 = x / (4 (x - 1)(x - 1/2)^2) - x^2 / (x - 1/2)^2 * expm1(2 G(x)),

    a sum of two positive terms (G < 0), accurate to ~1e-15 relative for every rho > 2 (a naive lgamma
    difference of the two ~1 terms loses ~5 digits at rho = 1e5). The paper states Theorem 1 for rho > 4;
    the variance is finite, and Eq. 2 holds, for rho > 2. Var[psi] decreases monotonically in rho.
    tau = 1: rho = 5 -> 0.25195606140537479, rho = 1999 -> 2.5059493183033063e-4.
    """
    x = 0.5 * _check_rho(rho, 2.0, "Var[psi] is infinite for rho <= 2")
    exact_part = x / (4.0 * (x - 1.0) * (x - 0.5) ** 2)  # rho/(rho-2) - x^2/(x-1/2)^2, in closed form
    series_part = -(x**2) / (x - 0.5) ** 2 * np.expm1(2.0 * _log_gamma_half_ratio_correction(x))
    return (tau**2 * (exact_part + series_part))[()]


def psi_variance_approx(rho, tau: float = 1.0):
    """First-order approximation of Eq. 2 (Eq. 5):  Var[psi] ~= rho / (2 (rho - 2)(rho - 4) sigma^2),
    tau^2 = 1 / sigma^2. Defined for rho > 4; its relative error to Eq. 2 vanishes like O(1/rho).
    tau = 1: rho = 5 -> 0.833 (Eq. 2: 0.252), rho = 500 -> 0.0010121 (Eq. 2: 0.0010075).
    """
    r = _check_rho(rho, 4.0, "Eq. 5 has a pole at rho = 4")
    return (tau**2 * r / (2.0 * (r - 2.0) * (r - 4.0)))[()]


def psi_variance_delta(beta2, step, mu=0.0):
    """First-order (delta-method) Var[psi_t] for Adam's bias-corrected EMA of g_i^2 with g_i ~ N(mu, 1):

        v_hat_t = sum_{i<=t} w_i g_i^2,   w_i = (1 - b2) b2^(t-i) / (1 - b2^t),   psi_t = v_hat_t^(-1/2),
        S_t = sum_i w_i^2 = (1 - b2)(1 + b2^t) / ((1 + b2)(1 - b2^t)),
        Var[psi_t] ~= Var[g^2] S_t / (4 E[g^2]^3) = (2 + 4 mu^2) S_t / (4 (1 + mu^2)^3).

    Not in the paper: it is the analytic expectation the Fig. 9 simulation is checked against. Accurate when
    the relative spread of v_hat_t is small (large t, or large mu); for mu = 0 it equals Eq. 5's leading
    term 1 / (2 rho) with rho = 1 / S_t (-> rho_inf = (1 + b2)/(1 - b2) as t -> inf).
    """
    b2, t = _check_beta2(beta2), _check_step(step)
    mu = np.asarray(mu, dtype=np.float64)
    s_t = (1.0 - b2) * (1.0 + np.power(b2, t)) / ((1.0 + b2) * _one_minus_power(b2, t))
    return ((2.0 + 4.0 * mu**2) * s_t / (4.0 * (1.0 + mu**2) ** 3))[()]


# ------------------------------------------------------------------------------------- Fig. 9 simulation
@dataclass(frozen=True)
class PsiSimulation:
    """Variance across trajectories, per step. All arrays have shape (steps,); entry i is step t = i + 1."""

    t: np.ndarray  # (steps,) 1, 2, ..., steps
    var_psi: np.ndarray  # (steps,) sample variance of psi_t
    var_rectified: np.ndarray  # (steps,) sample variance of r_t psi_t = r_t^2 var_psi; NaN where rho_t <= 4


def simulate_psi_variance(
    mu: float = 0.0,
    beta2: float = 0.999,
    trajectories: int = 5000,
    steps: int = 6000,
    seed: int = 0,
    chunk: int = 500,
) -> PsiSimulation:
    """Monte-Carlo variance of psi_t and r_t psi_t (paper Fig. 9, README "Figure 1").

    Each trajectory draws g_t ~ N(mu, 1) i.i.d., runs v_t = b2 v_{t-1} + (1 - b2) g_t^2 from v_0 = 0 and
    forms psi_t = sqrt((1 - b2^t) / v_t); the variance is taken across trajectories at each t (ddof = 1).
    Vectorized over trajectories, float64, `chunk` steps at a time (memory: chunk x trajectories floats).
    The same seed gives the same noise z for every mu (g = mu + z): common random numbers.
    5000 trajectories x 6000 steps take about a second per mu on one CPU core.
    """
    for name, value in (("trajectories", trajectories), ("steps", steps), ("chunk", chunk)):
        if int(value) != value or value < 1 or (name == "trajectories" and value < 2):
            raise ValueError(f"{name} must be an integer >= {2 if name == 'trajectories' else 1}; got {value!r}")
    if not math.isfinite(mu):
        raise ValueError(f"mu must be a finite number; got {mu!r}")
    b2 = float(_check_beta2(beta2))
    rng = np.random.default_rng(seed)
    t = np.arange(1, steps + 1)  # (T,)
    bias_correction = _one_minus_power(np.float64(b2), t)  # (T,) 1 - b2^t
    v = np.zeros(trajectories)  # (N,)
    var_psi = np.empty(steps)  # (T,)
    for start in range(0, steps, chunk):
        stop = min(start + chunk, steps)
        g2 = (mu + rng.standard_normal((stop - start, trajectories))) ** 2  # (C, N)
        psi = np.empty_like(g2)  # (C, N)
        for i in range(stop - start):
            v = b2 * v + (1.0 - b2) * g2[i]
            psi[i] = np.sqrt(bias_correction[start + i] / v)
        var_psi[start:stop] = psi.var(axis=1, ddof=1)
    return PsiSimulation(t=t, var_psi=var_psi, var_rectified=rectification(b2, t) ** 2 * var_psi)
