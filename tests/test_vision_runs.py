"""The vision experiments end to end through run.py on tiny CIFAR-10 / ImageNet files in the real formats and on
the real MNIST-5k digits: every experiment config composes and runs a few CPU updates as a real sweep (its figure
drawn at the end), the figure's CSV matches metrics.jsonl, and bad data is one line on stderr."""

from __future__ import annotations

import csv
import json

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONFIGS, compose_cfg, events, run_py, summary
from tests.vision_fixtures import write_cifar10, write_imagenet

CIFAR_EXPERIMENTS = ["cifar_lr_sweep", "cifar_warmup_sweep", "table1", "four_step"]
MNIST_EXPERIMENTS = ["mnist5k_lr_sweep", "mnist5k_warmup_sweep", "mnist5k_table1", "mnist5k_four_step"]
EXPERIMENTS = CIFAR_EXPERIMENTS + MNIST_EXPERIMENTS
# 64 training images in batches of 32: 2 updates per epoch, 5 epochs = 10 updates (past four_step's 8 first steps)
TINY_CIFAR = ["task.verify=false", "task.download=false", "task.subset=64", "task.batch_size=32",
              "task.updates_per_epoch=2", "task.test_subset=100", "trainer.max_epochs=5", "trainer.threads=1",
              "trainer.progress_bar=false", "trainer.save_interval_updates=0"]
TINY_MNIST = TINY_CIFAR[2:]  # the real digits: no data files to point at
# what each experiment sweeps, cut to two jobs
TWO_JOBS = {
    "cifar_lr_sweep": ["optimizer=sgd,radam", "optimizer.lr=0.1,0.003"],  # the real sweep shape: 4 jobs
    "cifar_warmup_sweep": ["+variant=adam_warmup_100,radam", "optimizer.lr=0.01"],
    "table1": ["optimizer=adam_warmup,radam"],
    "four_step": ["optimizer.first_steps=[],[[sgd,4],[adam,4]]", "seed=1"],
}
TWO_JOBS.update({f"mnist5k_{name}": jobs + ([] if "seed=1" in jobs else ["seed=1"]) for name, jobs in (
    ("lr_sweep", TWO_JOBS["cifar_lr_sweep"]), ("warmup_sweep", TWO_JOBS["cifar_warmup_sweep"]),
    ("table1", TWO_JOBS["table1"]), ("four_step", TWO_JOBS["four_step"]))})
KIND = {"cifar_lr_sweep": "lr", "cifar_warmup_sweep": "warmup", "table1": "optimizer", "four_step": "first_steps"}
KIND.update({f"mnist5k_{name.replace('cifar_', '')}": kind for name, kind in KIND.items()})


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("vision") / "cifar10")


def run_dirs(sweep_dir):
    return sorted(p.parent for p in sweep_dir.glob("*/summary.json"))


def test_every_experiment_file_is_covered():
    assert sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml") if p.stem in KIND) == sorted(EXPERIMENTS)


