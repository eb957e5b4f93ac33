"""Sweeps on a real SLURM cluster: slurmctld + slurmd + slurmdbd on this machine (scripts/slurm/local_cluster.sh),
submitted through Hydra's submitit launcher with the preset hydra/launcher=slurm_local.

The cluster is the one `.ci/run` starts; without one the session starts it (root with apt only) and stops it at
the end; where it cannot start the tests skip with the script's reason. Each case is a real sbatch array:
an lr sweep read back by the tables script, preemption by the scheduler's signal (SIGUSR2 -> submitit requeues),
`scontrol requeue` (SIGTERM -> the run ends preempted, SLURM restarts it, run.py -m waits for the restart),
`scancel` of a running and of pending tasks (one line each, no traceback), a failing and a diverging task, a
request no node can satisfy (refused before submitting, in one line) and one SLURM keeps PENDING for good
(cancelled, one line). The waits tolerate a busy cluster (records not there yet, sacct failing for a moment).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REGRESSION, REPO, TINY_NMT, events, run_env, run_py, summary

pytestmark = pytest.mark.slurm

SCRIPT = REPO / "scripts" / "slurm" / "local_cluster.sh"
SLURM = ["hydra/launcher=slurm_local", "hydra.launcher.timeout_min=20", "hydra.callbacks.slurm_check.poll_s=1"]
LONG_RUN = [*TINY_NMT, "trainer.device=cpu", "trainer.log_interval=1", "trainer.save_interval_updates=0",
            "trainer.grad_histogram_updates=[]", "trainer.valid_at_epoch_end=false"]
WAIT_S = 600  # generous: jobs queue behind whatever else the cluster runs; a run past it skips


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and any(s in done.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node cluster: the one already up, or one started here (and stopped after these tests)."""
    if _cluster_up():
        yield
        return
    if not SCRIPT.exists() or shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no SLURM cluster and no apt-get to install one (scripts/slurm/local_cluster.sh)")
    try:
        done = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("scripts/slurm/local_cluster.sh start did not finish within 900 s")
    if done.returncode != 0 or not _cluster_up():
        reason = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        pytest.skip(f"the local SLURM cluster cannot start: {reason[-1]}")
    yield
    subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/summary.json"))


def array_tasks(sweep_dir: Path) -> list[str]:
    """The SLURM ids (<array job>_<index>) of the sweep's jobs, from submitit's folders."""
    return sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))


def holds(condition) -> bool:
    """condition(), with a record that is not there yet or is being replaced (a missing or empty summary.json, a
    sacct that fails while the controller is busy) counted as not yet."""
    try:
        return bool(condition())
    except (OSError, ValueError, KeyError, IndexError, subprocess.SubprocessError):
        return False


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, limit: float = WAIT_S):
    deadline = time.monotonic() + limit
    while not holds(condition):
        if proc is not None and proc.poll() is not None and not holds(condition):
            raise AssertionError(f"run.py ended before {what}:\n{proc.communicate()[0]}")
        if time.monotonic() > deadline:
            pytest.skip(f"{what} did not happen within {limit:.0f} s (cluster busy or machine overloaded)")
        time.sleep(0.2)


