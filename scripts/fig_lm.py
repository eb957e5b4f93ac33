"""Paper Fig. 4: One Billion Word language modelling, Adam vs RAdam -- training perplexity against updates
(left) and test perplexity against epochs (right).

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020 (arXiv:1908.03265), Sec. 5,
Fig. 4: a 2-layer LSTM with adaptive softmax; final test perplexity 36.92 (Adam) vs 35.70 (RAdam).

    python scripts/fig_lm.py multiruns/2026-11-29_00-20-00                   # into the sweep dir
    python scripts/fig_lm.py SWEEP_A SWEEP_B --out results --name fig4_lm_ding_cpu

Drawn automatically after `python run.py -m experiment=lm_1bw` (scripts.callbacks.DrawAfterSweep). Reads the
run records only through scripts/runs.py: the `train` events' `ppl` (training perplexity over each log
interval) and the epoch-end `valid` events' `test_ppl` (the LM task scores the test set at every validation,
task.test_every_epoch). One curve per optimizer: the mean over seeds (min-max band for several seeds). Runs
that did not complete are drawn dashed and named in the legend, never dropped.

Writes into --out (default: the first directory):
    <name>.png / .pdf         the figure
    <name>.csv                tidy curves: optimizer,seed,split,update,epoch,ppl
                              (split train: training ppl per log interval; split test: test ppl per epoch end)
    <name>_summary.csv        one row per run: optimizer,seed,status,updates,epochs,train_ppl,valid_ppl,test_ppl,
                              run_dir  (last train / valid event, and finalize's test_ppl)
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `scripts` importable
from scripts import plot_style  # noqa: E402
from scripts.runs import Run, find_runs_or_exit  # noqa: E402

ORDER = ("adam_vanilla", "adam", "radam")


def order_key(name: str) -> tuple[int, str]:
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def epoch_end_events(run: Run) -> list[dict]:
    """The last valid event of every epoch (the epoch-end validation) that carries test_ppl."""
    last: dict[int, dict] = {}
    for e in run.events("valid"):
        if "test_ppl" in e:
            last[e["epoch"]] = e
    return [last[k] for k in sorted(last)]


def curve_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for run in runs:
        for e in run.events("train"):
            rows.append({"optimizer": run.optimizer, "seed": run.seed, "split": "train", "update": e["update"],
                         "epoch": e["epoch"], "ppl": e.get("ppl", math.nan)})
        for e in epoch_end_events(run):
            rows.append({"optimizer": run.optimizer, "seed": run.seed, "split": "test", "update": e["update"],
                         "epoch": e["epoch"], "ppl": e["test_ppl"]})
    return rows


def summary_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for run in runs:
        last = {split: (run.events(split) or [{}])[-1] for split in ("train", "valid", "test")}
        rows.append({"optimizer": run.optimizer, "seed": run.seed, "status": run.status,
                     "updates": run.summary.get("updates", 0), "epochs": run.summary.get("epochs", 0),
                     "train_ppl": last["train"].get("ppl", math.nan), "valid_ppl": last["valid"].get("ppl", math.nan),
                     "test_ppl": last["test"].get("test_ppl", math.nan), "run_dir": str(run.dir)})
    return sorted(rows, key=lambda r: (order_key(r["optimizer"]), r["seed"]))


def draw(curves: list[dict], summary: list[dict], path_without_ext: Path, title: str | None) -> list[Path]:
    fig, (ax_train, ax_test) = plot_style.figure(ncols=2, height=2.5)
    for name in sorted({s["optimizer"] for s in summary}, key=order_key):
        color = plot_style.color(name)
        runs = [s for s in summary if s["optimizer"] == name]
        bad = [s for s in runs if s["status"] != "completed"]
        label = plot_style.label(name) + (f" (n={len(runs)})" if len(runs) > 1 else "")
        label += "".join(f", seed {s['seed']} {s['status']}" for s in bad)
        for ax, split, x in ((ax_train, "train", "update"), (ax_test, "test", "epoch")):
            rows = [r for r in curves if r["optimizer"] == name and r["split"] == split]
            xs, mean, lo, hi = plot_style.seed_band(rows, x, "ppl")
            style = "--" if bad else "-"
            ax.plot(xs, mean, color=color, linestyle=style, marker="o" if split == "test" else None,
                    markersize=2.5, label=label)
            if len(runs) > 1 and len(xs):
                ax.fill_between(xs, lo, hi, color=color, alpha=0.18, linewidth=0)
    ax_train.set(xlabel="updates", ylabel="training perplexity", yscale="log")
    ax_test.set(xlabel="epochs", ylabel="test perplexity")
    plot_style.legend(ax_train, loc="upper right")
    if title:
        fig.suptitle(title)
    return plot_style.save(fig, path_without_ext)


def write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first directory)")
    parser.add_argument("--name", default="fig4_lm", help="file name without extension")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    runs = find_runs_or_exit(args.dirs)
    out = args.out or Path(args.dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    curves, summary = curve_rows(runs), summary_rows(runs)
    write_csv(curves, out / f"{args.name}.csv")
    write_csv(summary, out / f"{args.name}_summary.csv")
    for path in draw(curves, summary, out / args.name, args.title):
        print(path)
    for s in summary:
        print(f"{plot_style.label(s['optimizer'])} seed {s['seed']}: {s['status']}, test ppl {s['test_ppl']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
