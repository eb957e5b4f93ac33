"""API parity with torch.optim.RAdam / torch.optim.AdamW: torch's own OptimizerInfo configurations, maximize,
complex parameters, capturable, differentiable (gradcheck), torch's positional order; each against torch
(RAdam with decoupled_weight_decay as given, threshold 5; AdamW with eps=0) and the float64 reference, on the
three paths."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from radam.adam import Adam
from radam.radam import RAdam
from tests.reference_optim import adam_reference, radam_reference
from tests.test_radam import BASE, assert_history_close, make_problem, run_torch

pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = [None, True, False]
PATH_IDS = ["fused", "foreach", "single"]

# torch/testing/_internal/common_optimizers.py (torch 2.14.1): optim_inputs_func_radam("cuda") and
# optim_inputs_func_adam("cuda") without amsgrad (radam.Adam has none). Written out because that module
# needs `expecttest`; test_the_configurations_are_torchs checks them against it where it imports.
TORCH_RADAM_INPUTS = {
    "default": {}, "non-default lr": {"lr": 2e-3}, "non-default eps": {"eps": 1e-6},
    "nonzero weight_decay": {"weight_decay": 0.1},
    "decoupled_weight_decay": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "maximize": {"weight_decay": 0.1, "maximize": True},
    "capturable": {"capturable": True}, "capturable, weight_decay": {"capturable": True, "weight_decay": 0.1},
    "capturable, weight_decay, decoupled_weight_decay": {"capturable": True, "weight_decay": 0.1,
                                                         "decoupled_weight_decay": True},
    "capturable, weight_decay, decoupled_weight_decay, tensor LR": {
        "lr": torch.tensor(0.001), "capturable": True, "weight_decay": 0.1, "decoupled_weight_decay": True},
}
TORCH_ADAM_INPUTS = {
    "default": {}, "non-default lr": {"lr": 0.01}, "nonzero weight_decay": {"weight_decay": 0.1},
    "maximize": {"weight_decay": 0.1, "maximize": True}, "capturable": {"capturable": True},
    "Tensor lr, Tensor betas, with capturable": {"lr": torch.tensor(0.001),
                                                 "betas": (torch.tensor(0.9), torch.tensor(0.99)),
                                                 "amsgrad": False, "capturable": True},
}


def test_the_configurations_are_torchs():
    common = pytest.importorskip("torch.testing._internal.common_optimizers",
                                 reason="torch's common_optimizers needs the expecttest package")
    radam = {oi.desc: oi.kwargs for oi in common.optim_inputs_func_radam("cuda")}
    adam = {oi.desc: oi.kwargs for oi in common.optim_inputs_func_adam("cuda") if not oi.kwargs.get("amsgrad")}
    assert list(radam) == list(TORCH_RADAM_INPUTS) and list(adam) == list(TORCH_ADAM_INPUTS)
    for ours, theirs in ((TORCH_RADAM_INPUTS, radam), (TORCH_ADAM_INPUTS, adam)):
        for desc in theirs:
            assert {k: repr(v) for k, v in theirs[desc].items()} == {k: repr(v) for k, v in ours[desc].items()}


def torch_side(kwargs: dict) -> dict:
    """torch.optim refuses capturable on CPU: the same step without it (and plain-number lr/betas)."""
    out = {k: v for k, v in kwargs.items() if k not in ("capturable", "amsgrad")}
    if isinstance(out.get("lr"), torch.Tensor):
        out["lr"] = out["lr"].item()
    if "betas" in out:
        out["betas"] = tuple(float(b) for b in out["betas"])
    return out


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("desc", list(TORCH_RADAM_INPUTS))
def test_torch_radam_configurations_match_torch(desc, foreach):
    """Each of torch's RAdam test configurations, with torch's meaning of the defaults (L2 weight decay unless
    decoupled_weight_decay=True is given), 60 steps in float64."""
    kwargs = TORCH_RADAM_INPUTS[desc]
    thetas0, grad_fn = make_problem()
    want = run_torch(lambda ps: torch.optim.RAdam(ps, **torch_side(kwargs)), thetas0, grad_fn, 60)
    got = run_torch(lambda ps: RAdam(ps, **{"decoupled_weight_decay": False, **kwargs}, foreach=foreach),
                    thetas0, grad_fn, 60)
    assert_history_close(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("desc", list(TORCH_ADAM_INPUTS))
def test_torch_adam_configurations_match_torch_adamw_with_eps_0(desc, foreach):
    kwargs = {**TORCH_ADAM_INPUTS[desc], "eps": 0.0}
    thetas0, grad_fn = make_problem()
    want = run_torch(lambda ps: torch.optim.AdamW(ps, **{"weight_decay": 0.0, **torch_side(kwargs)}),
                     thetas0, grad_fn, 60)
    got = run_torch(lambda ps: Adam(ps, **kwargs, foreach=foreach), thetas0, grad_fn, 60)
    assert_history_close(got, want, rtol=1e-8, atol=1e-10)  # eps = 0: m / sqrt(v) amplifies rounding where v is small


# -------------------------------------------------------- against the float64 reference -----------------------------

def negated(grad_fn):
    return lambda t, thetas: [-g for g in grad_fn(t, thetas)]


@pytest.mark.parametrize("capturable", [False, True], ids=["eager", "capturable"])
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("wd,decoupled", [(0.1, True), (0.1, False)], ids=["adamw", "l2"])
def test_maximize_is_minimizing_the_negated_objective(wd, decoupled, foreach, capturable):
    """maximize=True on gradients g is the reference on -g (weight decay still shrinks theta)."""
    thetas0, grad_fn = make_problem()
    opts = {**BASE, "weight_decay": wd, "decoupled_weight_decay": decoupled, "threshold": 4.0}
    want = radam_reference(thetas0, negated(grad_fn), [dict(idx=range(3), **opts)], steps=40)
    got = run_torch(lambda ps: RAdam(ps, **opts, maximize=True, foreach=foreach, capturable=capturable),
                    thetas0, grad_fn, 40)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)
    adam = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, freeze_steps=3)
    want = adam_reference(thetas0, negated(grad_fn), [dict(idx=range(3), **adam)], steps=30)
    got = run_torch(lambda ps: Adam(ps, **adam, maximize=True, foreach=foreach, capturable=capturable),
                    thetas0, grad_fn, 30)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)


CAPTURABLE_VARIANTS = {
    "default": {}, "decoupled_wd": dict(weight_decay=0.1), "l2": dict(weight_decay=0.1, decoupled_weight_decay=False),
    "no_sgd": dict(degenerated_to_sgd=False, weight_decay=0.1), "paper_threshold": dict(threshold=4.0),
    "beta2_0.6_sgd_forever": dict(betas=(0.9, 0.6), weight_decay=0.1), "threshold_20": dict(threshold=20.0),
}


@pytest.mark.parametrize("variant", list(CAPTURABLE_VARIANTS))
def test_capturable_on_cpu_matches_the_float64_reference(variant):
    """capturable=True (allowed on CPU here, unlike torch): the branch-free tensor step is Algorithm 2."""
    opts = {**BASE, **CAPTURABLE_VARIANTS[variant]}
    thetas0, grad_fn = make_problem()
    want = radam_reference(thetas0, grad_fn, [dict(idx=range(3), **opts)], steps=60)
    got = run_torch(lambda ps: RAdam(ps, **opts, capturable=True), thetas0, grad_fn, 60)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)


def test_capturable_adam_with_freeze_matches_the_float64_reference():
    opts = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1, freeze_steps=7)
    thetas0, grad_fn = make_problem()
    want = adam_reference(thetas0, grad_fn, [dict(idx=range(3), **opts)], steps=30)
    got = run_torch(lambda ps: Adam(ps, **opts, capturable=True), thetas0, grad_fn, 30)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)


def test_capturable_state_lives_on_the_device_and_round_trips():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = RAdam([p], capturable=True)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    step = opt.state[p]["step"]
    assert isinstance(step, torch.Tensor) and step.dtype == torch.float32 and step.device == p.device
    again = RAdam([p], capturable=True)
    again.load_state_dict(opt.state_dict())
    assert isinstance(again.state[p]["step"], torch.Tensor) and again.state[p]["step"].item() == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("decoupled", [True, False], ids=["adamw", "l2"])
def test_capturable_on_cuda_matches_torch_and_replays_in_a_cuda_graph(decoupled):
    """torch.optim.RAdam(capturable=True) on CUDA, step by step; then the same step captured in a CUDA graph
    and replayed equals eager steps."""
    thetas0, grad_fn = make_problem(shapes=[(64, 33), (7,)])
    params = {k: [torch.nn.Parameter(torch.tensor(x, device="cuda")) for x in thetas0] for k in ("ours", "torch")}
    opts = {"ours": RAdam(params["ours"], lr=0.01, weight_decay=0.1, decoupled_weight_decay=decoupled,
                          capturable=True),
            "torch": torch.optim.RAdam(params["torch"], lr=0.01, weight_decay=0.1,
                                       decoupled_weight_decay=decoupled, capturable=True)}
    for t in range(1, 31):
        grads = grad_fn(t, [p.detach().cpu().numpy() for p in params["torch"]])
        for k in opts:
            for p, g in zip(params[k], grads):
                p.grad = torch.tensor(g, device="cuda")
            opts[k].step()
    for a, b in zip(params["ours"], params["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # CUDA graph: capture one step on static gradients, replay it, compare with eager steps on a copy
    ours = params["ours"]
    twin = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    twin_opt = RAdam(twin, lr=0.01, weight_decay=0.1, decoupled_weight_decay=decoupled, capturable=True)
    twin_opt.load_state_dict(copy.deepcopy(opts["ours"].state_dict()))  # (state_dict() shares the tensors)
    for p in ours + twin:
        p.grad = torch.ones_like(p) * 0.1
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        opts["ours"].step()  # warm-up outside the graph
    torch.cuda.current_stream().wait_stream(stream)
    twin_opt.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opts["ours"].step()
    for _ in range(3):
        graph.replay()
        twin_opt.step()
    torch.cuda.synchronize()
    for a, b in zip(ours, twin):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------- complex --------------------------------------

def complex_problem():
    rng = np.random.default_rng(5)
    z0 = [rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3)), rng.standard_normal(5) + 0j]
    scale = [rng.uniform(0.5, 2.0, z.shape) for z in z0]

    def grad_fn(t, zs):
        noise = np.random.default_rng(300 + t)
        return [a * z - (0.5 - 0.2j) + 0.3 * (noise.standard_normal(z.shape) + 1j * noise.standard_normal(z.shape))
                for a, z in zip(scale, zs)]

    return z0, grad_fn


def run_complex(make_opt, steps):
    z0, grad_fn = complex_problem()
    params = [torch.nn.Parameter(torch.tensor(z, dtype=torch.complex128)) for z in z0]
    opt = make_opt(params)
    out = []
    for t in range(1, steps + 1):
        for p, g in zip(params, grad_fn(t, [p.detach().numpy() for p in params])):
            p.grad = torch.tensor(g, dtype=torch.complex128)
        opt.step()
        out.append([p.detach().numpy().copy() for p in params])
    return out


@pytest.mark.parametrize("capturable", [False, True], ids=["eager", "capturable"])
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_complex_parameters_match_torch_and_the_real_view_reference(foreach, capturable):
    """Complex parameters are optimized as their real views (torch's convention): the same as torch's
    RAdam / AdamW on the complex tensors, and as the float64 reference on (re, im) pairs."""
    want = run_complex(lambda ps: torch.optim.RAdam(ps, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), 30)
    got = run_complex(lambda ps: RAdam(ps, lr=0.01, weight_decay=0.1, foreach=foreach, capturable=capturable), 30)
    assert_history_close(got, want, rtol=1e-10, atol=1e-12)
    z0, grad_fn = complex_problem()
    as_real = lambda zs: [np.stack([z.real, z.imag], axis=-1) for z in zs]  # noqa: E731
    as_complex = lambda xs: [x[..., 0] + 1j * x[..., 1] for x in xs]  # noqa: E731
    ref = radam_reference(as_real(z0), lambda t, xs: as_real(grad_fn(t, as_complex(xs))),
                          [dict(idx=[0, 1], **{**BASE, "weight_decay": 0.1})], steps=30)
    assert_history_close(got, [as_complex(step) for step in ref], rtol=1e-10, atol=1e-12)
    want = run_complex(lambda ps: torch.optim.AdamW(ps, lr=0.01, eps=0.0, weight_decay=0.1), 30)
    got = run_complex(lambda ps: Adam(ps, lr=0.01, eps=0.0, weight_decay=0.1, foreach=foreach,
                                      capturable=capturable), 30)
    assert_history_close(got, want, rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------ differentiable ---------------------------------

def one_step(make_opt, p, grad, exp_avg, exp_avg_sq, step):
    """theta_t, m_t, v_t of one step from (theta, g, m, v) at step count `step`, as a function autograd and
    gradcheck can differentiate (torch's test_optim pattern: the optimizer works on clones)."""
    p = p.clone()
    p.grad = grad
    opt = make_opt([p])
    opt.state[p].update(step=step, exp_avg=exp_avg.clone(), exp_avg_sq=exp_avg_sq.clone())
    opt.step()
    return p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]


def step_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    p, grad, m = (torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(3))
    v = torch.rand(6, dtype=torch.float64, generator=gen).add_(0.1).requires_grad_()
    return p, grad, m, v


@pytest.mark.parametrize("step", [2, 10], ids=["sgd_phase", "rectified"])
@pytest.mark.parametrize("opts", [dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=False),
                                  dict(maximize=True)], ids=["adamw", "l2", "maximize"])
