"""Where a SLURM sweep's time went, per array task: queue wait, start-up, and the gap of every requeue.

    python scripts/slurm/timings.py SWEEP_DIR

Reads the sweep's `.submitit/<array>_<task>/` folders (which SLURM jobs), `sacct --duplicates` (one record per
start of a job: submit, start, end, state) and each run's `run.log` (the loop's timestamped lines; the run of
task i is the sweep subdir `i_...`, Hydra's job number). Prints one row per start:

    task      start  state      queued_s  to_first_update_s  first_update  resumed_at
    12_0      1      REQUEUED       0.0               3.4             1           -
    12_0      2      COMPLETED     14.0              17.9             -          57

queued_s: submit (first start) or the previous start's end (a restart) to this start; to_first_update_s: the
same origin to the first `train` line of this start (a restart: its first train line after "resumed from"), so
for a restart it is the requeue delay until training again. Times are SLURM's and the log's (1 s and 1 ms).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[[^]]*\]\[\w+\] - (.*)$")


def sacct_records(job_id: str) -> list[dict]:
    out = subprocess.run(["sacct", "--duplicates", "-n", "-X", "-P", "-j", job_id, "-o",
                          "JobID,State,Submit,Start,End"], capture_output=True, text=True, timeout=60, check=True)
    rows = [dict(zip(("job", "state", "submit", "start", "end"), line.split("|"))) for line in out.stdout.splitlines()]
    return [{**r, "state": r["state"].split()[0]} for r in rows if r.get("job") == job_id]


def when(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace(",", "."))
    except ValueError:  # "Unknown", "None"
        return None


def log_starts(run_log: Path) -> list[dict]:
    """The run's starts as its log tells them: the first train line of each, and the update it resumed at."""
    starts: list[dict] = []
    if not run_log.exists():
        return starts
    current: dict | None = None
    for line in run_log.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        t, message = when(m.group(1)), m.group(2)
        if message.startswith("resumed from") or current is None:
            current = {"first_train": None, "update": None, "resumed_at": None}
            starts.append(current)
            if message.startswith("resumed from"):
                current["resumed_at"] = int(re.search(r"at update (\d+)", message).group(1))
        if message.startswith("train |") and current["first_train"] is None:
            current["first_train"] = t
            current["update"] = int(re.search(r"update (\d+)", message).group(1))
    return starts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    args = parser.parse_args(argv)
    folder = args.sweep / ".submitit"
    tasks = sorted((p.name for p in folder.iterdir() if re.fullmatch(r"\d+_\d+", p.name)),
                   key=lambda t: tuple(map(int, t.split("_")))) if folder.is_dir() else []
    if not tasks:
        print(f"error: no SLURM array task under {folder}; pass the hydra.sweep.dir of a SLURM sweep", file=sys.stderr)
        raise SystemExit(1)
    print(f"{'task':<10}{'start':>6}  {'state':<11}{'queued_s':>9}{'to_first_update_s':>19}{'first_update':>13}"
          f"{'resumed_at':>11}")
    for task in tasks:
        runs = sorted(args.sweep.glob(f"{task.split('_')[1]}_*/run.log"))
        logged = log_starts(runs[0]) if runs else []
        origin = None
        for i, record in enumerate(sacct_records(task)):
            origin = when(record["submit"]) if i == 0 else origin
            start = when(record["start"])
            log = logged[i] if i < len(logged) else {}
            first = log.get("first_train")
            queued = f"{(start - origin).total_seconds():.1f}" if start and origin else "-"
            to_first = f"{(first - origin).total_seconds():.1f}" if first and origin else "-"
            print(f"{task:<10}{i + 1:>6}  {record['state']:<11}{queued:>9}{to_first:>19}"
                  f"{log.get('update') or '-':>13}{log.get('resumed_at') or '-':>11}")
            origin = when(record["end"]) or origin


if __name__ == "__main__":
    main()
