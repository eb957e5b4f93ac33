"""Points 2 and 3 of issue 13: our loss, gradients and training updates are fairseq's.

Point 2: on real Ding batches, our ``NMTTask.loss`` (experiments/nmt/loss.py) against fairseq's
``label_smoothed_cross_entropy`` criterion: loss, nll_loss, sample_size and every parameter gradient.
Point 3: 50 updates of fairseq's own ``Trainer`` (``train_step`` as fairseq-train calls it) against our loop's
``train_step`` (experiments/loop.py) on the same batches, dropout 0, for each optimizer x schedule of the
paper's recipes; the lr, the loss and every parameter are compared after every update.

float64 throughout, with fairseq's float32 softmax casts lifted (``float64_attention``) so that a
discrepancy of the formulas is not hidden under float32 rounding.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

import radam
from experiments import loop
from experiments.distributed import Dist
from experiments.nmt.batching import collate
from experiments.nmt.fairseq_compat import from_fairseq_state_dict
from radam.schedules import InverseSqrt, LinearWarmupLinearDecay
from tests.equivalence.fairseq_env import (EPS, Pair, ding_batches, fairseq_sample, float64_attention,  # noqa: F401
                                           language_pair_dataset, max_abs, pytestmark)



def fairseq_loss(pair: Pair, sample: dict):
    loss, sample_size, logging = pair.criterion(pair.fs, sample)
    return loss, sample_size, logging


def fairseq_grads(pair: Pair) -> dict[str, torch.Tensor]:
    return from_fairseq_state_dict({n: p.grad for n, p in pair.fs.named_parameters()})


# -------------------------------------------------------------------------------------------- point 2
def test_label_smoothed_loss_and_gradients_equal_fairseq(ding_task, float64_attention):
    """Our loss is the paper-era formula; fairseq 0.12's with eps' = eps (V - 1) / V is the same formula
    (``paper_label_smoothing``; test_fairseq_012_label_smoothing_differs_by_design shows it is needed)."""
    pair = Pair(ding_task)
    pair.fs.train(), pair.ours.train()
    dataset = language_pair_dataset(ding_task, "train", pair.task)
    worst = {"loss": 0.0, "nll_loss": 0.0, "grad": 0.0}
    for indices in ding_batches(ding_task, 3):
        sample = fairseq_sample(dataset, indices)
        pair.fs.zero_grad(), pair.ours.zero_grad()
        loss, sample_size, logging = fairseq_loss(pair, sample)
        loss.backward()
        ours, stats = ding_task.loss(pair.ours, collate(ding_task.split("train"), indices))
        ours.backward()
        assert int(stats["sample_size"]) == int(sample_size) == int(sample["ntokens"])
        assert float(stats["nsentences"]) == logging["nsentences"]
        worst["loss"] = max(worst["loss"], abs(float(ours) - float(loss)) / float(loss))
        worst["nll_loss"] = max(worst["nll_loss"], abs(float(stats["nll_loss"]) - float(logging["nll_loss"]))
                                / float(logging["nll_loss"]))
        theirs = fairseq_grads(pair)
        grads = {n: p.grad for n, p in pair.ours.named_parameters()}
        assert set(grads) == set(theirs)
        scale = max(float(g.abs().max()) for g in theirs.values())
        worst["grad"] = max(worst["grad"], max(max_abs(grads[n], theirs[n]) for n in grads) / scale)
    print(f"relative differences: {worst}")
    assert worst["loss"] < 1e-12 and worst["nll_loss"] < 1e-12 and worst["grad"] < 1e-10, worst


def test_fairseq_012_label_smoothing_differs_by_design(ding_task, float64_attention):
    """With the same --label-smoothing 0.1, fairseq 0.12's loss differs from the paper-era one by
    eps (smooth/V - nll) / (V - 1) per token: measurable (and the nll is the same)."""
    pair = Pair(ding_task, "--label-smoothing", repr(EPS))
    pair.fs.train(), pair.ours.train()
    indices = ding_batches(ding_task, 1)[0]
    with torch.no_grad():
        sample = fairseq_sample(language_pair_dataset(ding_task, "train", pair.task), indices)
        loss, _, logging = fairseq_loss(pair, sample)
        ours, stats = ding_task.loss(pair.ours, collate(ding_task.split("train"), indices))
    V = len(ding_task.tgt_dict)
    smooth = (float(ours) - (1 - EPS) * float(stats["nll_loss"])) * V / EPS  # sum_tokens -sum_v log p(v)
    predicted = EPS * (smooth / V - float(stats["nll_loss"])) / (V - 1)
    print(f"fairseq 0.12 - ours = {float(loss) - float(ours):.3e} (predicted {predicted:.3e}, "
          f"relative {(float(loss) - float(ours)) / float(ours):.2e})")
    assert float(loss) - float(ours) == pytest.approx(predicted, rel=1e-6)
    assert float(stats["nll_loss"]) == pytest.approx(float(logging["nll_loss"]), rel=1e-12)


# -------------------------------------------------------------------------------------------- point 3
UPDATES = 50
ADAM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.999)", "--adam-eps", "1e-8"]
COMMON = ["--weight-decay", "1e-4", "--lr", "3e-4", "--max-update", str(UPDATES)]
POLY = ["--lr-scheduler", "polynomial_decay", "--power", "1", "--end-learning-rate", "1e-9", "--total-num-update",
        str(UPDATES)]


def adam(params, **kw):
    return radam.Adam(params, lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, **kw)


def linear(opt, warmup=0):  # polynomial_decay warms up from 0 (it has no --warmup-init-lr)
    return LinearWarmupLinearDecay(opt, max_updates=UPDATES, warmup_updates=warmup, warmup_init_lr=0.0, min_lr=1e-9)


# name: (fairseq-train flags, clip-norm, our optimizer, our schedule)
RECIPES = {
    "adam polynomial_decay": (ADAM + POLY, 25.0, adam, linear),
    "adam polynomial_decay warmup 10": (ADAM + POLY + ["--warmup-updates", "10"], 25.0, adam,
                                        lambda o: linear(o, warmup=10)),
    "adam inverse_sqrt warmup 10": (ADAM + ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
                                            "--warmup-init-lr", "1e-7"], 25.0, adam,
                                    lambda o: InverseSqrt(o, warmup_updates=10, warmup_init_lr=1e-7)),
    "plugin radam polynomial_decay": (["--optimizer", "radam", "--adam-betas", "(0.9, 0.999)", "--threshold", "5"]
                                      + POLY, 25.0,
                                      lambda p: radam.RAdam(p, lr=3e-4, betas=(0.9, 0.999), weight_decay=1e-4,
                                                            threshold=5.0), linear),
    "plugin adam_2k polynomial_decay": (ADAM[2:] + ["--optimizer", "adam_2k", "--freeze-steps", "5"] + POLY, 25.0,
                                        lambda p: adam(p, freeze_steps=5), linear),
    "adam polynomial_decay clip-norm 0.5 (clipping active)": (ADAM + POLY, 0.5, adam, linear),
}


def fairseq_trainer(pair: Pair):
    from fairseq.trainer import Trainer

    trainer = Trainer(pair.cfg, pair.task, pair.fs, pair.criterion)
    trainer.lr_step(1)  # as fairseq-train's load_checkpoint: lr_scheduler.step(1), then step_update(0)
    trainer.begin_epoch(1)
    return trainer


@pytest.mark.parametrize("recipe", RECIPES)
def test_updates_equal_fairseq_trainer(ding_task, recipe, float64_attention):
    flags, clip, make_optimizer, make_schedule = RECIPES[recipe]
    pair = Pair(ding_task, *flags, *COMMON, "--clip-norm", repr(clip))
    trainer = fairseq_trainer(pair)
    optimizer = make_optimizer(list(pair.ours.parameters()))
    schedule = make_schedule(optimizer)
    t = OmegaConf.create({"precision": "fp32", "clip_norm": clip})
    dataset = language_pair_dataset(ding_task, "train", pair.task)
    pair.ours.train()
    worst, clipped = {"lr": 0.0, "loss": 0.0, "param": 0.0}, 0
    for u, indices in enumerate(ding_batches(ding_task, UPDATES), 1):
        fs_lr = trainer.get_lr()
        logging = trainer.train_step([fairseq_sample(dataset, indices)])
        stats, gnorm, lr, _ = loop.train_step(ding_task, pair.ours, pair.ours, [collate(ding_task.split("train"),
                                              indices)], optimizer, schedule, None, t, torch.device("cpu"), Dist(),
                                              histogram=False)
        assert trainer.get_num_updates() == u
        clipped += gnorm > clip
        worst["lr"] = max(worst["lr"], abs(lr - fs_lr) / max(fs_lr, 1e-30) if fs_lr else abs(lr))
        ours_loss = float(stats["loss"]) / float(stats["sample_size"]) / math.log(2)
        worst["loss"] = max(worst["loss"], abs(logging["loss"] - ours_loss))  # fairseq logs it rounded to 3 d.
        theirs = from_fairseq_state_dict(pair.fs.state_dict())
        ours = pair.ours.state_dict()
        diff = max(max_abs(ours[k], theirs[k]) for k in ours)
        worst["param"] = max(worst["param"], diff)
        where = max(ours, key=lambda k: max_abs(ours[k], theirs[k]))
        assert diff < 1e-9, f"{recipe}: update {u}: parameters differ by {diff:.2e} (most: {where})"
        assert lr == pytest.approx(fs_lr, rel=1e-12, abs=1e-300), f"{recipe}: update {u}: lr {lr} vs {fs_lr}"
    start = Pair(ding_task).ours.state_dict()  # the same seed: the initial weights
    moved = max(max_abs(v, start[k]) for k, v in pair.ours.state_dict().items())
    print(f"{recipe}: max differences over {UPDATES} updates {worst}; clipped updates {clipped}; moved {moved:.2e}")
    assert worst["loss"] <= 5e-4 + 1e-9
    assert moved > 1e-4  # the updates did move the weights (by ~1e-2 for Adam, 6e-4 in RAdam's first steps)
    if clip < 1:
        assert clipped > 0, "the clipping case must clip"
