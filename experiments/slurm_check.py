"""A SLURM sweep's request checked against the cluster before anything is submitted (a Hydra callback).

SLURM accepts a job that no node of its partition can ever run (8 CPUs on 2-CPU nodes, 64 GB on 16 GB nodes)
and leaves it PENDING for good, so ``python run.py -m hydra/launcher=slurm ...`` would wait forever with nothing
on the screen; a GPU on a partition without GPUs is refused by sbatch with a message about gres. Here a callback
first reads the partition's nodes (``scontrol show partition``, ``sinfo``) and ends the sweep with one line
naming the resource and the override that fixes it (README.md, "Cluster sweeps on one machine"). The presets
``hydra/launcher=slurm`` (GPU) and ``hydra/launcher=slurm_local`` (CPU, scripts/slurm/local_cluster.sh) use it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


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


class SlurmCheck(Callback):
    """Hydra callback (hydra.callbacks.slurm_check, added by the SLURM presets): before a sweep is submitted,
    end it with one line if the cluster can never satisfy its request (instead of an array PENDING forever)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
        try:
            check(params)
        except (UnsatisfiableRequest, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
