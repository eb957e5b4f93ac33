"""radam.RAdam against an independent float64 Algorithm 2, torch.optim.RAdam, itself (paths, state dicts) and
known optima; limiting cases, threshold behaviour, schedulers, GradScaler and every error message."""

from __future__ import annotations

import copy
import io
import math
import warnings

import numpy as np
import pytest
import torch

from radam import _kernels, theory
from radam.radam import RAdam
from radam.theory import rectification, rho_inf, rho_t
from tests.reference_optim import radam_reference, sgd_momentum_reference

PATHS = [None, True, False]  # fused (default), foreach, single-tensor
SHAPES = [(3, 4), (5,), (2, 3, 2)]
BASE = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, threshold=5.0, degenerated_to_sgd=True,
            decoupled_weight_decay=True)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ helpers -----------------------------------------

def make_problem(shapes=SHAPES, seed=0):
    """Initial parameters and a gradient g_i(t, theta) = a_i * theta_i - c_i + noise_i(t), in float64 NumPy."""
    rng = np.random.default_rng(seed)
    thetas0 = [rng.standard_normal(s) for s in shapes]
    scales = [rng.uniform(0.1, 3.0, s) for s in shapes]
    centres = [rng.standard_normal(s) for s in shapes]

    def grad_fn(t, thetas):
        noise = np.random.default_rng(1000 + t)
        return [a * x - c + 0.5 * noise.standard_normal(x.shape) for a, x, c in zip(scales, thetas, centres)]

    return thetas0, grad_fn


def run_torch(make_opt, thetas0, grad_fn, steps, dtype=torch.float64, scheduler=None):
    """Run an optimizer on the problem; returns the list (per step) of parameter lists as float64 arrays."""
    params = [torch.nn.Parameter(torch.tensor(x, dtype=dtype)) for x in thetas0]
    opt = make_opt(params)
    sched = scheduler(opt) if scheduler else None
    history = []
    for t in range(1, steps + 1):
        grads = grad_fn(t, [p.detach().double().numpy() for p in params])
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
        if sched:
            sched.step()
        history.append([p.detach().double().numpy().copy() for p in params])
    return history


def assert_history_close(got, want, rtol, atol):
    for t, (g_step, w_step) in enumerate(zip(got, want), start=1):
        for g, w in zip(g_step, w_step):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"step {t}")


# ------------------------------------------------------- the rho_t / r_t numbers of the paper -----------------------

def test_rho_and_rectification_values_from_the_paper():
    assert rho_inf(0.999) == pytest.approx(1999)
    for t, want in [(1, 1.0), (4, 3.9975), (5, 4.996), (6, 5.994)]:
        assert rho_t(0.999, t) == pytest.approx(want, abs=6e-4)
    for t, want in [(6, 0.0258), (100, 0.215), (1000, 0.645), (2000, 0.828), (4000, 0.962)]:
        assert rectification(0.999, t) == pytest.approx(want, abs=6e-4)


# ---------------------------------------------------------- against the float64 reference -------------------------

VARIANTS = {
    "default": {},
    "decoupled_wd": dict(weight_decay=0.1),
    "l2_wd": dict(weight_decay=0.1, decoupled_weight_decay=False),
    "no_sgd": dict(degenerated_to_sgd=False),
    "no_sgd_wd": dict(degenerated_to_sgd=False, weight_decay=0.1),
    "no_sgd_l2": dict(degenerated_to_sgd=False, weight_decay=0.1, decoupled_weight_decay=False),
    "paper_threshold": dict(threshold=4.0),
    "threshold_20": dict(threshold=20.0, betas=(0.9, 0.99)),
    "betas_0.5_0.99": dict(betas=(0.5, 0.99)),
    "beta1_0": dict(betas=(0.0, 0.9), weight_decay=0.05),
    "beta2_0.6_sgd_forever": dict(betas=(0.9, 0.6), weight_decay=0.1),
    "large_eps": dict(eps=1e-2),
    "lr_0": dict(lr=0.0, weight_decay=0.5),
}


