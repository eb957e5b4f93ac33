"""radam.Adam (fairseq arithmetic, Adam-2k freeze) against an independent float64 reference, torch.optim.AdamW,
itself (paths, state dicts) and known optima; the freeze and eps semantics; every error message."""

from __future__ import annotations

import copy
import io
import math
import warnings

import numpy as np
import pytest
import torch

from radam import _kernels
from radam.adam import Adam
from tests.reference_optim import adam_reference
from tests.test_radam import PATHS, assert_history_close, make_problem, make_quadratic, rosenbrock, run_torch

pytestmark = pytest.mark.usefixtures("one_thread")


BASE = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, freeze_steps=0)

VARIANTS = {
    "default": {},
    "decoupled_wd": dict(weight_decay=0.1),
    "adam_eps": dict(eps=1e-4),
    "adam_eps_large": dict(eps=1e-1, weight_decay=0.1),
    "freeze_3": dict(freeze_steps=3, weight_decay=0.1),
    "freeze_25": dict(freeze_steps=25, betas=(0.8, 0.99)),
    "beta1_0": dict(betas=(0.0, 0.9)),
    "lr_0": dict(lr=0.0, weight_decay=0.5),
}


@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_matches_float64_reference(variant, foreach):
    opts = {**BASE, **VARIANTS[variant]}
    thetas0, grad_fn = make_problem()
    want = adam_reference(thetas0, grad_fn, [dict(idx=range(len(thetas0)), **opts)], steps=50)
    got = run_torch(lambda ps: Adam(ps, **opts, foreach=foreach), thetas0, grad_fn, steps=50)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_param_groups_each_honour_their_options(foreach):
    groups = [dict(idx=[0], **{**BASE, "weight_decay": 0.1, "freeze_steps": 5}),
              dict(idx=[1], **{**BASE, "lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-3}),
              dict(idx=[2], **{**BASE, "lr": 0.0, "weight_decay": 0.5})]
    thetas0, grad_fn = make_problem()
    want = adam_reference(thetas0, grad_fn, groups, steps=30)

    def make(ps):
        return Adam([{"params": [ps[g["idx"][0]]], **{k: v for k, v in g.items() if k != "idx"}} for g in groups],
                    foreach=foreach)

    got = run_torch(make, thetas0, grad_fn, steps=30)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[-1][2], thetas0[2])


# ----------------------------------------------------------------------- freeze (Adam-2k) ---------------------------

@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_freeze_steps_update_only_v_and_keep_counting(foreach):
    n = 7
    p = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
    p0 = p.detach().clone()
    opt = Adam([p], lr=0.1, weight_decay=0.1, freeze_steps=n, foreach=foreach)
    v = torch.zeros(5, dtype=torch.float64)
    for t in range(1, n + 1):
        g = torch.full((5,), float(t), dtype=torch.float64)
        p.grad = g
        opt.step()
        v = 0.999 * v + 0.001 * g * g
        state = opt.state[p]
        assert state["step"] == t
        torch.testing.assert_close(p.detach(), p0, rtol=0, atol=0)  # theta and weight decay frozen
        torch.testing.assert_close(state["exp_avg"], torch.zeros(5, dtype=torch.float64), rtol=0, atol=0)
        torch.testing.assert_close(state["exp_avg_sq"], v)
    # The first update uses the global t = n + 1 in both bias corrections (the original runs' arithmetic).
    g = torch.full((5,), 2.0, dtype=torch.float64)
    p.grad = g
    opt.step()
    t = n + 1
    v = 0.999 * v + 0.001 * g * g
    m = 0.1 * g
    want = p0 * (1 - 0.1 * 0.1) - 0.1 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (v.sqrt() + 1e-8)
    torch.testing.assert_close(p.detach(), want, rtol=1e-12, atol=1e-14)


# -------------------------------------------------------------------- against torch ---------------------------------

@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float64, 1e-9, 1e-11), (torch.float32, 2e-5, 2e-6)],
                         ids=["fp64", "fp32"])