def test_differentiable_step_passes_gradcheck(opts, step):
    make = lambda ps: RAdam(ps, lr=0.01, differentiable=True, **opts)  # noqa: E731
    assert torch.autograd.gradcheck(lambda *xs: one_step(make, *xs, step=step), step_inputs())


def test_differentiable_adam_passes_gradcheck():
    make = lambda ps: Adam(ps, lr=0.01, eps=1e-3, weight_decay=0.1, differentiable=True)  # noqa: E731
    assert torch.autograd.gradcheck(lambda *xs: one_step(make, *xs, step=5), step_inputs(1))


@pytest.mark.parametrize("decoupled", [True, False], ids=["adamw", "l2"])
def test_differentiable_gradients_equal_torchs(decoupled):
    """d(sum of the step's outputs)/d(inputs) through our step equals the same through torch.optim.RAdam's
    differentiable step (rectified: t = 10, threshold 5)."""
    results = []
    for cls in (RAdam, torch.optim.RAdam):
        inputs = step_inputs(2)
        make = lambda ps: cls(ps, lr=0.01, weight_decay=0.1, decoupled_weight_decay=decoupled,  # noqa: E731
                              differentiable=True)
        outputs = one_step(make, *inputs, step=torch.tensor(9.0))
        results.append(torch.autograd.grad(sum(o.sum() for o in outputs), inputs))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- positional order --------------------------------