@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_matches_float64_reference(variant, foreach):
    opts = {**BASE, **VARIANTS[variant]}
    thetas0, grad_fn = make_problem()
    want = radam_reference(thetas0, grad_fn, [dict(idx=range(len(thetas0)), **opts)], steps=60)
    got = run_torch(lambda ps: RAdam(ps, **opts, foreach=foreach), thetas0, grad_fn, steps=60)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_param_groups_each_honour_their_options(foreach):
    groups = [
        dict(idx=[0], **{**BASE, "weight_decay": 0.1, "threshold": 4.0}),
        dict(idx=[1], **{**BASE, "lr": 0.05, "betas": (0.8, 0.99), "degenerated_to_sgd": False,
                         "decoupled_weight_decay": False, "weight_decay": 0.01, "threshold": 6.0}),
        dict(idx=[2], **{**BASE, "lr": 0.0, "weight_decay": 0.5}),
    ]
    thetas0, grad_fn = make_problem()
    want = radam_reference(thetas0, grad_fn, groups, steps=40)

    def make(ps):
        return RAdam([{"params": [ps[g["idx"][0]]], **{k: v for k, v in g.items() if k != "idx"}} for g in groups],
                     foreach=foreach)

    got = run_torch(make, thetas0, grad_fn, steps=40)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[-1][2], thetas0[2])  # the lr = 0 group never moved


# ------------------------------------------------------------- against torch.optim.RAdam ---------------------------

@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float64, 1e-10, 1e-12), (torch.float32, 2e-5, 2e-6)],
                         ids=["fp64", "fp32"])
@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
@pytest.mark.parametrize("wd,decoupled", [(0.0, True), (0.1, True), (0.1, False)], ids=["no_wd", "adamw", "l2"])
def test_matches_torch_radam_200_steps(dtype, rtol, atol, foreach, wd, decoupled):
    # torch.optim.RAdam rectifies when rho_t > 5, like the default threshold=5.0 here (first at t=6, b2=0.999).
    thetas0, grad_fn = make_problem()
    want = run_torch(lambda ps: torch.optim.RAdam(ps, lr=0.01, weight_decay=wd, decoupled_weight_decay=decoupled),
                     thetas0, grad_fn, steps=200, dtype=dtype)
    got = run_torch(lambda ps: RAdam(ps, lr=0.01, weight_decay=wd, decoupled_weight_decay=decoupled,
                                     foreach=foreach), thetas0, grad_fn, steps=200, dtype=dtype)
    assert_history_close(got, want, rtol=rtol, atol=atol)


# --------------------------------------------------------------- the three paths agree -----------------------------

@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 5e-2), (torch.bfloat16, 2e-1)],
                         ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("opts", [{}, dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=False)],
                         ids=["plain", "decoupled_wd", "l2"])
def test_fused_foreach_and_single_paths_agree(dtype, tol, opts):
    """fp32: the paths agree to rounding. fp16/bf16 (the fused kernel computes in fp32, the others in the
    parameter dtype): every path stays within the low-precision rounding of the float64 trajectory."""
    thetas0, grad_fn = make_problem(shapes=[(64, 33), (7,), (1,)])
    runs = {fe: run_torch(lambda ps: RAdam(ps, lr=0.01, **opts, foreach=fe), thetas0, grad_fn, 30, dtype=dtype)
            for fe in PATHS}
    exact = run_torch(lambda ps: RAdam(ps, lr=0.01, **opts, foreach=False), thetas0, grad_fn, 30)
    for fe in PATHS:
        assert all(np.isfinite(x).all() for x in runs[fe][-1])
        assert_history_close(runs[fe], runs[False] if dtype == torch.float32 else exact, rtol=tol, atol=tol)


def test_fused_failure_falls_back_to_foreach(monkeypatch):
    """A private-API failure must warn once and leave the step to the foreach path with identical results."""
    def broken(*args, **kwargs):
        raise RuntimeError("simulated: no fused kernel")

    monkeypatch.setattr(torch, "_fused_adamw_", broken)
    monkeypatch.setattr(_kernels, "_fused_broken", set())
    thetas0, grad_fn = make_problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run_torch(lambda ps: RAdam(ps, weight_decay=0.1, foreach=None), thetas0, grad_fn, 20)
    assert sum("fused Adam op failed" in str(w.message) for w in caught) == 1
    want = run_torch(lambda ps: RAdam(ps, weight_decay=0.1, foreach=True), thetas0, grad_fn, 20)
    assert_history_close(got, want, rtol=0, atol=0)


# ------------------------------------------------------------------ limiting cases ---------------------------------

@pytest.mark.parametrize("beta2", [0.0, 0.3, 0.6])
@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_small_beta2_is_sgd_with_bias_corrected_momentum_forever(beta2, foreach):
    assert rho_inf(beta2) <= 4
    thetas0, grad_fn = make_problem(shapes=[(6,)])
    want = sgd_momentum_reference(thetas0[0], grad_fn, lr=0.05, b1=0.9, steps=100)
    got = run_torch(lambda ps: RAdam(ps, lr=0.05, betas=(0.9, beta2), threshold=4.0, foreach=foreach),
                    thetas0, grad_fn, 100)
    assert_history_close([g[0:1] for g in got], [[w] for w in want], rtol=1e-10, atol=1e-12)
    frozen = run_torch(lambda ps: RAdam(ps, betas=(0.9, beta2), degenerated_to_sgd=False, foreach=foreach),
                       thetas0, grad_fn, 100)
    np.testing.assert_array_equal(frozen[-1][0], thetas0[0])  # never rectified, never updated