@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_equals_torch_adamw_when_eps_is_zero(dtype, rtol, atol, foreach, wd):
    thetas0, grad_fn = make_problem()  # gradients are never exactly zero, so eps = 0 divides safely
    want = run_torch(lambda ps: torch.optim.AdamW(ps, lr=0.01, eps=0.0, weight_decay=wd), thetas0, grad_fn, 200,
                     dtype=dtype)
    got = run_torch(lambda ps: Adam(ps, lr=0.01, eps=0.0, weight_decay=wd, foreach=foreach), thetas0, grad_fn, 200,
                    dtype=dtype)
    assert_history_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("eps", [1e-4, 1e-2])
def test_torch_eps_is_ours_times_sqrt_bias_correction(eps):
    """radam.Adam(eps) is torch AdamW(eps / sqrt(1 - b2^t)); equivalently torch AdamW(eps) is radam.Adam with
    eps * sqrt(1 - b2^t) (0.0316 eps at t = 1), so torch's eps damps the first steps far less."""
    p0 = torch.tensor([1e-3, -2e-3, 5e-4, 1.0], dtype=torch.float64)
    g = torch.tensor([1e-4, -3e-4, 2e-5, 1.0], dtype=torch.float64)
    ours, same, naive = (torch.nn.Parameter(p0.clone()) for _ in range(3))
    for p in (ours, same, naive):
        p.grad = g.clone()
    Adam([ours], lr=0.1, eps=eps).step()
    torch.optim.AdamW([same], lr=0.1, eps=eps / math.sqrt(1 - 0.999), weight_decay=0.0).step()
    torch.optim.AdamW([naive], lr=0.1, eps=eps, weight_decay=0.0).step()
    torch.testing.assert_close(ours.detach(), same.detach(), rtol=1e-12, atol=1e-15)
    # with the same eps, torch's first step on small-gradient coordinates is far less damped (Adam-eps weakened)
    assert ((naive.detach() - p0).abs()[:3] > 5 * (ours.detach() - p0).abs()[:3]).all()


@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_fused_foreach_and_single_paths_agree_fp32(foreach):
    thetas0, grad_fn = make_problem(shapes=[(64, 33), (7,)])
    opts = dict(lr=0.01, weight_decay=0.1, eps=1e-6, freeze_steps=4)
    ref = run_torch(lambda ps: Adam(ps, **opts, foreach=False), thetas0, grad_fn, 30, dtype=torch.float32)
    got = run_torch(lambda ps: Adam(ps, **opts, foreach=foreach), thetas0, grad_fn, 30, dtype=torch.float32)
    assert_history_close(got, ref, rtol=1e-6, atol=1e-6)


def test_fused_failure_falls_back_to_foreach(monkeypatch):
    def broken(*args, **kwargs):
        raise NotImplementedError("simulated: no fused kernel for this backend")

    monkeypatch.setattr(torch, "_fused_adamw_", broken)
    monkeypatch.setattr(_kernels, "_fused_broken", set())
    thetas0, grad_fn = make_problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run_torch(lambda ps: Adam(ps, weight_decay=0.1, foreach=None), thetas0, grad_fn, 10)
    assert sum("fused Adam op failed" in str(w.message) for w in caught) == 1
    want = run_torch(lambda ps: Adam(ps, weight_decay=0.1, foreach=True), thetas0, grad_fn, 10)
    assert_history_close(got, want, rtol=0, atol=0)


# --------------------------------------------------------------------- state dicts ---------------------------------

@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_state_dict_saved_during_freeze_continues_identically(foreach):
    thetas0, grad_fn = make_problem()
    opts = dict(lr=0.01, weight_decay=0.1, freeze_steps=10, foreach=foreach)
    want = run_torch(lambda ps: Adam(ps, **opts), thetas0, grad_fn, 25, dtype=torch.float32)
    params = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float32)) for x in thetas0]
    opt = Adam(params, **opts)
    got = []
    for t in range(1, 26):
        if t == 6:
            buf = io.BytesIO()
            torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf)
            params = [torch.nn.Parameter(x.clone()) for x in saved["params"]]
            opt = Adam(params)
            opt.load_state_dict(saved["opt"])
            assert opt.param_groups[0]["freeze_steps"] == 10
        for p, g in zip(params, grad_fn(t, [p.detach().double().numpy() for p in params])):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        got.append([p.detach().double().numpy().copy() for p in params])
    assert_history_close(got, want, rtol=0, atol=0)


