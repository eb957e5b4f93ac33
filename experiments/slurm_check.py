"""A SLURM sweep's request checked against the cluster before anything is submitted (a Hydra callback).

SLURM accepts a job that no node of its partition can ever run (8 CPUs on 2-CPU nodes, 64 GB on 16 GB nodes)
and leaves it PENDING for good, so ``python run.py -m hydra/launcher=slurm ...`` would wait forever with nothing
on the screen; a GPU on a partition without GPUs is refused by sbatch with a message about gres. Here a callback
first reads the partition's nodes (``scontrol show partition``, ``sinfo``) and ends the sweep with one line
naming the resource and the override that fixes it (README.md, "Cluster sweeps on one machine"). The presets
``hydra/launcher=slurm`` (GPU) and ``hydra/launcher=slurm_local`` (CPU, scripts/slurm/local_cluster.sh) use it.

While the sweep runs, the same callback makes the launcher wait for each job the way a researcher expects
(``wait_for_job``, in place of submitit's ``SlurmJob.results`` in the launching process only):

- a job SLURM restarts (``scontrol requeue``, which sends SIGTERM: the first start ends ``preempted`` and writes
  submitit's result) is waited for until SLURM is done with it, and the restart's result is what run.py -m gets,
  as with the preemption signal (SIGUSR2), which submitit requeues itself;
- a job that ends without a result (``scancel`` while pending, a kill) or with its run ``preempted`` and not
  restarted (``scancel`` while running) gets one line on stderr naming the job, its run and the fix (rerun the
  same command: the run resumes), not submitit's traceback; the sweep goes on and exits 0, as for failed runs;
- a job that stays PENDING for a reason the cluster can never satisfy (``PartitionConfig``: more CPUs or memory
  than a node has, ``PartitionNodeLimit``, ``PartitionTimeLimit``, a per-job QOS/association limit, ...) ends the
  sweep with one line naming the resource and the override, after cancelling the array (the pre-submit check
  covers the requests it can read; this covers the rest, e.g. ``additional_parameters``);
- sacct or squeue failing for a moment (a busy controller) is retried, never raised.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class UnsatisfiableRequest(Exception):
    """The cluster can never run the requested job; the message says which resource and which override fixes it."""


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int


def _run(*cmd: str) -> str:
    if shutil.which(cmd[0]) is None:
        raise UnsatisfiableRequest(f"{cmd[0]} not found: hydra/launcher=slurm needs a SLURM login node "
                                   "(or scripts/slurm/local_cluster.sh start); elsewhere use hydra/launcher=basic")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise UnsatisfiableRequest(f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()[:200]}")
    return done.stdout


def partitions() -> dict[str, dict[str, str]]:
    """Every partition's fields (``scontrol show partition -o``: one line of Key=Value per partition)."""
    found = {}
    for line in _run("scontrol", "show", "partition", "-o").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "PartitionName" in fields:
            found[fields["PartitionName"]] = fields
    return found


