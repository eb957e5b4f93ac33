"""trainer.threads=auto shares the machine's cores among the runs training at once, and the log shows an ETA."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

import run
from experiments.trainer_options import thread_count
from tests.conftest import REGRESSION, run_py, summary

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for key in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_auto_divides_the_cores_among_parallel_jobs_and_local_ranks(eight_cores):
    assert thread_count("auto") == 8
    assert thread_count("auto", jobs=2) == 4
    assert thread_count("auto", jobs=3) == 2
    assert thread_count("auto", jobs=16) == 1  # never 0
    eight_cores.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun --nproc_per_node 2
    assert thread_count("auto") == 4
    eight_cores.delenv("LOCAL_WORLD_SIZE")
    eight_cores.setenv("SLURM_CPUS_PER_TASK", "3")  # the allocation, even if the affinity mask is wider
    assert thread_count("auto") == 3
    assert thread_count(5, jobs=4) == 5 and thread_count(None) is None  # explicit values are kept


def _hydra(mode, target, **launcher):
    return SimpleNamespace(mode=mode, launcher=OmegaConf.create({"_target_": target, **launcher}))


def test_parallel_jobs_reads_joblibs_n_jobs_as_joblib_counts_them(eight_cores):
    assert run.parallel_jobs(_hydra(RunMode.RUN, JOBLIB, n_jobs=4)) == 1  # a single run
    assert run.parallel_jobs(_hydra(RunMode.MULTIRUN, BASIC)) == 1  # one job after the other
    assert run.parallel_jobs(_hydra(RunMode.MULTIRUN, JOBLIB, n_jobs=2)) == 2
    assert run.parallel_jobs(_hydra(RunMode.MULTIRUN, JOBLIB, n_jobs=-1)) == 8  # the plugin's default: all cores
    assert run.parallel_jobs(_hydra(RunMode.MULTIRUN, JOBLIB, n_jobs=-2)) == 7  # all but one


def test_a_joblib_sweep_gives_each_run_its_share_and_logs_an_eta(tmp_path):
    cores = len(os.sched_getaffinity(0))
    run_py("-m", *REGRESSION, "trainer.threads=auto", "trainer.max_updates=20", "trainer.log_interval=5",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(runs) == 2 and all(summary(r)["threads"] == max(1, cores // 2) for r in runs)
    run_py(*REGRESSION, "trainer.threads=auto", "trainer.max_updates=20", "trainer.log_interval=5",
           f"hydra.run.dir={tmp_path / 'single'}")
    assert summary(tmp_path / "single")["threads"] == cores
    train = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    etas = [e["eta_s"] for e in train if e["split"] == "train"]
    assert len(etas) == 4 and etas[-1] == 0 and all(e >= 0 for e in etas)
    assert etas[0] > etas[-1]  # counts down, to 0 at max_updates
    log = next((tmp_path / "single").glob("*.log")).read_text()
    assert "| eta 0:00:00" in log
