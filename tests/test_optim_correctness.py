"""radam.RAdam / radam.Adam on every path: non-contiguous parameters (views, step slices, transposes,
channels_last, expanded and odd gradient strides) against the float64 reference, and decoupled weight decay
that keeps its size in float32 down to lr*wd = 1e-10 (and in bf16/fp16 as far as their spacing allows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radam import _kernels
from radam.adam import Adam
from radam.radam import RAdam
from tests.reference_optim import adam_reference, radam_reference

pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = [None, True, False]
PATH_IDS = ["fused", "foreach", "single"]
RADAM = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, threshold=5.0, degenerated_to_sgd=True,
             decoupled_weight_decay=True)
ADAM = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, freeze_steps=2)


# ------------------------------------------------------------------ layouts ----------------------------------------

def strided_view(base_shape, index):
    """A leaf parameter that is a view into a larger float64 tensor (the rest of which must stay untouched)."""
    base = torch.randn(*base_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return base, base[index].requires_grad_()


def layouts():
    """name -> (base tensor or None, parameter, function making a gradient of the right shape from an array)."""
    out = {}
    for name, shape, index in [("last_dim_slice", (6, 5, 3), (Ellipsis, 0)), ("step_slice", (10, 4), slice(None, None, 2)),
                               ("column_block", (5, 9), (slice(None), slice(2, 6)))]:
        base, p = strided_view(shape, index)
        out[name] = (base, p, lambda g: torch.tensor(g))
    gen = torch.Generator().manual_seed(4)
    out["transposed"] = (None, torch.randn(7, 4, dtype=torch.float64, generator=gen).t().requires_grad_(),
                         lambda g: torch.tensor(g).t().contiguous().t())
    cl = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen).to(memory_format=torch.channels_last)
    out["channels_last"] = (None, cl.requires_grad_(),
                            lambda g: torch.tensor(g).to(memory_format=torch.channels_last))
    out["expanded_grad"] = (None, torch.randn(4, 6, dtype=torch.float64, generator=gen).requires_grad_(),
                            lambda g: torch.tensor(g[:1]).expand(4, 6))  # stride 0 along dim 0
    out["grad_other_strides"] = (None, torch.randn(4, 6, dtype=torch.float64, generator=gen).requires_grad_(),
                                 lambda g: torch.tensor(g).t().contiguous().t())  # p row-major, g column-major
    return out


LAYOUTS = list(layouts())


def grad_fn_for(shape):
    scale = np.random.default_rng(7).uniform(0.5, 2.0, shape)

    def grad_fn(t, thetas):
        g = scale * thetas[0] - 0.3 + 0.5 * np.random.default_rng(100 + t).standard_normal(shape)
        return [g]

    return grad_fn


def run_layout(make_opt, layout, steps, expand=False):
    base, p, make_grad = layouts()[layout]
    outside = None if base is None else base.detach().clone()
    grad_fn = grad_fn_for(tuple(p.shape))
    if layout == "expanded_grad":  # the gradient repeats its first row; the reference sees the same array
        inner = grad_fn
        grad_fn = lambda t, th: [np.broadcast_to(inner(t, th)[0][:1], th[0].shape).copy()]  # noqa: E731
    opt = make_opt([p])
    history = []
    for t in range(1, steps + 1):
        p.grad = make_grad(grad_fn(t, [p.detach().numpy().copy()])[0])
        opt.step()
        history.append(p.detach().numpy().copy())
    return p, base, outside, grad_fn, history


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algorithm", ["radam", "adam"])
def test_non_contiguous_parameters_match_the_float64_reference(algorithm, layout, foreach):
    steps = 12  # RAdam: SGD-momentum steps 1-5, rectified from 6; Adam: frozen 1-2, then updating
    if algorithm == "radam":
        make, ref, opts = (lambda ps: RAdam(ps, **RADAM, foreach=foreach)), radam_reference, RADAM
    else:
        make, ref, opts = (lambda ps: Adam(ps, **ADAM, foreach=foreach)), adam_reference, ADAM
    p0 = layouts()[layout][1].detach().numpy().copy()
    p, base, outside, grad_fn, got = run_layout(make, layout, steps)
    want = ref([p0], grad_fn, [dict(idx=[0], **opts)], steps)
    for t, (g, w) in enumerate(zip(got, want), start=1):
        np.testing.assert_allclose(g, w[0], rtol=1e-10, atol=1e-12, err_msg=f"step {t}")
    if base is not None:  # the elements of the base tensor outside the view are untouched
        mask = torch.ones_like(base, dtype=torch.bool)
        index = {"last_dim_slice": (Ellipsis, 0), "step_slice": slice(None, None, 2),
                 "column_block": (slice(None), slice(2, 6))}[layout]
        mask[index] = False
        torch.testing.assert_close(base.detach()[mask], outside[mask], rtol=0, atol=0)


def test_dense_layouts_still_take_the_fused_kernel(monkeypatch):
    """Transposed and channels_last parameters (dense) go to the kernel; strided views do not."""
    seen = []
    kernel = torch._fused_adamw_

    def counting(params, *args, **kwargs):
        seen.extend(tuple(p.shape) for p in params)
        return kernel(params, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adamw_", counting)
    ls = layouts()
    params = [ls[name][1] for name in ("transposed", "channels_last", "step_slice", "last_dim_slice")]
    opt = RAdam(params, weight_decay=0.1)
    for _ in range(6):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    assert set(seen) == {(4, 7), (2, 3, 4, 5)}


# --------------------------------------------------------------- weight decay -------------------------------------

def effective_decay(make_opt, lr_wd, dtype, n=200_000, steps=30, lr=1e-3, scale=0.5, seed=0):
    """(decay measured in `dtype`) / (the exact decay): both from the difference to the same run without
    decay, the exact one in float64. The gradients do not depend on theta, so m and v are the same with and
    without decay and the only difference between the runs is the decay (plus the rounding of `dtype`).
    The steps (~lr) must be several spacings of theta (~scale * 2^-mantissa bits) for the rounding to be
    unbiased; a step below half a spacing never moves theta, decay or not."""
    p0 = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale

    def run(wd, dt):
        p = p0.to(dt).clone().requires_grad_()
        opt = make_opt([p], lr=lr, weight_decay=wd)
        for t in range(steps):
            p.grad = torch.randn(n, generator=torch.Generator().manual_seed(1000 + t)).to(dt)
            opt.step()
        return p.detach().double()

    no_decay = run(0.0, torch.float64)
    exact = (no_decay - run(lr_wd / lr, torch.float64)) @ p0
    measured = (run(0.0, dtype) - run(lr_wd / lr, dtype)) @ p0
    return (measured / exact).item()


def radam_rectified(ps, **kw):  # threshold 4 and b2 = 0.99: rectified from t = 5, so most steps are Adam-form
    return RAdam(ps, betas=(0.9, 0.99), threshold=4.0, **kw)


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("lr_wd", [1e-4, 1e-6, 3e-8])
@pytest.mark.parametrize("algorithm", ["radam", "adam"])
def test_decoupled_decay_keeps_its_size_in_float32(algorithm, lr_wd, foreach):
    """At lr*wd = 3e-8 (the paper's NMT setting) theta * (1 - lr wd) rounds the factor to 1 - 2^-24 (2x the
    decay) and theta - lr wd theta rounds back to theta; here the decay is within 2 % of the exact one."""
    cls = radam_rectified if algorithm == "radam" else Adam
    ratio = effective_decay(lambda ps, **kw: cls(ps, **kw, foreach=foreach), lr_wd, torch.float32)
    assert ratio == pytest.approx(1.0, abs=0.02)


def test_torchs_factor_form_is_what_the_decay_test_catches():
    """The measurement above is sharp enough to see torch.optim.AdamW's rounded factor at lr*wd = 3e-8."""
    ratio = effective_decay(lambda ps, **kw: torch.optim.AdamW(ps, **kw, eps=1e-8), 3e-8, torch.float32)
    assert ratio > 1.5