def logged_updates(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@contextlib.contextmanager
def running_task(sweep: Path, n: int, data_root: Path):
    """A sweep of n updates on the cluster, yielded (run.py's process, the run directory, its SLURM array task
    id) once the job has logged 10 updates; run.py is killed on the way out if it still runs. A second job of
    3 updates makes the sweep an array (submitit submits a lone job as a plain job)."""
    args = ["-m", *SLURM, *LONG_RUN, f"trainer.max_updates={n},3", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, env=run_env(data_root),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        run_dir = sweep / "0_ding_radam_seed1"
        wait_for(lambda: logged_updates(run_dir) >= 10, "the first 10 updates", proc)
        yield proc, run_dir, array_tasks(sweep)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        if (sweep / ".submitit").is_dir():  # a test that failed or skipped leaves no job behind on the cluster
            subprocess.run(["scancel", *{t.split("_")[0] for t in array_tasks(sweep)}], timeout=30)


def sacct_states(job: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"], capture_output=True, text=True,
                         timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]  # "CANCELLED by 0" -> CANCELLED


def train_updates(run_dir: Path) -> list[int]:
    return [e["update"] for e in events(run_dir) if e["split"] == "train"]


def saved_and_resumed(run_dir: Path) -> tuple[int, int]:
    log = (run_dir / "run.log").read_text()
    saved = re.search(r"signal received: saved \S+ at update (\d+)", log)
    resumed = re.search(r"resumed from \S+ at update (\d+)", log)
    assert saved and resumed, log
    return int(saved.group(1)), int(resumed.group(1))


def test_lr_sweep_is_one_slurm_array_and_the_tables_script_reads_it(slurm_cluster, ding_data, tmp_path):
    sweep = tmp_path / "sweep"
    run_py("-m", *SLURM, *TINY_NMT, "trainer.max_updates=3", "trainer.log_interval=1",
           "trainer.grad_histogram_updates=[]", "optimizer=radam,adam_vanilla", "optimizer.lr=1e-3,3e-4",
           f"hydra.sweep.dir={sweep}", data_root=ding_data)
    tasks = array_tasks(sweep)
    assert len({t.split("_")[0] for t in tasks}) == 1 and sorted(int(t.split("_")[1]) for t in tasks) == [0, 1, 2, 3]
    wait_for(lambda: sacct_states(tasks[0].split("_")[0]) == ["COMPLETED"] * 4, "sacct: 4 tasks COMPLETED")
    dirs = run_dirs(sweep)
    assert [(summary(d)["optimizer"], summary(d)["status"], summary(d)["updates"]) for d in dirs] == [
        ("radam", "completed", 3), ("radam", "completed", 3), ("adam_vanilla", "completed", 3),
        ("adam_vanilla", "completed", 3)]
    for d in dirs:
        assert (d / ".hydra" / "overrides.yaml").exists() and (d / "config_resolved.yaml").exists()
        assert (d / "checkpoints" / "last.pt").exists() and train_updates(d) == [1, 2, 3]
        assert "bleu" in summary(d)["final"]["test"]
    lrs = sorted((summary(d)["optimizer"], float(re.search(r"lr: (\S+)", (d / "config_resolved.yaml").read_text())
                                                   .group(1))) for d in dirs)
    assert lrs == [("adam_vanilla", 3e-4), ("adam_vanilla", 1e-3), ("radam", 3e-4), ("radam", 1e-3)]
    out = tmp_path / "tables"
    done = subprocess.run([sys.executable, "scripts/tables.py", str(sweep), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    md = (out / "tables.md").read_text()
    (radam,) = [line for line in md.splitlines() if line.startswith("| Ding De-En") and "| RAdam |" in line]
    assert "(n=1)" in radam and "(best of 2)" in radam, radam  # a setting per lr, one seed each
    assert "Runs in no table (2): ding/adam_vanilla completed x2" in md  # Table 1/2 have no Adam-vanilla column


def _uninterrupted(n: int, data_root: Path, run_dir: Path) -> list[dict]:
    run_py(*LONG_RUN, f"trainer.max_updates={n}", f"hydra.run.dir={run_dir}", data_root=data_root)
    return events(run_dir)


def test_preemption_signal_requeues_the_array_task_which_resumes_at_the_saved_update(slurm_cluster, ding_data,
                                                                                     tmp_path):
    """`scancel --signal=USR2` (what SLURM sends on preemption and signal_delay_s before the time limit): the loop
    checkpoints, submitit requeues the task, SLURM restarts it, it resumes at the saved update; the run's records
    equal an uninterrupted run's."""
    n, sweep = 300, tmp_path / "sweep"
    with running_task(sweep, n, ding_data) as (proc, run_dir, task):
        subprocess.run(["scancel", "--signal=USR2", task], check=True, timeout=30)
        out = proc.communicate(timeout=WAIT_S)[0]
    assert proc.returncode == 0, out
    s = summary(run_dir)
    assert s["status"] == "completed" and s["updates"] == n
    assert train_updates(run_dir) == list(range(1, n + 1))  # every update logged once across the two starts
    saved, resumed = saved_and_resumed(run_dir)
    assert saved == resumed and 10 <= saved < n
    submitit_log = "\n".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in submitit_log, submitit_log
    assert events(run_dir) == _uninterrupted(n, ding_data, tmp_path / "reference")


def notices(out: str) -> list[str]:
    """The lines run.py -m prints for jobs the cluster ended (experiments/slurm_check.py: wait_for_job)."""
    assert "Traceback" not in out, out
    return [line for line in out.splitlines() if line.startswith(("warning: job", "error: job"))]


def test_scontrol_requeue_ends_the_run_preempted_and_run_py_waits_for_the_restarted_job(slurm_cluster, ding_data,
                                                                                        tmp_path):
    """`scontrol requeue` sends SIGTERM (then SIGKILL after KillWait): the run ends `preempted` with last.pt at
    the update the signal arrived at, and submitit records that first start's result; SLURM starts the job
    again, which resumes from it. run.py -m waits for the restart and ends when it does (as after SIGUSR2)."""
    n, sweep = 300, tmp_path / "sweep"
    with running_task(sweep, n, ding_data) as (proc, run_dir, task):
        subprocess.run(["scontrol", "requeue", task], check=True, timeout=30)
        wait_for(lambda: summary(run_dir)["status"] == "preempted", "status preempted", proc)
        s = summary(run_dir)
        assert s["signal"] == "SIGTERM" and (run_dir / "checkpoints" / "last.pt").exists()
        stopped_at = s["updates"]
        out = proc.communicate(timeout=WAIT_S)[0]  # no waiting of ours: run.py -m returns after the restart
    assert proc.returncode == 0, out
    s = summary(run_dir)
    assert s["status"] == "completed" and s["updates"] == n, (s["status"], s["updates"], out[-2000:])
    assert notices(out) == []  # the restart completed: nothing to report
    saved, resumed = saved_and_resumed(run_dir)
    assert saved == resumed == stopped_at and 10 <= saved < n  # not started over, nothing lost
    assert train_updates(run_dir) == list(range(1, n + 1))


def test_scancel_of_a_running_task_ends_run_py_with_one_line(slurm_cluster, ding_data, tmp_path):
    """`scancel` of a running task (SIGTERM, no restart): its run ends preempted (resumable), the other task
    completes, run.py -m exits 0 with one line naming the job and the fix, and no traceback."""
    n, sweep = 300, tmp_path / "sweep"
    with running_task(sweep, n, ding_data) as (proc, run_dir, task):
        subprocess.run(["scancel", task], check=True, timeout=30)
        out = proc.communicate(timeout=WAIT_S)[0]
    assert proc.returncode == 0, out
    (line,) = notices(out)
    assert line.startswith(f"warning: job {task} ended CANCELLED with its run preempted") and \
        str(run_dir) in line and "rerun the same command to resume it" in line, line
    assert summary(run_dir)["status"] == "preempted" and summary(sweep / "1_ding_radam_seed1")["status"] == "completed"


def test_scancel_of_pending_tasks_ends_run_py_with_a_line_each(slurm_cluster, tmp_path):
    """Tasks cancelled before they start (here held by a begin time) leave no result: one line each, no
    traceback (submitit's own wait raises UncompletedJobError), exit 0."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "-m", *SLURM, *REGRESSION, "trainer.max_updates=5",
                             "optimizer=radam,adam_vanilla", "+hydra.launcher.additional_parameters.begin=now+3600",
                             f"hydra.sweep.dir={sweep}"], cwd=REPO, env=run_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(array_tasks(sweep)) == 2, "2 array tasks submitted", proc)
        array = array_tasks(sweep)[0].split("_")[0]
        wait_for(lambda: set(sacct_states(array)) == {"PENDING"}, "sacct: the tasks PENDING", proc)
        subprocess.run(["scancel", array], check=True, timeout=30)
        out = proc.communicate(timeout=WAIT_S)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    lines = notices(out)
    assert [line.split()[2] for line in lines] == [f"{array}_0", f"{array}_1"], out
    assert all("ended CANCELLED on the cluster before its run wrote a result" in line and "never started" in line
               for line in lines), lines
    assert run_dirs(sweep) == []


def test_a_job_pending_for_a_reason_the_cluster_never_clears_ends_run_py_in_one_line(slurm_cluster, tmp_path):
    """A request the pre-submit check cannot read (4 tasks of 1 CPU through additional_parameters, on 2-CPU
    nodes): SLURM accepts it and keeps it PENDING (reason PartitionConfig) for good. run.py -m cancels the array
    and ends with one line naming the CPUs and the override, exit 1."""
    sweep = tmp_path / "sweep"
    done = run_py("-m", *SLURM, *REGRESSION, "optimizer=radam,adam_vanilla",
                  "+hydra.launcher.additional_parameters.ntasks=4", f"hydra.sweep.dir={sweep}", check=False,
                  timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("error: job ") and "PartitionConfig" in lines[0] and "4 CPUs" in lines[0] and \
        "hydra.launcher.cpus_per_task" in lines[0], lines[0]
    array = array_tasks(sweep)[0].split("_")[0]
    wait_for(lambda: set(sacct_states(array)) == {"CANCELLED"}, "sacct: the array CANCELLED")


def test_failing_and_diverging_tasks_are_recorded_and_the_sweep_ends_normally(slurm_cluster, tmp_path):
    """A task with a user error (missing data file) and one that diverges: both recorded in summary.json, the
    sweep ends, run.py exits 0 (docs/harness.md: failed and diverged runs do not stop a sweep)."""
    sweep = tmp_path / "sweep"
    done = run_py("-m", *SLURM, *REGRESSION, "trainer.max_updates=20", "trainer.diverge_loss_above=1e-9",
                  f"task.data_file={tmp_path / 'missing.npz'},null", f"hydra.sweep.dir={sweep}", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    failed, diverged = (summary(d) for d in run_dirs(sweep))
    assert failed["status"] == "failed" and "missing.npz does not exist" in failed["error"]
    assert diverged["status"] == "diverged" and diverged["updates"] >= 1
    tasks = array_tasks(sweep)
    wait_for(lambda: sacct_states(tasks[0].split("_")[0]) == ["COMPLETED"] * 2, "sacct: 2 tasks COMPLETED")


@pytest.mark.parametrize("override, resource, fix", [
    ([], "1 GPUs", "hydra.launcher.gpus_per_node=null"),  # the GPU preset's default on a CPU node
    (["hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=4096"], "4096 CPUs per task",
     "hydra.launcher.cpus_per_task="),
    (["hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=100000"],
     "100000 GB of memory", "hydra.launcher.mem_gb="),
])
def test_a_request_no_node_can_satisfy_ends_in_one_line_before_submitting(slurm_cluster, tmp_path, override,
                                                                          resource, fix):
    sweep = tmp_path / "sweep"
    done = run_py("-m", "hydra/launcher=slurm", *override, *REGRESSION, "optimizer=radam,adam_vanilla",
                  f"hydra.sweep.dir={sweep}", check=False, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and resource in lines[0] and fix in lines[0], lines[0]
    assert not (sweep / ".submitit").exists()  # nothing was submitted


def test_gpu_count_reads_the_gres_strings_sinfo_prints():
    from experiments.slurm_check import gpu_count

    assert gpu_count("(null)") == 0 and gpu_count("gpu:4") == 4 and gpu_count("gpu:a100:2(S:0-1)") == 2
    assert gpu_count("gpu:a100:2(S:0-1),gpu:v100:1,shard:8") == 3
