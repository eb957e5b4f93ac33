"""The checks the established optimizer collections apply to every optimizer (timm's optimizer tests, optax's
alias_test.py, torch's OptimizerInfo), written for radam.RAdam and radam.Adam: convergence to the known optima
of Rosenbrock, Beale and ill-conditioned quadratics from several starts, training a small network, validation
of every argument, and state-dict round trips through torch.save / torch.load(weights_only=True)."""

from __future__ import annotations

import io

import pytest
import torch

from radam.adam import Adam
from radam.radam import RAdam
from tests.test_radam import make_quadratic, rosenbrock

pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = [None, True, False]
PATH_IDS = ["fused", "foreach", "single"]
OPTIMIZERS = {  # b2 = 0.99 so that r_t is near 1 within the runs; no SGD-phase jump (degenerated_to_sgd=False)
    "radam": lambda ps, lr, **kw: RAdam(ps, lr=lr, betas=(0.9, 0.99), degenerated_to_sgd=False, **kw),
    "radam_paper_rule": lambda ps, lr, **kw: RAdam(ps, lr=lr, betas=(0.9, 0.99), threshold=4.0,
                                                   degenerated_to_sgd=False, **kw),
    "adam": lambda ps, lr, **kw: Adam(ps, lr=lr, betas=(0.9, 0.99), **kw),
}


def beale(x):
    """Beale's function: minimum 0 at (3, 0.5)."""
    a, b = x[0], x[1]
    return (1.5 - a + a * b) ** 2 + (2.25 - a + a * b ** 2) ** 2 + (2.625 - a + a * b ** 3) ** 2


def minimize(f, x0, make_opt, lr, steps=3000):
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = make_opt([x], lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(steps):
        opt.zero_grad()
        f(x).backward()
        opt.step()
        sched.step()
    return x.detach()


# the default path in the default suite, the other two (equal to it to rounding, tests/test_radam.py) in the slow one
PATHS_DEFAULT_FIRST = [None, pytest.param(True, marks=pytest.mark.slow), pytest.param(False, marks=pytest.mark.slow)]


@pytest.mark.parametrize("foreach", PATHS_DEFAULT_FIRST, ids=PATH_IDS)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("problem,start", [
    ("rosenbrock", (-1.5, 2.0)), ("rosenbrock", (0.0, 0.0)), ("rosenbrock", (2.0, -1.0)),
    ("beale", (1.0, 1.0)), ("beale", (4.0, 1.2)), ("beale", (0.5, -0.5)),
])
def test_converges_to_the_known_optimum_from_several_starts(problem, start, name, foreach):
    f, optimum, lr = {"rosenbrock": (rosenbrock, (1.0, 1.0), 0.05), "beale": (beale, (3.0, 0.5), 0.05)}[problem]
    x = minimize(f, list(start), lambda ps, lr: OPTIMIZERS[name](ps, lr, foreach=foreach), lr)
    torch.testing.assert_close(x, torch.tensor(optimum, dtype=torch.float64), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converges_on_ill_conditioned_quadratics(name, seed):
    """f = 1/2 (x - c)^T H (x - c), condition number 1e3, from a random start: the optimum c."""
    f, optimum = make_quadratic(n=10, seed=seed)
    start = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + seed)) * 3
    x = minimize(f, start.tolist(), lambda ps, lr: OPTIMIZERS[name](ps, lr), lr=0.05)
    torch.testing.assert_close(x, optimum, rtol=0, atol=1e-4)


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_trains_a_small_network(name, foreach):
    """A 2-layer MLP learns a teacher MLP's outputs: the loss falls by 20x in 300 steps (weight decay on)."""
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(256, 8, generator=gen)
    with torch.no_grad():
        teacher = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        target = teacher(data)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = OPTIMIZERS[name](model.parameters(), 1e-2, weight_decay=1e-4, foreach=foreach)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(data), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20


# ------------------------------------------------------------ validation of every argument ------------------------