@pytest.mark.parametrize("threshold,first_rectified", [(4.0, 5), (5.0, 6)], ids=["paper_rule", "code_rule"])
@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_first_rectified_step_for_beta2_0999(threshold, first_rectified, foreach):
    """b2 = 0.999: rho_5 = 4.996, so rho_t > 4 first holds at t = 5 and rho_t > 5 at t = 6."""
    assert rho_t(0.999, 4) <= 4 < rho_t(0.999, 5) <= 5 < rho_t(0.999, 6)
    thetas0, grad_fn = make_problem(shapes=[(4,)])
    got = run_torch(lambda ps: RAdam(ps, threshold=threshold, degenerated_to_sgd=False, foreach=foreach),
                    thetas0, grad_fn, 8)
    moved = [not np.array_equal(step[0], thetas0[0]) for step in got]
    assert moved.index(True) + 1 == first_rectified


@pytest.mark.parametrize("threshold", [4.0, 5.0, 7.5])
@pytest.mark.parametrize("beta2", [0.999, 0.99, 0.9])
def test_first_rectified_step_agrees_with_theory(beta2, threshold):
    """The optimizer's first moving step (degenerated_to_sgd=False) is radam.theory.first_rectified_step."""
    expected = theory.first_rectified_step(beta2, threshold)
    thetas0, grad_fn = make_problem(shapes=[(3,)])
    got = run_torch(lambda ps: RAdam(ps, betas=(0.9, beta2), threshold=threshold, degenerated_to_sgd=False),
                    thetas0, grad_fn, expected + 1)
    moved = [not np.array_equal(step[0], thetas0[0]) for step in got]
    assert moved.index(True) + 1 == expected


def test_moments_accumulate_during_skipped_steps():
    p = torch.nn.Parameter(torch.ones(3))
    opt = RAdam([p], degenerated_to_sgd=False, weight_decay=0.5)
    for _ in range(3):
        p.grad = torch.full((3,), 2.0)
        opt.step()
    state = opt.state[p]
    assert state["step"] == 3
    torch.testing.assert_close(state["exp_avg"], torch.full((3,), 2.0 * (1 - 0.9 ** 3)))
    torch.testing.assert_close(state["exp_avg_sq"], torch.full((3,), 4.0 * (1 - 0.999 ** 3)))
    torch.testing.assert_close(p.detach(), torch.ones(3), rtol=0, atol=0)  # no update, no weight decay


@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_l2_weight_decay_leaves_the_users_gradient_alone(foreach):
    p = torch.nn.Parameter(torch.ones(4))
    opt = RAdam([p], weight_decay=0.5, decoupled_weight_decay=False, threshold=4.0, foreach=foreach)
    for _ in range(8):  # un-rectified and rectified steps
        p.grad = torch.full((4,), 0.1)
        opt.step()
        torch.testing.assert_close(p.grad, torch.full((4,), 0.1), rtol=0, atol=0)


def test_parameters_without_grad_are_skipped():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = RAdam([a, b], lr=0.1, weight_decay=0.1)
    for _ in range(10):
        a.grad = torch.ones(2)
        opt.step()
    assert opt.state[a]["step"] == 10 and len(opt.state[b]) == 0
    torch.testing.assert_close(b.detach(), torch.ones(2), rtol=0, atol=0)


# ------------------------------------------------------------------- state dicts -----------------------------------

@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_state_dict_saved_mid_run_continues_identically(foreach):
    thetas0, grad_fn = make_problem()
    opts = dict(lr=0.01, weight_decay=0.1, threshold=4.0, degenerated_to_sgd=False, foreach=foreach)
    want = run_torch(lambda ps: RAdam(ps, **opts), thetas0, grad_fn, 30, dtype=torch.float32)

    params = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float32)) for x in thetas0]
    opt = RAdam(params, **opts)
    got = []
    for t in range(1, 31):
        if t == 16:  # save, rebuild everything from the saved bytes, continue
            buf = io.BytesIO()
            torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf)
            params = [torch.nn.Parameter(x.clone()) for x in saved["params"]]
            opt = RAdam(params, lr=0.5)  # options come from the state dict
            opt.load_state_dict(saved["opt"])
        for p, g in zip(params, grad_fn(t, [p.detach().double().numpy() for p in params])):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        got.append([p.detach().double().numpy().copy() for p in params])
    assert_history_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("decoupled", [True, False], ids=["adamw", "l2"])
