"""Paper Figs. 5-7 and Table 3's curves: test accuracy and training loss against epochs, from CIFAR-10 / ImageNet
run records (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020, Sec. 5, App. C).

    python scripts/fig_vision.py --kind lr multiruns/<cifar_lr_sweep>            # Fig. 6: a panel per optimizer,
                                                                                 #   a curve per lr
    python scripts/fig_vision.py --kind warmup multiruns/<warmup sweep>          # Fig. 7: a panel per lr, a curve
                                                                                 #   per warmup length + RAdam
    python scripts/fig_vision.py --kind optimizer multiruns/<table1>              # Fig. 5: a curve per optimizer
    python scripts/fig_vision.py --kind first_steps multiruns/<four_step>         # Table 3: a curve per variant

The experiments (configs/experiment/cifar_*.yaml, table1, four_step, mnist5k_*) run this at the end of the
sweep. Writes into --out (default: the first directory) `<name>.{png,pdf,csv}` (--name, default
`fig_vision_<kind>`) and prints, per curve, the best test accuracy over epochs (the paper's metric) as mean +-
std over seeds. Rows of the figure: test accuracy (%), then training loss; curves are means over seeds. Per
epoch: the test accuracy is the epoch's last `valid` event; the training loss and accuracy are the mean of the
epoch's `train` events (the vision configs log one per epoch, over all its updates). The tidy CSV has one row
per run, epoch and metric:
kind,panel,curve,optimizer,lr,seed,run,epoch,metric,value.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `scripts` importable
from scripts import plot_style  # noqa: E402  (selects the Agg backend)
from scripts.runs import Run, find_runs_or_exit  # noqa: E402

KINDS = ("lr", "warmup", "optimizer", "first_steps")
ORDER = ("sgd", "adam_vanilla", "adam", "adam_warmup", "adam_untuned_warmup", "adam_2k", "adam_eps", "radam")
METRICS = (("test_acc", "test accuracy (%)"), ("train_loss", "training loss"))


# ------------------------------------------------------------------------------------------- per run
def lr_of(run: Run) -> float:
    return float(run.config.get("optimizer", {}).get("lr", float("nan")))


def warmup_of(run: Run) -> str:
    """The warmup length as configured; with a warmup_scale (experiments/vision/schedule.py) also the updates it
    makes, e.g. "100 (32 updates)"."""
    scheduler = run.config.get("optimizer", {}).get("scheduler") or {}
    length, scale = scheduler.get("warmup_updates"), scheduler.get("warmup_scale", 1.0)
    if scale in (None, 1, 1.0) or length is None:
        return f"{length}"
    return f"{length} ({round(length * scale)} updates)"


def first_steps_label(run: Run) -> str:
    steps = run.config.get("optimizer", {}).get("first_steps") or []
    if not steps:
        return "RAdam throughout"
    return ", ".join(f"{rule} x{n}" for rule, n in steps) + ", then RAdam"


def panel_and_curve(run: Run, kind: str) -> tuple[str, str] | None:
    """Which panel and curve a run belongs to in a figure of `kind` (None: not in this figure)."""
    if kind == "lr":
        return plot_style.label(run.optimizer), f"lr {lr_of(run):g}"
    if kind == "warmup":
        if run.optimizer == "radam":
            return f"lr {lr_of(run):g}", "RAdam"
        if run.optimizer == "adam_warmup":
            return f"lr {lr_of(run):g}", f"Adam, warmup {warmup_of(run)}"
        return None
    if kind == "optimizer":
        return run.task, run.optimizer
    return run.task, first_steps_label(run)


def per_epoch(run: Run) -> dict[str, dict[int, float]]:
    """{"test_acc": {epoch: value}, "train_loss": {...}, "train_acc": {...}} from metrics.jsonl."""
    out: dict[str, dict[int, float]] = {"test_acc": {}, "train_loss": {}, "train_acc": {}}
    for event in run.events("valid"):
        if "acc" in event:
            out["test_acc"][event["epoch"]] = float(event["acc"])  # the epoch's last validation
    sums: dict[str, dict[int, list[float]]] = {"loss": defaultdict(list), "acc": defaultdict(list)}
    for event in run.events("train"):
        for key in ("loss", "acc"):
            if key in event:
                sums[key][event["epoch"]].append(float(event[key]))
    out["train_loss"] = {e: statistics.fmean(v) for e, v in sums["loss"].items()}
    out["train_acc"] = {e: statistics.fmean(v) for e, v in sums["acc"].items()}
    return out


# ------------------------------------------------------------------------------------------- drawing
def sort_key(name: str):
    """Panels and curves in a stable order: optimizers as ORDER, then by first word and the number they carry
    (lr: largest first; warmup: shortest first)."""
    labels = [plot_style.label(o) for o in ORDER]
    rank = ORDER.index(name) if name in ORDER else labels.index(name) if name in labels else len(ORDER)
    number = re.search(r"\d*\.?\d+(e[-+]?\d+)?", name)
    value = float(number.group()) if number else 0.0
    return (rank, name.split(" ")[0], -value if name.startswith("lr ") else value, name)


def curve_colors(kind: str, curves: list[str]) -> dict[str, object]:
    """Optimizers keep their project colours (RAdam too, beside warmup curves); lrs, warmup lengths and
    first-step variants take viridis in their order (no orange, so never RAdam's colour)."""
    if kind == "optimizer":
        return {c: plot_style.color(c) for c in curves}
    others = [c for c in curves if c != "RAdam"]
    colors = {c: matplotlib.colormaps["viridis"](0.85 * i / max(len(others) - 1, 1)) for i, c in enumerate(others)}
    return {**colors, "RAdam": plot_style.color("radam")}


def draw(groups: dict[tuple[str, str], list[dict]], kind: str, out: Path) -> list[Path]:
    panels = sorted({p for p, _ in groups}, key=sort_key)
    fig, axes = plot_style.figure(ncols=len(panels), nrows=len(METRICS), squeeze=False, sharex=True)
    for col, panel in enumerate(panels):
        curves = sorted((c for p, c in groups if p == panel), key=sort_key)
        colors = curve_colors(kind, curves)
        for curve in curves:
            runs = groups[(panel, curve)]
            name = plot_style.label(curve) if kind == "optimizer" else curve
            for row, (metric, ylabel) in enumerate(METRICS):
                epochs = sorted(set.intersection(*(set(r[metric]) for r in runs)))
                mean = [statistics.fmean(r[metric][e] for r in runs) for e in epochs]
                ax = axes[row][col]
                ax.plot(epochs, mean, color=colors[curve], label=name)
                ax.set_ylabel(ylabel if col == 0 else "")
                if row == len(METRICS) - 1:
                    ax.set_xlabel("epoch")
        axes[0][col].set_title(panel)
        plot_style.legend(axes[0][col])
    return plot_style.save(fig, out)


def best_table(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    lines = []
    for (panel, curve), runs in sorted(groups.items()):
        best = [max(r["test_acc"].values()) for r in runs if r["test_acc"]]
        if best:
            spread = statistics.stdev(best) if len(best) > 1 else 0.0
            lines.append(f"{panel} | {curve} | best test acc {statistics.fmean(best):.2f} +- {spread:.2f} "
                         f"({len(best)} runs)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", help="run or sweep directories")
    parser.add_argument("--kind", choices=KINDS, default="lr", help="which figure (default: lr, Fig. 6)")
    parser.add_argument("--out", help="output folder (default: the first directory)")
    parser.add_argument("--name", help="file name without extension (default: fig_vision_<kind>)")
    args = parser.parse_intermixed_args(argv)  # DrawAfterSweep passes: SWEEP_DIR [--kind K] [MORE_DIRS]
    runs = find_runs_or_exit(args.dirs)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    rows = []
    for run in runs:
        where = panel_and_curve(run, args.kind)
        if where is None:
            continue
        curves = per_epoch(run)
        groups[where].append(curves)
        for metric in ("test_acc", "train_loss", "train_acc"):
            for epoch, value in sorted(curves[metric].items()):
                rows.append([args.kind, *where, run.optimizer, f"{lr_of(run):g}", run.seed, run.dir.name, epoch,
                             metric, f"{value:.10g}"])
    if not groups or not any(r["test_acc"] for g in groups.values() for r in g):
        print(f"error: no run in {', '.join(args.dirs)} has per-epoch test accuracy for --kind {args.kind}; "
              f"pass CIFAR-10 / ImageNet sweep directories", file=sys.stderr)
        return 1
    out = Path(args.out or args.dirs[0]) / (args.name or f"fig_vision_{args.kind}")
    paths = draw(groups, args.kind, out)
    csv_path = out.parent / f"{out.name}.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "panel", "curve", "optimizer", "lr", "seed", "run", "epoch", "metric", "value"])
        writer.writerows(rows)
    print("\n".join(best_table(groups)))
    print("wrote", ", ".join(str(p) for p in [*paths, csv_path]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