@pytest.mark.slow
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("algorithm", ["radam", "adam"])
def test_decoupled_decay_keeps_its_size_in_float32_down_to_1e_10(algorithm, foreach):
    """lr*wd = 1e-10 moves a float32 theta by ~0.001 of its spacing per step: kept only through the one
    rounding of decay + step together, so it is measured over many elements and steps (noise ~2 %)."""
    cls = radam_rectified if algorithm == "radam" else Adam
    ratio = effective_decay(lambda ps, **kw: cls(ps, **kw, foreach=foreach), 1e-10, torch.float32,
                            n=1_000_000, steps=200)
    assert ratio == pytest.approx(1.0, abs=0.1)


HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_decoupled_decay_keeps_its_size_in_half_precision(dtype, foreach):
    """bf16 / fp16 parameters, lr*wd = 1e-3 (~0.2 of a bf16 spacing): the decay enters the one rounding of
    theta, so it has its exact size on average (torch.optim.AdamW's separate theta * (1 - lr wd): none)."""
    measure = lambda make: effective_decay(make, 1e-3, dtype, n=400_000, steps=20, lr=1e-2, scale=0.02)  # noqa
    assert measure(lambda ps, **kw: radam_rectified(ps, **kw, foreach=foreach)) == pytest.approx(1.0, abs=0.03)
    if dtype == torch.bfloat16:
        assert measure(lambda ps, **kw: torch.optim.AdamW(ps, **kw)) < 0.1


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_fused_path_keeps_small_decays_in_half_precision(dtype):
    """The fused kernel computes bf16 / fp16 steps in float32, so lr*wd = 1e-4 (0.02 of a bf16 spacing) keeps
    its size too (the bf16-arithmetic foreach and single paths round the update itself to bf16 and keep
    ~85 % of it there)."""
    ratio = effective_decay(lambda ps, **kw: radam_rectified(ps, **kw), 1e-4, dtype, n=400_000, steps=20,
                            lr=1e-2, scale=0.02)
    assert ratio == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_paper_decay_in_half_precision_is_a_rare_rounding_towards_zero(dtype, foreach):
    """At lr*wd = 3e-8, ~1e-5 of a bf16 spacing, the decay can only show as an occasional rounding of theta
    one spacing towards 0: never a visible change of every element, never a growth on average."""
    n, lr = 200_000, 1e-2
    p0 = (0.02 * torch.randn(n, generator=torch.Generator().manual_seed(1))).to(dtype)
    runs = []
    for wd in (0.0, 3e-8 / lr):
        p = p0.clone().requires_grad_()
        opt = radam_rectified([p], lr=lr, weight_decay=wd, foreach=foreach)
        for t in range(10):
            p.grad = torch.randn(n, generator=torch.Generator().manual_seed(50 + t)).to(dtype)
            opt.step()
        runs.append(p.detach().double())
    moved = runs[1] != runs[0]
    assert moved.float().mean().item() < 1e-3
    assert (runs[1].abs()[moved].sum() <= runs[0].abs()[moved].sum()).item()


