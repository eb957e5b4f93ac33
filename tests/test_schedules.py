"""radam.schedules: lr sequences against closed-form values, per param group, through state_dict round trips."""

import math

import numpy as np
import pytest
import torch

from radam.schedules import InverseSqrt, LinearWarmupLinearDecay, MultiStep, UntunedLinearWarmup


def make_optimizer(lrs=(3e-4, 1e-3), betas=((0.9, 0.999), (0.9, 0.999))) -> torch.optim.Optimizer:
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr, "betas": b} for lr, b in zip(lrs, betas)
    ]
    return torch.optim.Adam(groups)


def lr_sequence(optimizer, scheduler, updates: int) -> list[list[float]]:
    """The lrs each of `updates` optimizer steps uses (entry t = the step taken with t updates already done)."""
    seq = []
    for _ in range(updates):
        seq.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seq


# ------------------------------------------------------------------------------- linear warmup + decay
def test_linear_warmup_linear_decay_closed_form_per_group():
    opt = make_optimizer()
    sched = LinearWarmupLinearDecay(opt, max_updates=100, warmup_updates=10, warmup_init_lr=1e-8, min_lr=1e-9)
    seq = lr_sequence(opt, sched, 120)
    for g, peak in enumerate((3e-4, 1e-3)):
        assert seq[0][g] == pytest.approx(1e-8, rel=1e-12)  # first update: t = 0 -> warmup_init_lr (fairseq)
        assert seq[4][g] == pytest.approx(1e-8 + (peak - 1e-8) * 4 / 10, rel=1e-12)
        assert seq[10][g] == pytest.approx(peak, rel=1e-12)
        assert seq[55][g] == pytest.approx(peak + (1e-9 - peak) * 45 / 90, rel=1e-12)
        assert seq[100][g] == seq[119][g] == pytest.approx(1e-9, rel=1e-12)


def test_linear_decay_without_warmup_paper_nmt():
    opt = make_optimizer(lrs=(3e-4,), betas=((0.9, 0.999),))
    sched = LinearWarmupLinearDecay(opt, max_updates=70000, warmup_updates=0)
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-4)  # t = 0 uses the peak lr
    sched.last_epoch = 34999
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-4 + (1e-9 - 3e-4) * 35000 / 70000, rel=1e-12)


def test_per_group_absolute_warmup_init_and_min_lr():
    opt = make_optimizer()
    sched = LinearWarmupLinearDecay(
        opt, max_updates=20, warmup_updates=4, warmup_init_lr=[0.0, 1e-4], min_lr=[0.0, 2e-5]
    )
    seq = lr_sequence(opt, sched, 21)
    assert seq[0] == pytest.approx([0.0, 1e-4]) and seq[2] == pytest.approx([1.5e-4, 1e-4 + 9e-4 / 2])
    assert seq[20] == pytest.approx([0.0, 2e-5])


# ------------------------------------------------------------------------------------------ inverse sqrt
def test_inverse_sqrt_matches_fairseq_formula():
    opt = make_optimizer()
    sched = InverseSqrt(opt, warmup_updates=8, warmup_init_lr=1e-7)
    seq = lr_sequence(opt, sched, 50)
    for g, peak in enumerate((3e-4, 1e-3)):
        for t in (0, 3, 7):
            assert seq[t][g] == pytest.approx(1e-7 + t * (peak - 1e-7) / 8, rel=1e-12)
        for t in (8, 9, 32, 49):
            assert seq[t][g] == pytest.approx(peak * math.sqrt(8) / math.sqrt(t), rel=1e-12)


# --------------------------------------------------------------------------------------------- multi-step
def test_multi_step_counts_updates():
    opt = make_optimizer()
    sched = MultiStep(opt, milestones=[30, 10], gamma=0.1)
    seq = lr_sequence(opt, sched, 40)
    for g, peak in enumerate((3e-4, 1e-3)):
        assert seq[9][g] == pytest.approx(peak) and seq[10][g] == pytest.approx(peak * 0.1)
        assert seq[29][g] == pytest.approx(peak * 0.1) and seq[30][g] == pytest.approx(peak * 0.01)


def test_multi_step_milestones_in_epochs():
    opt = make_optimizer()
    sched = MultiStep(opt, milestones=[3, 1], gamma=0.5, updates_per_epoch=7)  # updates 7 and 21
    seq = lr_sequence(opt, sched, 25)
    assert [seq[t][0] / 3e-4 for t in (6, 7, 20, 21)] == pytest.approx([1.0, 0.5, 0.5, 0.25])
    with pytest.raises(ValueError, match="updates_per_epoch must be an integer >= 1"):
        MultiStep(make_optimizer(), milestones=[1], updates_per_epoch=0)


