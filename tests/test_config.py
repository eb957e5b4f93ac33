"""Every configuration composes, instantiates its optimizer and schedule, and run.py's CLI behaves."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.loop import build_optimizer, build_scheduler
from tests.conftest import CONFIGS, compose_cfg, run_py

OPTIMIZERS = ["adam_vanilla", "adam_warmup", "adam_2k", "adam_eps", "radam", "sgd", "adam_untuned_warmup"]
TASKS = sorted(p.stem for p in (CONFIGS / "task").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def test_the_optimizer_group_has_exactly_the_issue_names():
    assert sorted(p.stem for p in (CONFIGS / "optimizer").glob("*.yaml")) == sorted(OPTIMIZERS)
    assert {"ding", "iwslt"} <= set(TASKS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_task_x_optimizer_composes_and_builds(task, optimizer):
    cfg = compose_cfg(f"task={task}", f"optimizer={optimizer}")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.optimizer.name == optimizer
    assert {"seed", "task", "model", "optimizer", "trainer", "logger"} <= cfg.keys()
    assert "data_dir" in cfg.task and cfg.trainer.max_updates > 0
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(cfg.optimizer, model)
    sched = build_scheduler(cfg.optimizer, opt)
    assert opt.param_groups[0]["lr"] <= cfg.optimizer.lr  # the schedule set the lr of update 1
    for _ in range(3):
        opt.step()
        sched.step()


def test_task_optimizer_specifics_come_from_composition():
    iwslt = {o: compose_cfg("task=iwslt", f"optimizer={o}") for o in OPTIMIZERS}
    ding = compose_cfg("task=ding", "optimizer=adam_warmup")
    assert iwslt["adam_warmup"].optimizer.scheduler.warmup_updates == 4000
    assert iwslt["adam_warmup"].optimizer.scheduler.warmup_init_lr == 1e-8
    assert iwslt["adam_2k"].optimizer.lr == 3.086e-4 and iwslt["adam_2k"].optimizer.freeze_steps == 2000
    assert iwslt["adam_2k"].trainer.max_updates == 72000
    assert iwslt["adam_eps"].optimizer.eps == 1e-4
    for name in ("adam_vanilla", "adam_warmup", "adam_eps", "radam"):
        c = iwslt[name]
        assert (c.optimizer.lr, c.optimizer.weight_decay, c.trainer.max_updates) == (3e-4, 1e-4, 70000)
        assert c.optimizer.scheduler.min_lr == 1e-9
    assert ding.optimizer.scheduler.warmup_updates < ding.trainer.max_updates
    assert compose_cfg("task=iwslt", "optimizer=sgd").optimizer._target_ == "torch.optim.SGD"
    assert compose_cfg("task=iwslt", "optimizer=sgd").optimizer.momentum == 0.9


def test_the_main_job_and_the_ding_studies_set_their_own_model_and_schedule():
    """The main job (`python run.py`) is 3+3 layers, lr 4e-3, 2000 updates, no checkpoint averaging; the Ding
    studies whose results are committed pin what they ran with (6+6 layers, their lr and length, averaging 3), so
    a change of the main job's defaults cannot change them."""
    main = compose_cfg()
    assert (main.model.encoder_layers, main.model.decoder_layers, main.optimizer.lr, main.trainer.max_updates,
            main.task.num_avg_checkpoints, main.trainer.threads) == (3, 3, 4e-3, 2000, 0, 1)
    for experiment, lr, updates in (("warmup_study", 2e-3, 2000), ("plateau_heldout_ding", 1e-3, 1000),
                                    ("plateau_heldout_bible", 2e-3, 1000)):
        cfg = compose_cfg(f"experiment={experiment}", "+variant=radam")
        assert (cfg.model.encoder_layers, cfg.model.decoder_layers, cfg.optimizer.lr, cfg.trainer.max_updates,
                cfg.task.num_avg_checkpoints) == (6, 6, lr, updates, 3), experiment


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_cfg(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    assert cfg.trainer.max_updates > 0


def test_help_lists_the_groups_and_choices():
    out = run_py("--help").stdout
    for group in ("task", "model", "optimizer", "trainer", "logger", "experiment"):
        assert f"\n{group}: " in out
    assert ", ".join(sorted(OPTIMIZERS)) in out


def test_cfg_job_prints_the_config_without_data(tmp_path):
    out = run_py("--cfg", "job", "optimizer=radam", "task=iwslt", data_root=tmp_path / "empty").stdout
    cfg = OmegaConf.create(out)
    assert cfg.optimizer.name == "radam" and cfg.task.corpus == "iwslt" and cfg.optimizer.lr == 3e-4
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("arg", ["optimizer=adamm", "task=iwslt,wmt99"])
def test_unknown_choice_is_one_line_naming_the_valid_ones(arg):
    proc = run_py(arg, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {arg.split('=')[0]}="), proc.stderr
    valid = OPTIMIZERS if arg.startswith("optimizer") else TASKS
    assert all(name in lines[0] for name in valid)


def test_slurm_preset_composes_over_the_submitit_plugin():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and launcher.max_num_timeout > 0 and launcher.timeout_min > 0
