"""Multirun sweeps (-m) with the basic launcher and with submitit's local executor, on the real NMT task."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TINY_NMT, events, run_py, summary

TINY_SWEEP = [*TINY_NMT, "trainer.max_updates=3", "trainer.log_interval=1", "trainer.grad_histogram_updates=[1]"]


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/summary.json"))


def test_basic_launcher_sweep_runs_every_job_and_goes_on_after_divergence(ding_data, tmp_path):
    run_py("-m", *TINY_SWEEP, "optimizer=radam,adam_vanilla", "trainer.diverge_loss_above=0.1,null",
           f"hydra.sweep.dir={tmp_path}", data_root=ding_data)
    dirs = run_dirs(tmp_path)
    assert [d.name for d in dirs] == ["0_ding_radam_seed1", "1_ding_radam_seed1", "2_ding_adam_vanilla_seed1",
                                      "3_ding_adam_vanilla_seed1"]
    statuses = [(summary(d)["optimizer"], summary(d)["status"]) for d in dirs]
    assert statuses == [("radam", "diverged"), ("radam", "completed"), ("adam_vanilla", "diverged"),
                        ("adam_vanilla", "completed")]
    for d in dirs:
        assert (d / ".hydra" / "overrides.yaml").exists() and (d / "metrics.jsonl").exists()
    assert [e["update"] for e in events(dirs[1]) if e["split"] == "train"] == [1, 2, 3]
    assert (tmp_path / "multirun.yaml").exists()


def test_submitit_local_sweep(ding_data, tmp_path):
    run_py("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *TINY_SWEEP,
           "optimizer=adam_2k,adam_eps", f"hydra.sweep.dir={tmp_path}",
           data_root=ding_data, timeout=600)
    dirs = run_dirs(tmp_path)
    assert [summary(d)["optimizer"] for d in dirs] == ["adam_2k", "adam_eps"]
    assert all(summary(d)["status"] == "completed" and summary(d)["updates"] == 3 for d in dirs)
    assert (tmp_path / ".submitit").is_dir()