# (batch, updates per epoch, ResNet depth, epochs, lr milestones): the paper's CIFAR-10 recipe, MNIST-5k's CPU one
SCALES = {"cifar10": (128, 391, 20, 164, [81, 122]), "mnist5k": (32, 125, 8, 4, [2, 3])}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_at_its_scale(experiment):
    cfg = compose_cfg(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    batch, updates, depth, epochs, milestones = SCALES["mnist5k" if experiment in MNIST_EXPERIMENTS else "cifar10"]
    assert cfg.task.batch_size == batch and cfg.task.updates_per_epoch == updates and cfg.model.depth == depth
    assert cfg.trainer.max_epochs == epochs and cfg.trainer.best_metric == "acc" and cfg.trainer.best_mode == "max"
    assert cfg.optimizer.weight_decay == 1e-4
    assert list(cfg.optimizer.scheduler.milestones) == milestones
    assert cfg.optimizer.scheduler.updates_per_epoch == updates
    if experiment in MNIST_EXPERIMENTS:  # >= 3 seeds; warmups named as the paper's, over the same epoch fraction
        assert OmegaConf.load(CONFIGS / "experiment" / f"{experiment}.yaml").hydra.sweeper.params.seed[:5] == "1,2,3"
        warmup = compose_cfg(f"experiment={experiment}", "optimizer=adam_warmup", "+variant=adam_warmup_1000")
        assert warmup.optimizer.scheduler.warmup_updates * warmup.optimizer.scheduler.warmup_scale == \
            pytest.approx(1000 * 125 / 391, abs=0.01)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_sweeps_a_few_updates_on_cpu_and_draws_its_figure(experiment, cifar_root, tmp_path):
    data = TINY_MNIST if experiment in MNIST_EXPERIMENTS else [f"task.data_dir={cifar_root}", *TINY_CIFAR]
    run_py("-m", f"experiment={experiment}", *data, *TWO_JOBS[experiment], f"hydra.sweep.dir={tmp_path}",
           timeout=240)
    dirs = run_dirs(tmp_path)
    assert len(dirs) == (4 if experiment.endswith("lr_sweep") else 2)
    task = "mnist5k" if experiment in MNIST_EXPERIMENTS else "cifar10"
    for d in dirs:
        s = summary(d)
        assert s["status"] == "completed" and s["updates"] == 10 and s["task"] == task, s
        assert s["best"]["metric"] == "acc" and s["best"]["value"] == max(
            e["acc"] for e in events(d) if e["split"] == "valid")
        assert set(s["final"]["valid"]) == {"loss", "acc"} and "test_acc" in s["final"]["test"]
        assert [e["epoch"] for e in events(d) if e["split"] == "train"] == [1, 2, 3, 4, 5]  # one per epoch
    kind = KIND[experiment]
    assert (tmp_path / f"fig_vision_{kind}.png").exists() and (tmp_path / f"fig_vision_{kind}.pdf").exists()
    rows = list(csv.DictReader(open(tmp_path / f"fig_vision_{kind}.csv")))
    for d in dirs:  # the tidy CSV holds exactly the per-epoch values of metrics.jsonl
        mine = [r for r in rows if r["run"] == d.name]
        valid = {e["epoch"]: e["acc"] for e in events(d) if e["split"] == "valid"}
        train = {e["epoch"]: e["loss"] for e in events(d) if e["split"] == "train"}
        assert {int(r["epoch"]): float(r["value"]) for r in mine if r["metric"] == "test_acc"} == \
            pytest.approx(valid, rel=1e-9)
        assert {int(r["epoch"]): float(r["value"]) for r in mine if r["metric"] == "train_loss"} == \
            pytest.approx(train, rel=1e-9)
    if experiment.endswith("four_step"):
        curves = {r["curve"] for r in rows}
        assert curves == {"RAdam throughout", "sgd x4, adam x4, then RAdam"}
    if experiment == "cifar_warmup_sweep":  # RAdam and Adam-warmup in the same sweep, in the same panel
        assert {(r["panel"], r["curve"]) for r in rows} == {("lr 0.01", "Adam, warmup 100"), ("lr 0.01", "RAdam")}
    if experiment == "mnist5k_warmup_sweep":  # the paper's name and the scaled length
        assert {(r["panel"], r["curve"]) for r in rows} == {("lr 0.01", "Adam, warmup 100 (32 updates)"),
                                                           ("lr 0.01", "RAdam")}


def test_lr_sweep_applies_the_swept_lrs_and_the_epoch_schedule(cifar_root, tmp_path):
    run_py("-m", "experiment=cifar_lr_sweep", f"task.data_dir={cifar_root}", *TINY_CIFAR, "optimizer=sgd",
           "optimizer.lr=0.1", "optimizer.scheduler.milestones=[2,4]", "trainer.max_epochs=5",
           "trainer.log_interval=1", f"hydra.sweep.dir={tmp_path}", timeout=120)
    (run,) = run_dirs(tmp_path)
    lrs = [e["lr"] for e in events(run) if e["split"] == "train"]
    # lr x0.1 after epoch 2 and after epoch 4 (2 updates per epoch)
    assert lrs == pytest.approx([0.1] * 4 + [0.01] * 4 + [0.001] * 2)


def test_imagenet_runs_through_run_py(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=4, size=40)
    run_py("task=imagenet", "model=resnet18", "optimizer=radam", f"task.data_dir={root}", "task.workers=0",
           "task.image_size=32", "task.batch_size=4", "task.eval_batch_size=6", "task.updates_per_epoch=3",
           "trainer.max_epochs=2", "trainer.threads=1", "trainer.progress_bar=false",
           f"hydra.run.dir={tmp_path / 'run'}", timeout=180)
    s = summary(tmp_path / "run")
    assert s["status"] == "completed" and s["updates"] == 6 and s["best"]["metric"] == "acc"
    assert set(s["final"]["valid"]) == {"loss", "acc", "acc5"} and "test_acc5" in s["final"]["test"]


@pytest.mark.parametrize("case", ["missing", "corrupt", "wrong_updates_per_epoch"])
def test_bad_data_is_one_line_on_stderr(case, cifar_root, tmp_path):
    data = tmp_path / "data"
    overrides = ["task.download=false", "task.verify=false", "task.updates_per_epoch=3"]
    if case != "missing":
        write_cifar10(data, per_batch=8, test_size=8)
    if case == "corrupt":
        (data / "cifar-10-batches-py" / "data_batch_4").write_bytes(b"\x80\x02not a pickle at all")
    if case == "wrong_updates_per_epoch":
        overrides[-1] = "task.updates_per_epoch=391"
    proc = run_py("task=cifar10", "model=resnet20", f"task.data_dir={data}", *overrides,
                  f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    expected = {"missing": "put cifar-10-python.tar.gz or cifar-10-batches-py/ in",
                "corrupt": "data_batch_4 is not a readable CIFAR-10 batch",
                "wrong_updates_per_epoch": "set task.updates_per_epoch=1"}[case]
    assert expected in lines[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow  # three run.py processes: ~25 s on a loaded 2-core machine
def test_extending_a_finished_run_by_epochs_equals_one_uninterrupted_run(cifar_root, tmp_path):
    common = ["task=cifar10", "model=resnet20", "optimizer=radam", f"task.data_dir={cifar_root}", *TINY_CIFAR]
    run_py(*common, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'straight'}", timeout=120)
    run_py(*common, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'resumed'}", timeout=120)
    run_py(*common, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'resumed'}", timeout=120)
    # same batches, crops and flips per (seed, epoch) in a new process: identical records bar the timing fields
    assert events(tmp_path / "resumed") == events(tmp_path / "straight")