def gpu_count(gres: str) -> int:
    """GPUs in a node's Gres string: 'gpu:4', 'gpu:a100:2(S:0-1),gpu:v100:1', '(null)'."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def nodes(partition: str) -> list[Node]:
    out = _run("sinfo", "-h", "-N", "-p", partition, "-o", "%N|%c|%m|%G")
    return [Node(n, int(c), int(m), gpu_count(g)) for n, c, m, g in (line.split("|") for line in out.split())]


def check(params: dict) -> None:
    """Raise UnsatisfiableRequest if no node of the requested partition can run one job of the sweep."""
    parts = partitions()
    partition = params.get("partition")
    if partition is None:
        defaults = [p for p, f in parts.items() if f.get("Default") == "YES"]
        if not defaults:
            raise UnsatisfiableRequest("the cluster has no default partition; set hydra.launcher.partition="
                                       f"one of {', '.join(parts)}")
        partition = defaults[0]
    elif partition not in parts:
        raise UnsatisfiableRequest(f"partition {partition} does not exist; set hydra.launcher.partition="
                                   f"one of {', '.join(parts) or '(none)'}")
    found = nodes(partition)
    if not found:
        raise UnsatisfiableRequest(f"partition {partition} has no nodes; choose another hydra.launcher.partition")
    per_node = int(params.get("tasks_per_node") or 1)
    need_nodes, have_nodes = int(params.get("nodes") or 1), len(found)
    if need_nodes > have_nodes:
        raise UnsatisfiableRequest(f"hydra.launcher.nodes={need_nodes} but partition {partition} has {have_nodes} "
                                   f"node(s); set hydra.launcher.nodes={have_nodes}")
    _check_resource(partition, "GPUs", params.get("gpus_per_node"), max(n.gpus for n in found),
                    "hydra.launcher.gpus_per_node", "null" if not max(n.gpus for n in found) else None)
    cpus = params.get("cpus_per_task")
    if cpus:
        most = max(n.cpus for n in found) // per_node
        _check_resource(partition, "CPUs per task", cpus, most, "hydra.launcher.cpus_per_task", None,
                        f" (x tasks_per_node={per_node})" if per_node > 1 else "")
    mem = params.get("mem_gb")
    if mem:
        _check_resource(partition, "GB of memory", mem, max(n.mem_mb for n in found) // 1024,
                        "hydra.launcher.mem_gb", None)


def _check_resource(partition, what, want, most, key, fix, detail="") -> None:
    if want and int(want) > most:
        have = f"at most {most}" if most else "none"
        raise UnsatisfiableRequest(f"the job asks for {want} {what}{detail} but the nodes of partition {partition} "
                                   f"have {have}; set {key}={fix if fix is not None else most}")


# SLURM job states in which the job may still run (or run again): anything else is final
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                 "COMPLETING", "CONFIGURING", "PREEMPTED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
# PENDING reasons no waiting can clear: the request exceeds a limit of the partition, QOS or association
NEVER_REASONS = re.compile(r"PartitionConfig|PartitionNodeLimit|PartitionTimeLimit|BadConstraints|InvalidQOS|"
                           r"InvalidAccount|(QOS|Assoc)Max\w*Per(Job|Node)\w*|QOSMinGRES|QOSMin\w*")


def _query(*cmd: str) -> subprocess.CompletedProcess | None:
    """A SLURM command's result, or None when it could not run (not installed, timed out)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _stdout(*cmd: str) -> str | None:
    done = _query(*cmd)
    return done.stdout if done is not None and done.returncode == 0 else None


def job_state(job_id: str) -> str | None:
    """The job's current state (``123_4`` for an array task): sacct's latest record, else squeue's; ``GONE``
    when the controller no longer knows the job and accounting has no record of it; None when neither can
    answer now (a busy controller, accounting lagging): the caller asks again."""
    out = _stdout("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State")
    if out and out.split():
        return out.splitlines()[-1].split()[0]  # the latest record; "CANCELLED by 0" -> CANCELLED
    done = _query("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T")
    if done is None:
        return None
    if done.returncode != 0:
        return "GONE" if "Invalid job id" in done.stderr else None
    return done.stdout.split()[0] if done.stdout.split() else "GONE"


def pending_reason(job_id: str) -> str | None:
    out = _stdout("squeue", "-h", "-t", "PD", "-j", job_id, "-o", "%r")
    return out.split()[0] if out and out.split() else None


def never_starts_message(job_id: str, reason: str) -> str:
    """One line for a job PENDING for a reason no waiting clears: the resource and the override that fixes it."""
    out = _stdout("scontrol", "show", "job", "-o", job_id) or ""
    info = dict(f.split("=", 1) for f in out.split() if "=" in f)
    partition = info.get("Partition", "?")
    head = f"job {job_id} can never start (PENDING, SLURM reason {reason})"
    try:
        found = nodes(partition)
    except UnsatisfiableRequest:
        found = []
    if reason == "PartitionNodeLimit":
        return (f"{head}: it asks for {info.get('NumNodes', '?')} nodes but partition {partition} has "
                f"{len(found)}; set hydra.launcher.nodes={len(found) or 1}")
    if reason == "PartitionTimeLimit":
        limit = partitions().get(partition, {}).get("MaxTime", "?") if found else "?"
        return (f"{head}: its time limit {info.get('TimeLimit', '?')} exceeds partition {partition}'s MaxTime "
                f"{limit}; lower hydra.launcher.timeout_min (minutes)")
    if reason == "PartitionConfig" and found:
        cpus, most = int(info.get("NumCPUs", "0") or 0), max(n.cpus for n in found)
        if cpus > most:
            return (f"{head}: it asks for {cpus} CPUs but the nodes of partition {partition} have at most {most}; "
                    f"lower hydra.launcher.cpus_per_task x tasks (tasks_per_node, and any ntasks in "
                    f"hydra.launcher.additional_parameters) to {most}")
        mem = re.search(r"mem=(\d+)([MG])", info.get("TRES", ""))
        mem_mb = int(mem.group(1)) * (1024 if mem.group(2) == "G" else 1) if mem else 0
        if mem_mb > max(n.mem_mb for n in found):
            return (f"{head}: it asks for {mem_mb // 1024} GB but the nodes of partition {partition} have at most "
                    f"{max(n.mem_mb for n in found) // 1024}; set hydra.launcher.mem_gb="
                    f"{max(n.mem_mb for n in found) // 1024}")
    if reason == "BadConstraints":
        return f"{head}: no node has the features it asks for; set hydra.launcher.constraint=null or another one"
    return (f"{head}: the request ({info.get('TRES', '?')}) exceeds a limit of partition {partition}, its QOS or "
            f"account; lower hydra.launcher.cpus_per_task / mem_gb / gpus_per_node / timeout_min, or set "
            f"hydra.launcher.partition / qos / account")


