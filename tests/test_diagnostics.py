"""radam.diagnostics against independent float64 computations from the optimizer state, and Eq. 2 against
radam.theory, for every supported optimizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import radam
from radam import theory
from radam.diagnostics import Diagnostics, module_key

OPTIMIZERS = {
    "radam.RAdam": lambda ps: radam.RAdam(ps, lr=1e-2),
    "radam.Adam": lambda ps: radam.Adam(ps, lr=1e-2),
    "torch.Adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "torch.AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "torch.RAdam": lambda ps: torch.optim.RAdam(ps, lr=1e-2),
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _train(model, opt, diag, steps: int):
    """``steps`` updates on a fixed regression batch; snapshot before the last one. Returns theta_{t-1}."""
    x, y = torch.randn(64, 6, generator=torch.Generator().manual_seed(1)), torch.zeros(64, 3)
    before = None
    for s in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if s == steps - 1:
            before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
            diag.snapshot()
        opt.step()
    return before


def _reference(model, opt, before, names) -> dict:
    """The statistics of the parameters ``names`` computed here in float64 numpy, from the optimizer state."""
    group = opt.param_groups[0]
    b2, eps = group["betas"][1], group["eps"]
    params = dict(model.named_parameters())
    t = float(opt.state[params[names[0]]]["step"])
    v = np.concatenate([opt.state[params[n]]["exp_avg_sq"].double().numpy().ravel() for n in names])
    psi = np.sqrt(1.0 - b2**t) / (np.sqrt(v) + eps)
    g = np.abs(np.concatenate([params[n].grad.double().numpy().ravel() for n in names]))
    new = np.concatenate([params[n].detach().double().numpy().ravel() for n in names])
    old = np.concatenate([before[n].numpy().ravel() for n in names])
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    return {"t": t, "rho_t": rho_inf - 2.0 * t * b2**t / (1.0 - b2**t), "coords": len(v),
            "psi_median": np.median(psi), "psi_q25": np.quantile(psi, 0.25), "psi_q75": np.quantile(psi, 0.75),
            "psi_log_spread": np.log(psi).std(), "psi_cv2": psi.var() / psi.mean() ** 2,
            "update_ratio": np.linalg.norm(new - old) / np.linalg.norm(old),
            "grad_small_frac": np.mean(g < eps), "grad_abs_median": np.median(g)}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_statistics_equal_a_float64_computation_from_the_optimizer_state(name):
    model = _model()
    opt = OPTIMIZERS[name](model.parameters())
    diag = Diagnostics(opt, model.named_parameters())
    before = _train(model, opt, diag, steps=7)
    out = diag.measure()
    assert sorted(out) == ["0", "2"]  # one key per module holding parameters
    for key, names in (("0", ["0.weight", "0.bias"]), ("2", ["2.weight", "2.bias"])):
        ref = _reference(model, opt, before, names)
        for stat, value in ref.items():
            assert out[key][stat] == pytest.approx(value, rel=1e-6, abs=1e-12), (key, stat)
        assert out[key]["psi_iqr"] == pytest.approx(ref["psi_q75"] - ref["psi_q25"], rel=1e-6)
        assert out[key]["sampled"] == ref["coords"]  # small keys: every coordinate


@pytest.mark.parametrize("t", [1, 2, 3, 5, 6, 50, 2000])
def test_eq2_prediction_and_rectification_are_radam_theory_at_the_current_step(t):
    p = torch.nn.Parameter(torch.ones(10))
    opt = torch.optim.Adam([p], betas=(0.9, 0.999))
    diag = Diagnostics(opt)
    p.grad = torch.linspace(0.1, 1.0, 10)
    opt.step()
    opt.state[p]["step"] = torch.tensor(float(t))  # rho_t depends on t only
    out = diag.measure()["group0"]
    rho = float(theory.rho_t(0.999, t))
    assert out["rho_t"] == pytest.approx(rho, rel=1e-14)
    if rho > 2:
        var = float(theory.psi_variance(rho))
        assert out["psi_var_eq2"] == pytest.approx(var, rel=1e-14)
        assert out["psi_cv2_eq2"] == pytest.approx(var / (rho / (rho - 2) - var), rel=1e-12)
    else:  # Var[psi] is infinite for rho <= 2 (t = 1, 2 at b2 = 0.999)
        assert out["psi_var_eq2"] == math.inf and out["psi_cv2_eq2"] == math.inf
    r_t = float(theory.rectification(0.999, t))
    assert (math.isnan(out["r_t"]) and math.isnan(r_t)) if rho <= 4 else out["r_t"] == pytest.approx(r_t, rel=1e-14)
    assert out["update_ratio"] is None  # no snapshot() before the step


def test_measured_psi_spread_follows_eq2_for_iid_gaussian_gradients():
    """Theorem 1's setting: every coordinate's gradients iid N(0, 1). Across 200k coordinates the spread of psi
    is then the spread of one coordinate's psi, which Eq. 2 predicts from rho_t (Sec. 4's SMA approximation)."""
    p = torch.nn.Parameter(torch.zeros(200_000, dtype=torch.float64))
    opt = radam.Adam([p], lr=0.0, betas=(0.9, 0.9), eps=0.0)
    diag = Diagnostics(opt, max_coords=200_000)
    gen = torch.Generator().manual_seed(0)
    measured, predicted = [], []
    for t in range(1, 61):
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        opt.step()
        if t in (10, 20, 60):
            out = diag.measure()["group0"]
            measured.append(out["psi_cv2"])
            predicted.append(out["psi_cv2_eq2"])
    # rho_t = 9.4 (t=10), 15.7, 18.9. Eq. 2 with Sec. 4's SMA length rho_t slightly overstates the spread of
    # the EMA's psi: measured / predicted = 0.83, 0.82, 0.89 here (sampling error ~1%); both shrink with t.
    ratios = [m / q for m, q in zip(measured, predicted)]
    assert all(0.75 < r < 1.0 for r in ratios), ratios
    assert measured == sorted(measured, reverse=True) and predicted == sorted(predicted, reverse=True)


def test_large_keys_are_sampled_uniformly_from_a_private_generator_and_measured_on_the_sample():
    model = torch.nn.Sequential(torch.nn.Linear(200, 50), torch.nn.Linear(50, 2))
    opt = radam.RAdam(model.parameters())
    rng = torch.get_rng_state()
    diag = Diagnostics(opt, model.named_parameters(), max_coords=500)
    assert torch.equal(rng, torch.get_rng_state())  # the training's RNG stream is untouched
    key = diag.keys[0]
    assert key.coords == 200 * 50 + 50 and sum(len(i) for i in key.index) == 500
    assert all(len(torch.unique(i)) == len(i) for i in key.index)  # without replacement
    model(torch.randn(8, 200)).sum().backward()
    diag.snapshot()
    opt.step()
    out = diag.measure()
    assert out["0"]["sampled"] == 500 and out["1"]["sampled"] == 50 * 2 + 2  # the small key: exact
    state = [opt.state[p] for p in model[0].parameters()]
    v = torch.cat([s["exp_avg_sq"].reshape(-1)[i] for s, i in zip(state, key.index)]).double().numpy()
    psi = math.sqrt(1 - 0.999) / (np.sqrt(v) + 1e-8)
    assert out["0"]["psi_median"] == pytest.approx(np.median(psi), rel=1e-12)
    assert out["0"]["psi_log_spread"] == pytest.approx(np.log(psi).std(), rel=1e-12)


def test_keys_per_group_module_names_and_depth():
    model = _model()
    decay, no_decay = [model[0].weight, model[2].weight], [model[0].bias, model[2].bias]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    assert [k.name for k in Diagnostics(opt).keys] == ["group0", "group1"]
    # a module whose parameters lie in two groups with the same (b2, step) is one key
    _train(model, opt, Diagnostics(opt), steps=2)
    assert sorted(Diagnostics(opt, model.named_parameters()).measure()) == ["0", "2"]
    assert module_key("encoder.layers.0.fc1.weight") == "encoder.layers.0.fc1"
    assert module_key("encoder.layers.0.fc1.weight", depth=3) == "encoder.layers.0"
    assert module_key("weight") == "weight"


def test_one_line_errors():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(TypeError, match="supported: radam.radam.RAdam"):
        Diagnostics(torch.optim.SGD([p], lr=0.1))
    with pytest.raises(ValueError, match="amsgrad=False"):
        Diagnostics(torch.optim.Adam([p], amsgrad=True))
    with pytest.raises(ValueError, match="max_coords"):
        Diagnostics(torch.optim.Adam([p]), max_coords=0)
    with pytest.raises(ValueError, match="none of the named parameters"):
        Diagnostics(torch.optim.Adam([p]), [("other", torch.nn.Parameter(torch.ones(1)))])
    q = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([{"params": [p]}, {"params": [q], "betas": (0.9, 0.99)}])
    p.grad, q.grad = torch.ones(3), torch.ones(3)
    opt.step()
    with pytest.raises(ValueError, match="mixes parameters with different"):
        Diagnostics(opt, [("m.a", p), ("m.b", q)]).measure()


def test_parameters_without_state_are_left_out():
    model = _model()
    opt = radam.RAdam(model.parameters())
    assert Diagnostics(opt, model.named_parameters()).measure() == {}  # before the first step
