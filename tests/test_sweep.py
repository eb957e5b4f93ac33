"""Multirun sweeps (-m) with the basic launcher and with submitit's local executor, on the real NMT task."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_NMT, events, run_env, run_py, summary

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
           "optimizer=adam_vanilla,adam_eps", f"hydra.sweep.dir={tmp_path}",
           data_root=ding_data, timeout=600)
    dirs = run_dirs(tmp_path)
    assert [summary(d)["optimizer"] for d in dirs] == ["adam_vanilla", "adam_eps"]
    assert all(summary(d)["status"] == "completed" and summary(d)["updates"] == 3 for d in dirs)
    assert (tmp_path / ".submitit").is_dir()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc/<n>/stat: "n (name) state ppid ...")."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the submitit job's process through /proc")
def test_submitit_requeues_a_preempted_job_which_resumes_at_the_update_it_stopped(ding_data, tmp_path):
    """SLURM's preemption signal reaches the job (submitit: SIGUSR2); the loop checkpoints, submitit's handler
    requeues the job, and the requeued job resumes from that update. Here submitit's local executor stands in
    for SLURM: same launcher plugin, same signal handling, its own requeue. (With timeout_min=10 submitit counts
    any signal as a timeout, min(0.8 T, T - 10 min) = 0 minutes, so this takes its timed-out branch, which
    requeues the same way and uses one of max_num_timeout.)"""
    n = 400
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *TINY_NMT, "trainer.device=cpu",
            f"trainer.max_updates={n}", "trainer.log_interval=1", "trainer.save_interval_updates=0",
            "trainer.grad_histogram_updates=[]", "trainer.valid_at_epoch_end=false", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, env=run_env(ding_data),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        run_dir = tmp_path / "0_ding_radam_seed1"
        deadline = time.monotonic() + 300
        while not (run_dir / "metrics.jsonl").exists() or \
                len((run_dir / "metrics.jsonl").read_text().splitlines()) < 10:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.05)
        (controller,) = [int(p.name) for p in (tmp_path / ".submitit").iterdir() if p.name.isdigit()]
        (job,) = _children(controller)  # the process that runs the Hydra job (one task)
        os.kill(job, signal.SIGUSR2)
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:  # submitit's controller outlives its parent: end the whole session
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out

    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["updates"] == n
    train = [e["update"] for e in events(run_dir) if e["split"] == "train"]
    assert train == list(range(1, n + 1))  # every update logged once across the two jobs
    log = (run_dir / "run.log").read_text()
    saved = re.search(r"signal received: saved \S+ at update (\d+)", log)
    resumed = re.search(r"resumed from \S+ at update (\d+)", log)
    assert saved and resumed and saved.group(1) == resumed.group(1), log  # no update lost or redone
    assert 10 <= int(saved.group(1)) < n
    submitit_log = "\n".join(p.read_text() for p in (tmp_path / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in submitit_log, submitit_log


def test_submitit_job_with_two_tasks_is_one_distributed_run(ding_data, tmp_path):
    """hydra.launcher.tasks_per_node=2 (one process per GPU on SLURM): both tasks join one gloo process group
    through submitit's environment; rank 0 writes the records."""
    run_py("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.launcher.tasks_per_node=2",
           *TINY_SWEEP, "trainer.device=cpu", f"hydra.sweep.dir={tmp_path}", data_root=ding_data, timeout=600)
    (run_dir,) = run_dirs(tmp_path)
    s = summary(run_dir)
    assert s["status"] == "completed" and s["updates"] == 3 and s["world_size"] == 2
    assert [e["update"] for e in events(run_dir) if e["split"] == "train"] == [1, 2, 3]