# ------------------------------------------------------------------------------------------ untuned warmup
def test_untuned_warmup_reads_beta2_per_group():
    opt = make_optimizer(betas=((0.9, 0.999), (0.9, 0.99)))
    sched = UntunedLinearWarmup(opt)
    seq = lr_sequence(opt, sched, 2100)
    # group 0: warmup over 2 / (1 - 0.999) = 2000 updates; group 1: over 200
    for t in (0, 1, 999, 1998):
        assert seq[t][0] == pytest.approx(3e-4 * (1 - 0.999) / 2 * (t + 1), rel=1e-9)
    assert seq[1999][0] == seq[2099][0] == pytest.approx(3e-4)
    assert seq[0][1] == pytest.approx(1e-3 * 0.005, rel=1e-9)
    assert seq[99][1] == pytest.approx(1e-3 * 0.5, rel=1e-9) and seq[199][1] == pytest.approx(1e-3)


def test_untuned_warmup_explicit_beta2_and_missing_betas():
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="pass beta2= explicitly"):
        UntunedLinearWarmup(sgd)
    UntunedLinearWarmup(sgd, beta2=0.9)
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.1 * 0.05)


def test_untuned_warmup_times_linear_decay():
    opt = make_optimizer()
    sched = UntunedLinearWarmup(opt, max_updates=4000, min_lr=1e-9)
    seq = lr_sequence(opt, sched, 4001)
    for g, peak in enumerate((3e-4, 1e-3)):
        for t in (0, 500, 1999, 3000, 4000):
            omega = min(1.0, 0.0005 * (t + 1))
            decay = peak + (1e-9 - peak) * min(t, 4000) / 4000
            assert seq[t][g] == pytest.approx(omega * decay, rel=1e-9)


def test_untuned_warmup_times_step_decay():
    opt = make_optimizer(betas=((0.9, 0.99), (0.9, 0.99)))
    sched = UntunedLinearWarmup(opt, milestones=[150, 300], gamma=0.5)
    seq = lr_sequence(opt, sched, 301)
    for g, peak in enumerate((3e-4, 1e-3)):
        assert seq[149][g] == pytest.approx(0.005 * 150 * peak, rel=1e-9)
        assert seq[150][g] == pytest.approx(0.005 * 151 * peak * 0.5, rel=1e-9)
        assert seq[300][g] == pytest.approx(peak * 0.25, rel=1e-9)


# --------------------------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize(
    "build",
    [
        lambda o: LinearWarmupLinearDecay(o, max_updates=30, warmup_updates=7),
        lambda o: InverseSqrt(o, warmup_updates=5, warmup_init_lr=1e-6),
        lambda o: MultiStep(o, milestones=[5, 12], gamma=0.3),
        lambda o: UntunedLinearWarmup(o, beta2=0.9, max_updates=30),
    ],
    ids=["linear", "inverse_sqrt", "multistep", "untuned"],
)
def test_state_dict_round_trip_continues_the_sequence(build):
    opt = make_optimizer()
    sched = build(opt)
    full = lr_sequence(opt, sched, 25)

    opt_a = make_optimizer()
    sched_a = build(opt_a)
    lr_sequence(opt_a, sched_a, 10)
    saved_opt, saved_sched = opt_a.state_dict(), sched_a.state_dict()

    opt_b = make_optimizer()
    sched_b = build(opt_b)  # build first, then load (torch's documented order)
    opt_b.load_state_dict(saved_opt)
    sched_b.load_state_dict(saved_sched)
    np.testing.assert_allclose(lr_sequence(opt_b, sched_b, 15), full[10:], rtol=1e-12)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "build, match",
    [
        (lambda o: LinearWarmupLinearDecay(o, max_updates=10, warmup_updates=10), "must exceed warmup_updates"),
        (lambda o: LinearWarmupLinearDecay(o, max_updates=10, warmup_updates=-1), "warmup_updates must be an integer"),
        (lambda o: LinearWarmupLinearDecay(o, max_updates=10, min_lr=[0.0]), "one per group"),
        (lambda o: InverseSqrt(o, warmup_updates=0), "warmup_updates must be an integer >= 1"),
        (lambda o: MultiStep(o, milestones=[0]), "every milestone must be an integer >= 1"),
        (lambda o: UntunedLinearWarmup(o, beta2=1.0), "beta2 must lie in"),
        (lambda o: UntunedLinearWarmup(o, max_updates=10, milestones=[5]), "not both"),
    ],
)
def test_bad_arguments_raise_clear_error(build, match):
    with pytest.raises(ValueError, match=match):
        build(make_optimizer())
