"""trainer.diagnostics_interval: diagnostics.jsonl written every N updates, resumed like metrics.jsonl, mirrored
to the tracker; training unchanged; bad values are one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.diagnostics_log import FILE
from experiments.loop import train
from experiments.task import UserError
from radam.diagnostics import STATS
from tests.conftest import REGRESSION, compose_cfg, events, run_env, run_py
from tests.test_wandb import history


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_cfg(*REGRESSION, "trainer.log_interval=2", "trainer.save_interval_updates=5", *overrides)
    return train(cfg, run_dir)


def diagnostics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / FILE).read_text().splitlines()]


def test_events_every_interval_per_module_and_training_unchanged(tmp_path):
    run(tmp_path / "on", "trainer.max_updates=20", "trainer.diagnostics_interval=5")
    run(tmp_path / "off", "trainer.max_updates=20")
    ev = diagnostics(tmp_path / "on")
    assert [e["update"] for e in ev] == [5, 10, 15, 20]
    assert sorted(ev[0]["modules"]) == ["0", "3"]  # the two Linear layers of tests/regression_task.py's MLP
    for e in ev:
        for stats in e["modules"].values():
            assert list(stats) == list(STATS) and stats["t"] == e["update"]
            assert stats["update_ratio"] > 0 and stats["psi_median"] > 0
    assert events(tmp_path / "on") == events(tmp_path / "off")  # the diagnostics only read
    assert not (tmp_path / "off" / FILE).exists()


def test_resume_truncates_to_the_checkpoint_and_continues_as_an_uninterrupted_run(tmp_path):
    for ref in (tmp_path / "ref", tmp_path / "crashed"):  # 10 updates, then extended to 20 (the lr schedule's
        run(ref, "trainer.max_updates=10", "trainer.diagnostics_interval=3")  # horizon is max_updates)
    crashed = tmp_path / "crashed"
    shutil.copy(crashed / "checkpoints" / "last.pt", tmp_path / "last10.pt")
    run(tmp_path / "ref", "trainer.max_updates=20", "trainer.diagnostics_interval=3")
    run(crashed, "trainer.max_updates=20", "trainer.diagnostics_interval=3")
    # as if killed after writing the events of updates 12..18 but before a later checkpoint: last.pt at 10
    shutil.copy(tmp_path / "last10.pt", crashed / "checkpoints" / "last.pt")
    assert [e["update"] for e in diagnostics(crashed)] == [3, 6, 9, 12, 15, 18]
    run(crashed, "trainer.max_updates=20", "trainer.diagnostics_interval=3")
    assert diagnostics(crashed) == diagnostics(tmp_path / "ref")


def test_the_interval_may_change_on_resume_and_off_keeps_the_file(tmp_path):
    run(tmp_path, "trainer.max_updates=10", "trainer.diagnostics_interval=5")
    run(tmp_path, "trainer.max_updates=15")  # off: the two events stay, and their count goes on in checkpoints
    assert [e["update"] for e in diagnostics(tmp_path)] == [5, 10]
    run(tmp_path, "trainer.max_updates=20", "trainer.diagnostics_interval=2")
    assert [e["update"] for e in diagnostics(tmp_path)] == [5, 10, 16, 18, 20]


def test_bad_values_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"trainer.diagnostics_interval=-1 is invalid: use an integer >= 0"):
        run(tmp_path / "a", "trainer.diagnostics_interval=-1")
    with pytest.raises(UserError, match=r"trainer.diagnostics_interval: Diagnostics reads Adam-family state.*"
                                        r"trainer.diagnostics_interval=0"):
        run(tmp_path / "b", "optimizer=sgd", "trainer.diagnostics_interval=5")
    assert not (tmp_path / "b" / "metrics.jsonl").exists()


def test_offline_wandb_mirrors_the_diagnostics(tmp_path):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    env = run_env(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path))
    run_py(*REGRESSION, "logger=wandb", "trainer.max_updates=6", "trainer.diagnostics_interval=3",
           f"hydra.run.dir={run_dir}", env=env)
    rows = history(next((run_dir / "wandb").glob("offline-run-*/run-*.wandb")))
    logged = [r for r in rows if any(k.startswith("diagnostics/") for k in r)]
    ev = diagnostics(run_dir)
    assert [r["_step"] for r in logged] == [e["update"] for e in ev] == [3, 6]
    module, stats = next(iter(ev[1]["modules"].items()))
    assert logged[1][f"diagnostics/{module}/psi_median"] == stats["psi_median"]
    assert logged[1][f"diagnostics/{module}/rho_t"] == stats["rho_t"]


def test_figure_script_draws_the_runs_and_writes_every_module_event(tmp_path):
    from scripts import fig_diagnostics

    run(tmp_path / "runs" / "radam", "trainer.max_updates=10", "trainer.diagnostics_interval=2")
    run(tmp_path / "runs" / "adam", "trainer.max_updates=10", "trainer.diagnostics_interval=5",
        "optimizer=adam_vanilla")
    fig_diagnostics.main([str(tmp_path / "runs"), "--out", str(tmp_path / "fig"), "--name", "d"])
    assert (tmp_path / "fig" / "d.png").stat().st_size > 0 and (tmp_path / "fig" / "d.pdf").exists()
    rows = (tmp_path / "fig" / "d.csv").read_text().splitlines()
    assert rows[0].startswith("variant,seed,update,module,t,rho_t")
    assert len(rows) == 1 + (5 + 2) * 2  # (5 + 2 events) x 2 modules
    assert {r.split(",")[0] for r in rows[1:]} == {"radam", "adam_vanilla"}