P = [torch.nn.Parameter(torch.zeros(1))]
BAD_ARGUMENTS = [  # (optimizer, kwargs, words the one-line message must contain)
    *[(cls, kw, words) for cls in (RAdam, Adam) for kw, words in [
        (dict(lr=-1.0), ["Invalid learning rate: -1.0", "lr"]),
        (dict(lr="0.1"), ["Invalid learning rate", "real number"]),
        (dict(lr=torch.tensor([0.1, 0.2])), ["Tensor lr must be 1-element"]),
        (dict(betas=(1.0, 0.0)), ["Invalid beta parameter at index 0: 1.0"]),
        (dict(betas=(0.9, -0.5)), ["Invalid beta parameter at index 1: -0.5"]),
        (dict(betas=(0.9, 0.99, 0.999)), ["betas must be a pair"]),
        (dict(betas="0.9,0.99"), ["betas must be a pair"]),
        (dict(eps=-1e-8), ["Invalid epsilon value: -1e-08", "eps"]),
        (dict(eps=None), ["Invalid epsilon value: None", "real number"]),
        (dict(weight_decay=-1e-2), ["Invalid weight_decay value: -0.01"]),
        (dict(foreach="yes"), ["foreach must be None, True or False"]),
        (dict(maximize=1), ["maximize must be True or False"]),
        (dict(capturable=None), ["capturable must be True or False"]),
        (dict(differentiable="no"), ["differentiable must be True or False"]),
    ]],
    (RAdam, dict(threshold=3.0), ["Invalid threshold: 3.0", "the paper uses 4"]),
    (RAdam, dict(threshold=float("nan")), ["Invalid threshold"]),
    (RAdam, dict(degenerated_to_sgd=None), ["degenerated_to_sgd must be True or False"]),
    (RAdam, dict(decoupled_weight_decay="True"), ["decoupled_weight_decay must be True or False"]),
    (RAdam, dict(first_steps="sgd"), ["first_steps must be a sequence of (rule, n) pairs"]),
    (RAdam, dict(first_steps=[("adam",)]), ["is not a (rule, n) pair"]),
    (RAdam, dict(first_steps=[("nesterov", 4)]), ["rule 'nesterov' is unknown", "sgd | adam | skip"]),
    (RAdam, dict(first_steps=[("sgd", -1)]), ["count -1", "integer >= 0"]),
    (Adam, dict(freeze_steps=-5), ["Invalid freeze_steps: -5"]),
    (Adam, dict(freeze_steps=True), ["Invalid freeze_steps: True"]),
    (Adam, dict(amsgrad=True), ["amsgrad=True is not supported", "torch.optim.AdamW(amsgrad=True)"]),
]


@pytest.mark.parametrize("cls,kwargs,words", BAD_ARGUMENTS,
                         ids=[f"{c.__name__}-{'-'.join(k)}-{i}" for i, (c, k, _) in enumerate(BAD_ARGUMENTS)])
def test_every_argument_is_validated_with_a_one_line_message(cls, kwargs, words):
    with pytest.raises(ValueError) as err:
        cls(P, **kwargs)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    opt = cls(P)  # the same check on a group added later
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], **kwargs})


@pytest.mark.parametrize("cls", [RAdam, Adam])
def test_bad_parameters_are_refused_as_torch_does(cls):
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([])
    with pytest.raises(TypeError):
        cls(torch.zeros(2, requires_grad=True))  # a tensor, not an iterable of them


# --------------------------------------------------------------------- state dicts ---------------------------------

def train_steps(params, opt, steps, start):
    for t in range(start, start + steps):
        for i, p in enumerate(params):
            gen = torch.Generator().manual_seed(10 * t + i)
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        opt.step()


def saved_and_loaded(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


ROUND_TRIPS = {
    "radam": lambda ps, **kw: RAdam(ps, lr=0.01, weight_decay=0.1, **kw),
    "radam_first_steps_l2": lambda ps, **kw: RAdam(ps, lr=0.01, weight_decay=0.1, decoupled_weight_decay=False,
                                                   first_steps=[["sgd", 3], ["adam", 2]], threshold=6.0, **kw),
    "radam_tiny_decay": lambda ps, **kw: RAdam(ps, lr=1e-3, weight_decay=3e-3, **kw),  # kernel decay carry
    "adam_2k": lambda ps, **kw: Adam(ps, lr=0.01, weight_decay=0.1, freeze_steps=4, **kw),
}


@pytest.mark.parametrize("capturable", [False, True], ids=["eager", "capturable"])
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_state_dict_round_trip_through_weights_only_load(name, foreach, capturable):
    """Save mid-run with torch.save, load with weights_only=True into a fresh optimizer built with other
    options: it continues exactly as the uninterrupted run."""
    make = lambda ps: ROUND_TRIPS[name](ps, foreach=foreach, capturable=capturable)  # noqa: E731
    init = [torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), torch.randn(5)]
    straight = [torch.nn.Parameter(x.clone()) for x in init]
    opt = make(straight)
    train_steps(straight, opt, 14, 1)

    resumed = [torch.nn.Parameter(x.clone()) for x in init]
    first = make(resumed)
    train_steps(resumed, first, 7, 1)
    saved = saved_and_loaded({"params": [p.detach() for p in resumed], "opt": first.state_dict()})
    resumed = [torch.nn.Parameter(x.clone()) for x in saved["params"]]
    second = type(first)(resumed, lr=0.5)  # options come from the state dict
    second.load_state_dict(saved["opt"])
    train_steps(resumed, second, 7, 8)
    for a, b in zip(straight, resumed):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=0, atol=0)


def test_torch_radam_loads_our_state_dict_and_continues_like_us():
    """The other direction: torch.optim.RAdam(decoupled_weight_decay=True) takes our state dict (int steps)."""
    init = [torch.randn(4, 3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    ours_p = [torch.nn.Parameter(x.clone()) for x in init]
    ours = RAdam(ours_p, lr=0.01, weight_decay=0.1)
    train_steps(ours_p, ours, 10, 1)
    torch_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    theirs = torch.optim.RAdam(torch_p, decoupled_weight_decay=True)
    theirs.load_state_dict(saved_and_loaded(ours.state_dict()))
    train_steps(ours_p, ours, 10, 11)
    train_steps(torch_p, theirs, 10, 11)
    for a, b in zip(ours_p, torch_p):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-10, atol=1e-12)