def test_loads_a_torch_radam_state_dict_and_continues_like_torch(decoupled):
    thetas0, grad_fn = make_problem()
    params = [torch.nn.Parameter(torch.tensor(x)) for x in thetas0]
    torch_opt = torch.optim.RAdam(params, lr=0.01, weight_decay=0.1, decoupled_weight_decay=decoupled)
    for t in range(1, 21):
        for p, g in zip(params, grad_fn(t, [p.detach().numpy() for p in params])):
            p.grad = torch.tensor(g)
        torch_opt.step()
    ours_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = RAdam(ours_params)
    ours.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    assert ours.param_groups[0]["decoupled_weight_decay"] is decoupled
    assert ours.state[ours_params[0]]["step"] == 20
    for t in range(21, 61):
        grads = grad_fn(t, [p.detach().numpy() for p in params])
        for ps in (params, ours_params):
            for p, g in zip(ps, grads):
                p.grad = torch.tensor(g)
        torch_opt.step()
        ours.step()
    for p, q in zip(params, ours_params):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-10, atol=1e-12)


# -------------------------------------------------------------- convergence to known optima -----------------------

def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def make_quadratic(n=20, condition=1e3, seed=0):
    """f(x) = 1/2 (x - c)^T H (x - c), H = Q diag(logspace(0, log10 condition)) Q^T: optimum c, f* = 0."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    h = q @ torch.diag(torch.logspace(0, math.log10(condition), n, dtype=torch.float64)) @ q.T
    c = torch.randn(n, generator=gen, dtype=torch.float64)
    return (lambda x: 0.5 * (x - c) @ h @ (x - c)), c


CONVERGENCE = {  # b2 = 0.99 so that r_t is near 1 within the run; lr annealed to 0 by a cosine schedule
    "code_rule": dict(betas=(0.9, 0.99), degenerated_to_sgd=False),
    "paper_rule": dict(betas=(0.9, 0.99), threshold=4.0, degenerated_to_sgd=False),
    "decoupled_wd_tiny": dict(betas=(0.9, 0.99), degenerated_to_sgd=False, weight_decay=1e-12),
}


@pytest.mark.parametrize("foreach", [None, False], ids=["fused", "single"])
@pytest.mark.parametrize("opts", list(CONVERGENCE.values()), ids=list(CONVERGENCE))
@pytest.mark.parametrize("problem", ["rosenbrock", "quadratic_cond1e3"])
def test_converges_to_the_known_optimum(problem, opts, foreach):
    if problem == "rosenbrock":
        f, optimum, x0, lr = rosenbrock, torch.ones(2, dtype=torch.float64), [-1.5, 2.0], 0.1
    else:
        f, optimum = make_quadratic()
        x0, lr = [0.0] * len(optimum), 0.05
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = RAdam([x], lr=lr, **opts, foreach=foreach)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2000)
    for _ in range(2000):
        opt.zero_grad()
        f(x).backward()
        opt.step()
        sched.step()
    torch.testing.assert_close(x.detach(), optimum, rtol=0, atol=1e-5)


def test_sgd_phase_with_large_gradients_is_the_papers_step():
    """With degenerated_to_sgd=True the first steps are lr * m_hat, unscaled by any second moment: a gradient of
    1e3 moves theta by 1e3 * lr at t = 1 (why the original code later switched the default to False)."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = RAdam([p], lr=0.01)
    p.grad = torch.full((1,), 1e3, dtype=torch.float64)
    opt.step()
    assert p.item() == pytest.approx(-10.0)


# ---------------------------------------------------------- lr schedulers and GradScaler ---------------------------

@pytest.mark.parametrize("foreach", PATHS, ids=["fused", "foreach", "single"])
def test_lr_scheduler_sets_the_lr_of_each_step(foreach):
    thetas0, grad_fn = make_problem()
    opts = {**BASE, "weight_decay": 0.1, "threshold": 4.0}
    decay = lambda epoch: 1.0 / (1.0 + 0.1 * epoch)  # noqa: E731
    want = radam_reference(thetas0, grad_fn, [dict(idx=range(3), **{**opts, "lr": lambda t: 0.01 * decay(t - 1)})],
                           steps=40)
    got = run_torch(lambda ps: RAdam(ps, **opts, foreach=foreach), thetas0, grad_fn, 40,
                    scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, decay))
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)


