"""Learning-rate robustness: final validation perplexity against the peak lr, a line per optimizer variant (mean
over seeds) with its min-max band over seeds, from the run records of a sweep such as experiment=nmt_lr_sweep.

    python scripts/fig_lr_sweep.py multiruns/<nmt_lr_sweep> [--out DIR] [--name NAME] [--caption TEXT]
    python scripts/fig_lr_sweep.py NEW_SWEEP --rows OLD.csv --out DIR ...     # add rows of runs whose dirs are gone

Writes into --out (default: the first directory) `<name>.{png,pdf,csv}` (default name `fig_lr_sweep`) and prints,
per variant and lr, the mean and range over seeds. ``--rows CSV`` (repeatable) adds the rows of a CSV this
script wrote before, for runs whose directories are gone (e.g. earlier seeds: ``--rows
results/fig_lr_sweep_nmt_ding_cpu.csv``); a run directory replaces a CSV row of the same variant, lr and seed,
and the script says how many it replaced. The CSV may be the one being rewritten (it is read first).
A variant is the optimizer of summary.json, with the warmup length where the schedule has one ("adam_warmup
(200)"). The final validation perplexity is summary.json's final.valid.ppl; runs that did not complete (diverged, failed, preempted) are left out of the lines and listed
in the CSV with their status and no value. The tidy CSV has one row per run:
variant,optimizer,warmup_updates,lr,seed,status,updates,valid_ppl,run.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib.ticker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `scripts` importable
from scripts import plot_style  # noqa: E402  (selects the Agg backend)
from scripts.runs import Run, find_runs_or_exit  # noqa: E402

FIELDS = ("variant", "optimizer", "warmup_updates", "lr", "seed", "status", "updates", "valid_ppl", "run")


def row(run: Run) -> dict:
    optimizer = run.config.get("optimizer", {})
    warmup = (optimizer.get("scheduler") or {}).get("warmup_updates") or 0
    valid = ((run.summary.get("final") or {}).get("valid") or {}).get("ppl")
    completed = run.status == "completed" and valid is not None
    return {"variant": f"{run.optimizer} ({warmup})" if warmup else run.optimizer, "optimizer": run.optimizer,
            "warmup_updates": warmup, "lr": float(optimizer.get("lr", math.nan)), "seed": run.seed,
            "status": run.status, "updates": run.summary.get("updates"),
            "valid_ppl": float(valid) if completed else math.nan, "run": run.dir.name}


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV written by this script, typed as ``row`` types them (an empty valid_ppl: NaN)."""
    if not path.is_file():
        raise ValueError(f"--rows {path} does not exist; pass a CSV this script wrote")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ValueError(f"{path} is not a CSV of scripts/fig_lr_sweep.py (header {','.join(FIELDS)}); pass "
                             "one this script wrote, or the run directories instead")
        try:
            return [{**r, "warmup_updates": int(r["warmup_updates"]), "lr": float(r["lr"]), "seed": int(r["seed"]),
                     "updates": int(r["updates"]) if r["updates"] else None,
                     "valid_ppl": float(r["valid_ppl"]) if r["valid_ppl"] else math.nan} for r in reader]
        except ValueError as e:
            raise ValueError(f"{path} line {reader.line_num}: {e}; fix or remove that row") from None


def key(r: dict) -> tuple:
    return r["variant"], r["lr"], r["seed"]


def merge(from_dirs: list[dict], from_csv: list[dict]) -> tuple[list[dict], int]:
    """Rows of the run directories plus the CSV rows of runs not among them; (rows, CSV rows replaced)."""
    have = {key(r) for r in from_dirs}
    kept = [r for r in from_csv if key(r) not in have]
    return sorted(from_dirs + kept, key=lambda r: (r["variant"], r["lr"], r["seed"])), len(from_csv) - len(kept)


def draw(rows: list[dict], out: Path, caption: str | None) -> None:
    fig, ax = plot_style.figure(height=2.6)
    by_variant = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r)
    for variant, rs in sorted(by_variant.items()):
        x, mean, low, high = plot_style.seed_band(rs, "lr", "valid_ppl")
        optimizer = rs[0]["optimizer"]
        name = plot_style.label(optimizer) + (f" ({rs[0]['warmup_updates']})" if rs[0]["warmup_updates"] else "")
        ax.plot(x, mean, marker="o", color=plot_style.color(optimizer), label=name)
        ax.fill_between(x, low, high, color=plot_style.color(optimizer), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    lrs = sorted({r["lr"] for r in rows})
    ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation perplexity")
    if caption:
        ax.set_title(caption, fontsize="small")
    plot_style.legend(ax)
    plot_style.save(fig, out)


def report(rows: list[dict]) -> None:
    cells = defaultdict(list)
    for r in rows:
        cells[(r["variant"], r["lr"])].append(r)
    print(f"{'variant':<20} {'lr':>8} {'mean ppl':>9} {'min':>8} {'max':>8}  runs")
    for (variant, lr), rs in sorted(cells.items()):
        ppl = [r["valid_ppl"] for r in rs if math.isfinite(r["valid_ppl"])]
        other = [f"{r['status']} (seed {r['seed']})" for r in rs if not math.isfinite(r["valid_ppl"])]
        stats = (f"{sum(ppl) / len(ppl):>9.1f} {min(ppl):>8.1f} {max(ppl):>8.1f}" if ppl else f"{'-':>9} {'-':>8} "
                 f"{'-':>8}")
        print(f"{variant:<20} {lr:>8.0e} {stats}  {len(ppl)} completed{'; ' + ', '.join(other) if other else ''}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", help="sweep or run directories")
    parser.add_argument("--rows", type=Path, action="append", default=[], metavar="CSV",
                        help="a CSV this script wrote, for runs whose directories are gone (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the first directory)")
    parser.add_argument("--name", default="fig_lr_sweep", help="file name without extension")
    parser.add_argument("--caption", default=None, help="a title line (e.g. the scale the runs were made at)")
    args = parser.parse_args(argv)
    if not args.dirs and not args.rows:
        parser.error("pass sweep or run directories, or --rows CSV")
    if not args.dirs and args.out is None:
        parser.error("without run directories pass --out DIR")
    old = []
    for path in args.rows:
        try:
            old += read_rows(path)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None
    rows, replaced = merge([row(r) for r in find_runs_or_exit(args.dirs)] if args.dirs else [], old)
    if replaced:
        print(f"{replaced} row(s) of {', '.join(map(str, args.rows))} replaced by the run directories")
    out = (args.out or Path(args.dirs[0])) / args.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                         for r in rows)
    draw(rows, out, args.caption)
    report(rows)
    print(f"wrote {out}.png, .pdf, .csv")


if __name__ == "__main__":
    main()