def test_loads_a_torch_adamw_state_dict():
    """Moments and step carry over; from then on the step is fairseq's (eps=0 makes the two identical)."""
    thetas0, grad_fn = make_problem()
    params = [torch.nn.Parameter(torch.tensor(x)) for x in thetas0]
    torch_opt = torch.optim.AdamW(params, lr=0.01, eps=0.0, weight_decay=0.1)
    for t in range(1, 11):
        for p, g in zip(params, grad_fn(t, [p.detach().numpy() for p in params])):
            p.grad = torch.tensor(g)
        torch_opt.step()
    ours_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = Adam(ours_params)
    ours.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    assert ours.state[ours_params[0]]["step"] == 10 and ours.param_groups[0]["freeze_steps"] == 0
    for t in range(11, 31):
        grads = grad_fn(t, [p.detach().numpy() for p in params])
        for ps in (params, ours_params):
            for p, g in zip(ps, grads):
                p.grad = torch.tensor(g)
        torch_opt.step()
        ours.step()
    for p, q in zip(params, ours_params):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------- convergence, scheduler, scaler ----------------------

@pytest.mark.parametrize("opts", [dict(betas=(0.9, 0.99)), dict(betas=(0.9, 0.99), freeze_steps=50),
                                  dict(betas=(0.9, 0.99), eps=1e-4)], ids=["adam", "adam_2k_style", "adam_eps"])
@pytest.mark.parametrize("problem", ["rosenbrock", "quadratic_cond1e3"])
def test_converges_to_the_known_optimum(problem, opts):
    if problem == "rosenbrock":
        f, optimum, x0, lr = rosenbrock, torch.ones(2, dtype=torch.float64), [-1.5, 2.0], 0.1
    else:
        f, optimum = make_quadratic()
        x0, lr = [0.0] * len(optimum), 0.05
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = Adam([x], lr=lr, **opts)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2000)
    for _ in range(2000):
        opt.zero_grad()
        f(x).backward()
        opt.step()
        sched.step()
    torch.testing.assert_close(x.detach(), optimum, rtol=0, atol=1e-4)


def test_lr_scheduler_sets_the_lr_of_each_step():
    thetas0, grad_fn = make_problem()
    opts = {**BASE, "weight_decay": 0.1, "freeze_steps": 3}
    warm = lambda epoch: min(1.0, (epoch + 1) / 10)  # noqa: E731
    want = adam_reference(thetas0, grad_fn, [dict(idx=range(3), **{**opts, "lr": lambda t: 0.01 * warm(t - 1)})],
                          steps=30)
    got = run_torch(lambda ps: Adam(ps, **opts), thetas0, grad_fn, 30,
                    scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, warm))
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)


def test_grad_scaler_matches_unscaled_training():
    torch.manual_seed(0)
    data, target = torch.randn(32, 5), torch.randn(32, 1)

    def train(use_scaler):
        torch.manual_seed(1)
        model = torch.nn.Linear(5, 1)
        opt = Adam(model.parameters(), lr=0.01, weight_decay=0.1, freeze_steps=3)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
        for _ in range(15):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(data), target)
            if use_scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(train(False), train(True)):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


# ---------------------------------------------------------------------- errors -------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(lr=-0.1), r"^Invalid learning rate: -0.1 \(lr must be >= 0.0\)$"),
    (dict(eps=-1.0), r"^Invalid epsilon value: -1.0 \(eps must be >= 0.0\)$"),
    (dict(weight_decay=-1e-4), r"^Invalid weight_decay value: -0.0001 "),
    (dict(betas=(0.9, 1.5)), r"^Invalid beta parameter at index 1: 1.5 \(betas\[1\] \(beta2\) must be"),
    (dict(betas=0.9), "betas must be a pair"),
    (dict(freeze_steps=-1), "Invalid freeze_steps: -1"),
    (dict(freeze_steps=2.5), "Invalid freeze_steps: 2.5"),
    (dict(foreach=1), "foreach must be None, True or False"),
    (dict(amsgrad=True), r"amsgrad=True is not supported.*torch.optim.AdamW\(amsgrad=True\)"),
    (dict(maximize="no"), "maximize must be True or False"),
])
def test_bad_arguments_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Adam([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_sparse_gradients_raise():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
        opt.step()
