"""radam.theory against the values of PAPER.md, an independent mpmath evaluation, and its own simulation."""

import math

import mpmath
import numpy as np
import pytest

from radam.theory import (
    first_rectified_step,
    psi_variance,
    psi_variance_approx,
    psi_variance_delta,
    rectification,
    rho_inf,
    rho_t,
    simulate_psi_variance,
)


def eq2_mpmath(rho: float, digits: int = 60) -> float:
    """Eq. 2 (tau = 1) straight from the paper's Beta-function form, in `digits`-digit arithmetic."""
    with mpmath.workdps(digits):
        r = mpmath.mpf(rho)
        beta = mpmath.beta((r - 1) / 2, (r - 1) / 2)
        return float(r / (r - 2) - r * mpmath.mpf(2) ** (2 * r - 5) / mpmath.pi * beta**2)


# ------------------------------------------------------------------------------------------ rho_t, r_t
def test_rho_values_from_paper():
    assert rho_inf(0.999) == pytest.approx(1999.0, rel=1e-12)
    assert rho_t(0.999, 1) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(rho_t(0.999, [4, 5, 6]), [3.9975, 4.996, 5.994], atol=5e-4)
    assert rho_t(0.999, 10**6) == pytest.approx(1999.0, rel=1e-12)


def test_rho_t_increases_to_rho_inf():
    r = rho_t(0.999, np.arange(1, 20001))
    assert np.all(np.diff(r) > 0) and r[-1] < rho_inf(0.999)


def test_rectification_values_from_paper():
    got = rectification(0.999, [6, 100, 1000, 2000, 4000])
    np.testing.assert_allclose(got, [0.0258, 0.215, 0.645, 0.828, 0.962], atol=6e-4)
    assert rectification(0.999, 10**7) == pytest.approx(1.0, abs=1e-12)


def test_rectification_is_nan_where_rho_t_at_most_4():
    r = rectification(0.999, [1, 2, 3, 4, 5])
    assert np.all(np.isnan(r[:4])) and r[4] > 0
    assert np.all(np.isnan(rectification(0.6, [1, 10, 10**6])))


def test_first_rectified_step_paper_and_code_rules():
    assert first_rectified_step(0.999, 4) == 5  # paper: rho_t > 4
    assert first_rectified_step(0.999, 5) == 6  # original code: rho_t >= 5
    for b2 in (0.9, 0.99, 0.9995):
        t = first_rectified_step(b2)
        assert rho_t(b2, t) > 4 and (t == 1 or rho_t(b2, t - 1) <= 4)


@pytest.mark.parametrize("b2", [0.0, 0.3, 0.6])
def test_no_rectified_step_when_beta2_at_most_0_6(b2):
    assert rho_inf(b2) <= 4
    assert first_rectified_step(b2) is None  # None signals "never rectified": RAdam is SGD-momentum


def test_first_rectified_step_just_above_0_6_is_large_but_found():
    t = first_rectified_step(0.6001)
    assert rho_t(0.6001, t) > 4 >= rho_t(0.6001, t - 1)


# ----------------------------------------------------------------------------------------- Eq. 2, Eq. 5
@pytest.mark.parametrize(
    "rho, expected",
    [
        (5, 0.25195606140537479),
        (1999, 0.00025059493183033063),
        (1e5, 5.0001875051876254e-6),
        (1e6, 5.0000187500518751e-7),
    ],
)
def test_eq2_matches_60_digit_values(rho, expected):
    # the 17 printed digits are the 60-digit value rounded; float64 holds ~16, so allow a few ulp
    assert psi_variance(rho) == pytest.approx(expected, rel=2e-15, abs=0)


def test_eq2_matches_mpmath_across_4_to_1e6():
    rho = np.exp(np.random.default_rng(0).uniform(np.log(4.0 + 1e-9), np.log(1e6), 150))
    rho = np.concatenate([rho, [4.001, 9.99, 19.999, 20.0, 20.001, 21.0, 1e6]])
    ours = psi_variance(rho)
    reference = np.array([eq2_mpmath(r) for r in rho])
    np.testing.assert_allclose(ours, reference, rtol=1e-13, atol=0)


def test_eq2_scalar_array_and_tau():
    assert isinstance(psi_variance(10.0), float) and psi_variance(np.array([10.0, 20.0])).shape == (2,)
    assert psi_variance(10.0, tau=3.0) == pytest.approx(9 * psi_variance(10.0), rel=1e-15)


def test_eq2_decreases_monotonically_theorem_1():
    rho = np.geomspace(2.001, 1e6, 5000)
    assert np.all(np.diff(psi_variance(rho)) < 0)


def test_eq5_check_values_and_convergence_to_eq2():
    np.testing.assert_allclose(psi_variance_approx([5, 10, 100, 500]), [0.833, 0.104, 0.00531, 0.0010121], rtol=5e-3)
    np.testing.assert_allclose(psi_variance([5, 10, 100, 500]), [0.252, 0.0755, 0.00519, 0.0010075], rtol=5e-3)
    rho = np.geomspace(5, 1e6, 200)
    rel_gap = psi_variance_approx(rho) / psi_variance(rho) - 1
    assert np.all(rel_gap > 0) and np.all(np.diff(rel_gap) < 0)  # Eq. 5 over-estimates, less and less
    assert np.all(rel_gap * (rho - 4) < 3)  # O(1/rho)
    assert psi_variance(5) / psi_variance(500) == pytest.approx(250, rel=0.01)