def _cancel_and_exit(job, message: str) -> None:
    array = str(job.job_id).split("_")[0]
    subprocess.run(["scancel", array], capture_output=True, timeout=60)
    print(f"error: {message} (array {array} cancelled)", file=sys.stderr)
    sys.exit(1)


def _status(job_return) -> str | None:
    """The run's status a job returned (run.py returns summary.json's status), None if it raised."""
    from hydra.core.utils import JobStatus

    if getattr(job_return, "status", None) != JobStatus.COMPLETED:
        return None
    return job_return.return_value if isinstance(job_return.return_value, str) else None


def _run_dir(job_return) -> str:
    """The job's run directory (hydra.runtime.output_dir; JobReturn.working_dir is the cwd without chdir)."""
    hydra_cfg = job_return.hydra_cfg or OmegaConf.create()
    return str(OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir", default="?"))


def wait_for_job(job, poll_s: float = 5.0, never_polls: int = 2) -> list:
    """``SlurmJob.results()`` through requeues: returns the job's last result once SLURM is done with the job.

    A result whose run ended ``preempted`` is not the end while SLURM may restart the job (state REQUEUED,
    PENDING, RUNNING, ...): the restart writes the result again when it ends. A job SLURM has finished with and
    that has no result, or whose run ended preempted, gets one line on stderr (not a traceback). A job PENDING
    for a reason no waiting clears (``never_polls`` polls in a row) ends the sweep with one line."""
    from hydra.core.utils import JobReturn, JobStatus

    if job._sub_jobs:  # several tasks per job: their results come from the sub-jobs
        return [sub.result() for sub in job._sub_jobs]
    path, seen, value, never = job.paths.result_pickle, None, None, 0
    while True:
        state = job_state(job.job_id)
        if path.exists() and path.stat().st_mtime_ns != seen:
            seen = path.stat().st_mtime_ns
            outcome, value = job._get_outcome_and_result()
            if outcome == "error":  # the job's function raised: submitit's exception, with its traceback
                raise job.exception()
        if value is not None and (_status(value) != "preempted" or state not in ACTIVE_STATES | {None}):
            break
        if value is None and state not in ACTIVE_STATES | {None}:
            break
        if state == "PENDING" and (reason := pending_reason(job.job_id)) and NEVER_REASONS.fullmatch(reason):
            never += 1
            if never >= never_polls:
                _cancel_and_exit(job, never_starts_message(job.job_id, reason))
        else:
            never = 0
        time.sleep(poll_s)
    if value is None:
        where = f"log: {job.paths.stdout}" if job.paths.stdout.exists() else "it never started"
        print(f"warning: job {job.job_id} ended {state} on the cluster before its run wrote a result ({where}); "
              "rerun the same command to run or resume it", file=sys.stderr)
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=f"no result ({state})")]
    if _status(value) == "preempted":
        print(f"warning: job {job.job_id} ended {state} with its run preempted ({_run_dir(value)}); rerun "
              "the same command to resume it", file=sys.stderr)
    return [value]


class SlurmCheck(Callback):
    """Hydra callback (hydra.callbacks.slurm_check, added by the SLURM presets): before a sweep is submitted,
    end it with one line if the cluster can never satisfy its request (instead of an array PENDING forever);
    while it runs, wait for each job through requeues (``wait_for_job``)."""

    def __init__(self, poll_s: float = 5.0) -> None:
        self.poll_s = poll_s
        self._original = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
        try:
            check(params)
        except (UnsatisfiableRequest, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        import submitit

        # The Hydra launcher waits with `[job.results()[0] for job in jobs]`: in this process only, that call
        # becomes wait_for_job (restored at the end of the sweep).
        self._original = submitit.SlurmJob.results
        poll_s = self.poll_s
        submitit.SlurmJob.results = lambda job: wait_for_job(job, poll_s=poll_s)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self._original is not None:
            import submitit

            submitit.SlurmJob.results = self._original
            self._original = None