def test_grad_scaler_steps_match_unscaled_training_and_skip_inf():
    torch.manual_seed(0)
    data, target = torch.randn(32, 5), torch.randn(32, 1)

    def train(use_scaler, inf_at=None):
        torch.manual_seed(1)
        model = torch.nn.Linear(5, 1)
        opt = RAdam(model.parameters(), lr=0.01, weight_decay=0.1, threshold=4.0)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1000) if use_scaler else None
        for step in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(data), target)
            if scaler is None:
                loss.backward()
                if step != inf_at:
                    opt.step()
                continue
            scaler.scale(loss).backward()
            if step == inf_at:
                model.weight.grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
        return [p.detach().clone() for p in model.parameters()], opt

    plain, _ = train(False)
    scaled, _ = train(True)
    for a, b in zip(plain, scaled):
        torch.testing.assert_close(b, a, rtol=0, atol=0)  # scale 2^10 unscales exactly
    skipped_plain, _ = train(False, inf_at=7)
    skipped_scaled, opt = train(True, inf_at=7)
    for a, b in zip(skipped_plain, skipped_scaled):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert all(s["step"] == 19 for s in opt.state.values())


# ---------------------------------------------------------------------- errors -------------------------------------

@pytest.mark.parametrize("kwargs,message", [  # torch.optim.RAdam's wording, then what the bound is
    (dict(lr=-1e-3), r"^Invalid learning rate: -0.001 \(lr must be >= 0.0\)$"),
    (dict(lr=float("nan")), r"Invalid learning rate: nan \(lr must be a real number"),
    (dict(eps=-1e-8), r"^Invalid epsilon value: -1e-08 \(eps must be >= 0.0\)$"),
    (dict(weight_decay=-0.1), r"^Invalid weight_decay value: -0.1 \(weight_decay must be >= 0.0\)$"),
    (dict(betas=(1.0, 0.999)), r"^Invalid beta parameter at index 0: 1.0 \(betas\[0\] \(beta1\) must be >= 0.0 and < 1"),
    (dict(betas=(0.9, 1.0)), r"^Invalid beta parameter at index 1: 1.0 \(betas\[1\] \(beta2\)"),
    (dict(betas=(-0.1, 0.999)), r"^Invalid beta parameter at index 0: -0.1 "),
    (dict(betas=(0.9,)), "betas must be a pair"),
    (dict(threshold=3.9), r"Invalid threshold: 3.9 \(threshold must be >= 4.0; r_t has the factor rho_t - 4"),
    (dict(degenerated_to_sgd="yes"), "degenerated_to_sgd must be True or False"),
    (dict(decoupled_weight_decay=1), "decoupled_weight_decay must be True or False"),
    (dict(foreach="fast"), "foreach must be None, True or False"),
    (dict(maximize=None), "maximize must be True or False"),
    (dict(capturable="yes"), "capturable must be True or False"),
    (dict(differentiable=0), "differentiable must be True or False"),
    (dict(lr=torch.tensor([1e-3, 1e-3])), "Tensor lr must be 1-element"),
])
def test_bad_arguments_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RAdam([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_betas_from_a_hydra_config_list_are_accepted():
    omegaconf = pytest.importorskip("omegaconf")
    betas = omegaconf.OmegaConf.create({"betas": [0.9, 0.99]}).betas  # a ListConfig, as Hydra passes it
    opt = RAdam([torch.nn.Parameter(torch.zeros(1))], betas=betas)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)


def test_bad_param_group_option_raises():
    opt = RAdam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": -1})


def test_sparse_gradients_raise():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = RAdam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


def test_closure_is_evaluated_and_its_loss_returned():
    p = torch.nn.Parameter(torch.ones(2))
    opt = RAdam([p])

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(2.0)
    assert opt.state[p]["step"] == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)], ids=["fp32", "bf16"])
def test_cuda_paths_match_cpu_reference(dtype, tol):
    thetas0, grad_fn = make_problem(shapes=[(256, 129), (3,)])
    cpu = run_torch(lambda ps: RAdam(ps, weight_decay=0.1, foreach=False), thetas0, grad_fn, 30)
    for foreach in PATHS:
        params = [torch.nn.Parameter(torch.tensor(x, dtype=dtype, device="cuda")) for x in thetas0]
        opt = RAdam(params, weight_decay=0.1, foreach=foreach)
        for t in range(1, 31):
            for p, g in zip(params, grad_fn(t, [p.detach().double().cpu().numpy() for p in params])):
                p.grad = torch.tensor(g, dtype=dtype, device="cuda")
            opt.step()
        for p, want in zip(params, cpu[-1]):
            np.testing.assert_allclose(p.detach().double().cpu().numpy(), want, rtol=tol, atol=tol)