def test_rectification_is_the_eq5_variance_ratio():
    t = np.array([5, 6, 50, 5000])
    expected = psi_variance_approx(rho_inf(0.999)) / psi_variance_approx(rho_t(0.999, t))
    np.testing.assert_allclose(rectification(0.999, t) ** 2, expected, rtol=1e-12)


# --------------------------------------------------------------------------------------------- simulation
def sample_variance_se(var: float, kurtosis: float, n: int) -> float:
    """Standard error of a sample variance of n draws with the given (non-excess) kurtosis."""
    return var * math.sqrt((kurtosis - (n - 3) / (n - 1)) / n)


def scaled_inv_chi2_psi_kurtosis(rho: float) -> float:
    """Kurtosis of psi when psi^2 ~ Scale-inv-chi^2(rho, 1): E psi^k = (rho/2)^(k/2) Gamma((rho-k)/2) / Gamma(rho/2)."""
    m1, m2, m3, m4 = ((rho / 2) ** (k / 2) * math.gamma((rho - k) / 2) / math.gamma(rho / 2) for k in (1, 2, 3, 4))
    var = m2 - m1**2
    return (m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4) / var**2


def test_simulation_mu0_matches_analytic_variance():
    n = 5000
    sim = simulate_psi_variance(mu=0.0, trajectories=n, steps=6000, seed=1)
    # t = 6000: psi is nearly Gaussian (kurtosis ~3); the delta method is accurate to O(1/rho) ~ 0.1%
    expected = psi_variance_delta(0.999, 6000, 0.0)
    assert expected == pytest.approx(2.51e-4, rel=0.01)
    assert abs(sim.var_psi[-1] - expected) < 4 * sample_variance_se(expected, 3.0, n)
    # t = 5: weights nearly equal, psi^2 ~ Scale-inv-chi^2(~5): Eq. 2; heavy tails (kurtosis ~37) widen the SE
    rho5 = rho_t(0.999, 5)
    expected5 = psi_variance(rho5)
    assert abs(sim.var_psi[4] - expected5) < 4 * sample_variance_se(expected5, scaled_inv_chi2_psi_kurtosis(rho5), n)


def test_simulation_large_mu_matches_delta_method():
    n = 3000
    sim = simulate_psi_variance(mu=10.0, trajectories=n, steps=3000, seed=2)
    for t in (5, 100, 3000):
        expected = psi_variance_delta(0.999, t, 10.0)
        assert abs(sim.var_psi[t - 1] - expected) < 4 * sample_variance_se(expected, 3.5, n)
    assert psi_variance_delta(0.999, [5, 6000], 10.0) == pytest.approx([2e-5, 5e-8], rel=0.05)  # PAPER.md


def test_rectified_variance_is_nearly_flat():
    sim = simulate_psi_variance(mu=0.0, trajectories=2000, steps=6000, seed=3)
    plain, rect = sim.var_psi[4:], sim.var_rectified[4:]  # from t = 5
    assert np.all(np.isnan(sim.var_rectified[:4])) and not np.any(np.isnan(rect))
    assert plain.max() / plain.min() > 500
    assert rect.max() / rect.min() < 6
    assert np.all(rect[95:] / rect[-1] > 0.7)  # from t = 100 on, within 30% of the end value


def test_simulation_is_seedable_and_shaped():
    a = simulate_psi_variance(mu=0.1, trajectories=50, steps=30, seed=7, chunk=7)
    b = simulate_psi_variance(mu=0.1, trajectories=50, steps=30, seed=7)
    c = simulate_psi_variance(mu=0.1, trajectories=50, steps=30, seed=8)
    assert a.t.tolist() == list(range(1, 31)) and a.var_psi.shape == a.var_rectified.shape == (30,)
    np.testing.assert_allclose(a.var_psi, b.var_psi, rtol=1e-12)  # chunking does not change the draws
    assert not np.allclose(a.var_psi, c.var_psi)


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: rho_inf(1.0), "beta2 must lie in"),
        (lambda: rho_inf(-0.1), "beta2 must lie in"),
        (lambda: rho_t(0.999, 0), "step must be an integer >= 1"),
        (lambda: rho_t(0.999, 2.5), "step must be an integer >= 1"),
        (lambda: psi_variance(2.0), "rho must be finite and > 2"),
        (lambda: psi_variance([5.0, np.nan]), "rho must be finite"),
        (lambda: psi_variance_approx(4.0), "rho must be finite and > 4"),
        (lambda: first_rectified_step(0.999, float("inf")), "threshold must be a finite number"),
        (lambda: simulate_psi_variance(trajectories=1), "trajectories must be an integer >= 2"),
        (lambda: simulate_psi_variance(steps=0), "steps must be an integer >= 1"),
        (lambda: simulate_psi_variance(beta2=1.0), "beta2 must lie in"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