def test_torch_positional_order():
    """RAdam(params, lr, betas, eps, weight_decay, decoupled_weight_decay) and
    Adam(params, lr, betas, eps, weight_decay, amsgrad) as torch.optim.RAdam / AdamW."""
    p = torch.nn.Parameter(torch.zeros(1))
    g = RAdam([p], 2e-3, (0.8, 0.99), 1e-6, 0.1, False).param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"], g["decoupled_weight_decay"]) == (
        2e-3, (0.8, 0.99), 1e-6, 0.1, False)
    g = Adam([p], 2e-3, (0.8, 0.99), 1e-6, 0.1, False).param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (2e-3, (0.8, 0.99), 1e-6, 0.1)
    for cls in (RAdam, Adam):  # the paper's options stay keyword-only
        with pytest.raises(TypeError):
            cls([p], 1e-3, (0.9, 0.999), 1e-8, 0.0, False, 5.0)


def test_every_torch_radam_argument_is_accepted_with_torchs_name():
    import inspect

    torch_args = set(inspect.signature(torch.optim.RAdam.__init__).parameters) - {"self"}
    ours = set(inspect.signature(RAdam.__init__).parameters) - {"self"}
    assert torch_args <= ours
    torch_adamw = set(inspect.signature(torch.optim.AdamW.__init__).parameters) - {"self", "fused"}
    assert torch_adamw <= set(inspect.signature(Adam.__init__).parameters)
    assert not math.isnan(RAdam([torch.nn.Parameter(torch.zeros(1))]).defaults["lr"])
