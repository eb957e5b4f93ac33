"""torch.compile of a whole training step (forward, backward, opt.step()) with radam.RAdam / radam.Adam:
compiled == eager over 20 steps for every foreach value, and no recompilation once the state exists (the
step-dependent scalars are tensors in the traced step). Frames are counted by a counting backend, as
optax's no-recompile test counts traces. The default suite uses the aot_eager backend (dynamo + AOT
functionalization, where the fused path used to fail); the slow suite runs inductor."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from radam.adam import Adam
from radam.radam import RAdam

pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = [None, True, False]
PATH_IDS = ["fused", "foreach", "single"]
OPTIMIZERS = {
    "radam": lambda ps, **kw: RAdam(ps, lr=1e-2, weight_decay=0.1, **kw),
    "radam_paper_rule_l2": lambda ps, **kw: RAdam(ps, lr=1e-2, weight_decay=0.1, threshold=4.0,
                                                  decoupled_weight_decay=False, **kw),
    "radam_first_steps": lambda ps, **kw: RAdam(ps, lr=1e-2, weight_decay=0.1, first_steps=(("sgd", 2), ("adam", 3)),
                                                **kw),
    "adam_2k_style": lambda ps, **kw: Adam(ps, lr=1e-2, weight_decay=0.1, freeze_steps=3, **kw),
}


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def train(make_opt, compiled_backend=None, steps=20, scheduler=None):
    """Train the MLP for `steps` steps, the whole step compiled if a backend is given; returns the model,
    and the frame counts after each step (the backend's)."""
    model = make_model()
    opt = make_opt(model.parameters())
    sched = scheduler(opt) if scheduler else None
    data = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    target = torch.randn(16, 1, generator=torch.Generator().manual_seed(2))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(data), target)
        loss.backward()
        opt.step()
        return loss

    counter = CompileCounterWithBackend(compiled_backend) if compiled_backend else None
    run = torch.compile(step, backend=counter) if counter else step
    frames = []
    for _ in range(steps):
        run()
        if sched:
            sched.step()
        frames.append(counter.frame_count if counter else 0)
    return model, frames


def check_compiled_equals_eager(name, foreach, backend):
    torch._dynamo.reset()
    eager, _ = train(lambda ps: OPTIMIZERS[name](ps, foreach=foreach))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled, frames = train(lambda ps: OPTIMIZERS[name](ps, foreach=foreach), compiled_backend=backend)
    ours = [str(w.message) for w in caught if "radam" in str(w.filename) or "fused Adam" in str(w.message)]
    assert not ours, ours  # no fallback warnings from the fused path under compile
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
    assert frames[-1] == frames[2], f"recompiled after step 3: frames per step {frames}"
    return frames


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("name", ["radam", "adam_2k_style"])
def test_compiled_training_step_equals_eager_without_recompiling(name, foreach):
    check_compiled_equals_eager(name, foreach, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_inductor_compiled_training_step_equals_eager_without_recompiling(name, foreach):
    check_compiled_equals_eager(name, foreach, "inductor")


def test_tensor_lr_with_a_scheduler_does_not_recompile():
    """A tensor lr (as torch recommends for compiled steps) changed by a scheduler every step: one graph."""
    torch._dynamo.reset()

    def make(ps):
        return RAdam(ps, lr=torch.tensor(1e-2), weight_decay=0.1)

    decay = lambda epoch: 1.0 / (1.0 + 0.1 * epoch)  # noqa: E731
    sched = lambda o: torch.optim.lr_scheduler.LambdaLR(o, decay)  # noqa: E731
    eager, _ = train(make, scheduler=sched)
    compiled, frames = train(make, compiled_backend="aot_eager", scheduler=sched)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
    assert frames[-1] == frames[2], f"recompiled after step 3: frames per step {frames}"


def test_compiled_step_creates_tensor_steps_that_eager_steps_continue():
    """State made under compile holds 0-d tensor steps; an eager step afterwards continues the count."""
    torch._dynamo.reset()
    model = make_model()
    opt = RAdam(model.parameters(), lr=1e-2)
    compiled_step = torch.compile(opt.step, backend="aot_eager")
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        compiled_step()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(isinstance(s["step"], torch.Tensor) and s["step"].item() == 4 for s in opt.state.values())