def test_kernel_decay_carries_what_the_float32_factor_cannot_hold():
    """The fused path's decay over 1000 steps of lr*wd = 3e-6 is the sum asked for, to within 2^-25."""
    group = {"lr": 1e-3, "weight_decay": 3e-3, "kernel_decay_carry": 0.0}
    applied = [_kernels.kernel_decay(group, torch.float32) for _ in range(1000)]
    assert all(x * 2 ** 24 == round(x * 2 ** 24) for x in applied)  # each one a factor float32 can hold
    assert abs(sum(applied) - 1000 * 3e-6) <= 2 ** -25
    assert _kernels.kernel_decay({"lr": 1e-3, "weight_decay": 3e-3, "kernel_decay_carry": 0.0},
                                 torch.float64) == 1e-3 * 3e-3


def test_buckets_of_one_group_share_the_steps_kernel_decay(monkeypatch):
    """Two buckets in one step (a bf16 and a float32 parameter) get the same kernel decay, and the carry
    advances once per step, not once per bucket."""
    decays = []
    kernel = torch._fused_adamw_

    def recording(params, *args, lr, weight_decay, **kwargs):
        decays.append(lr * weight_decay)
        return kernel(params, *args, lr=lr, weight_decay=weight_decay, **kwargs)

    monkeypatch.setattr(torch, "_fused_adamw_", recording)
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))]
    opt = Adam(params, lr=1e-3, weight_decay=3e-3)  # lr*wd = 3e-6 = 50.3 quanta of 2^-24
    for _ in range(100):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    assert decays[0::2] == decays[1::2]
    assert abs(sum(decays[0::2]) - 100 * 3e-6) <= 2 ** -25
