"""Paper Fig. 1: training loss and training perplexity against updates for the warmup-study variants.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020 (arXiv:1908.03265), Sec. 3,
Fig. 1 (the original code's README "Figure 2"): Adam-vanilla, Adam-warmup, Adam-2k, Adam-eps and RAdam on a
post-LN Transformer; without warmup Adam stays near the unigram loss, the other four converge.

    python scripts/fig_warmup_study.py multiruns/2026-11-29_00-20-00                 # into the sweep dir
    python scripts/fig_warmup_study.py SWEEP_A SWEEP_B --out results --name fig1_warmup_study_ding_cpu
    python scripts/fig_warmup_study.py SWEEP SWEEP_EPS_1E-4 --split-by optimizer.eps   # a curve per eps value

Drawn automatically after `python run.py -m experiment=warmup_study` (scripts.callbacks.DrawAfterSweep).
Reads the run records only through scripts/runs.py. One curve per variant: the mean over seeds of the
`train` events (fairseq's loss in bits, `loss_base2`, as the paper's Fig. 1; and ppl = exp(nll), log y) with
a min-max band when there are several seeds. A run with model.pre_ln=true is its own variant
(`adam_vanilla` -> `adam_preln`). Diverged / failed / unfinished runs are drawn (dashed, x at their end) and
listed, never dropped.

Writes into --out (default: the first directory):
    <name>.png / .pdf         the figure
    <name>.csv                tidy curves: variant,seed,update,loss,loss_base2,ppl  (loss: label-smoothed nats/token)
    <name>_summary.csv        one row per run: variant,seed,status,updates,train_loss,train_ppl,valid_ppl,
                              test_ppl,bleu,run_dir  (the last train / valid event and the test event)
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `scripts` importable
from scripts import plot_style  # noqa: E402
from scripts.runs import Run, find_runs_or_exit  # noqa: E402

# paper order of the legend; anything else follows alphabetically
ORDER = ("adam_vanilla", "adam_warmup", "adam_2k", "adam_eps", "radam", "adam_preln", "radam_preln")
PRE_LN_NAMES = {"adam_vanilla": "adam_preln", "radam": "radam_preln"}
CURVE_FIELDS = ("loss", "loss_base2", "ppl")


def variant(run: Run) -> str:
    """The curve a run belongs to: its optimizer, or `<optimizer>_preln` style names for pre-LN models."""
    pre_ln = bool((run.config.get("model") or {}).get("pre_ln", False))
    if not pre_ln:
        return run.optimizer
    return PRE_LN_NAMES.get(run.optimizer, f"{run.optimizer}_preln")


def config_value(run: Run, key: str):
    """``run.config`` at a dotted key (``optimizer.eps``); None where absent."""
    node = run.config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def variant_names(runs: list[Run], split_by: str | Sequence[str] | None = None) -> dict[Path, str]:
    """run dir -> curve name: its variant, plus ` (<key>=<value>)` where runs of one variant differ in a split_by
    key, the first such key of the list (e.g. Adam-eps with the scaled eps and with the literal 1e-4:
    --split-by optimizer.eps; Adam-2k and Adam-warmup at two lengths each: --split-by optimizer.freeze_steps
    optimizer.scheduler.warmup_updates)."""
    keys = [split_by] if isinstance(split_by, str) else list(split_by or [])
    names = {run.dir: variant(run) for run in runs}
    for name in set(names.values()):
        group = [r for r in runs if names[r.dir] == name]
        key = next((k for k in keys if len({repr(config_value(r, k)) for r in group}) > 1), None)
        for r in group if key else []:
            value = config_value(r, key)
            shown = format(value, "g") if isinstance(value, float) else value
            names[r.dir] = f"{name} ({key.split('.')[-1]}={shown})"
    return names


def base_name(name: str) -> str:
    return name.split(" (")[0]


def order_key(name: str) -> tuple[int, str]:
    base = base_name(name)
    return (ORDER.index(base) if base in ORDER else len(ORDER), name)


def curve_rows(runs: list[Run], names: dict[Path, str]) -> list[dict]:
    """Tidy rows (variant, seed, update, loss, loss_base2, ppl), one per train event of every run."""
    rows = []
    for run in runs:
        for e in run.events("train"):
            rows.append({"variant": names[run.dir], "seed": run.seed, "update": e["update"],
                         **{k: e.get(k, math.nan) for k in CURVE_FIELDS}})
    return rows


def summary_rows(runs: list[Run], names: dict[Path, str]) -> list[dict]:
    """One row per run: its status and last train / valid / test numbers (NaN where absent)."""
    rows = []
    for run in runs:
        last = {split: (run.events(split) or [{}])[-1] for split in ("train", "valid", "test")}
        train, valid, test = last["train"], last["valid"], last["test"]
        rows.append({"variant": names[run.dir], "seed": run.seed, "status": run.status,
                     "updates": run.summary.get("updates", 0),
                     "train_loss": train.get("loss", math.nan), "train_ppl": train.get("ppl", math.nan),
                     "valid_ppl": valid.get("ppl", math.nan), "test_ppl": test.get("test_ppl", math.nan),
                     "bleu": test.get("bleu", math.nan), "run_dir": str(run.dir)})
    return sorted(rows, key=lambda r: (order_key(r["variant"]), r["seed"]))


def draw(curves: list[dict], summary: list[dict], path_without_ext: Path, title: str | None) -> list[Path]:
    fig, (ax_loss, ax_ppl) = plot_style.figure(ncols=2, height=2.5)
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for r in curves:
        by_variant[r["variant"]].append(r)
    not_completed = [s for s in summary if s["status"] != "completed"]
    names = sorted({s["variant"] for s in summary}, key=order_key)
    for name in names:
        siblings = sorted(n for n in names if base_name(n) == base_name(name))  # a split variant: same colour,
        style = ("-", ":", "-.", (0, (5, 1, 1, 1)))[siblings.index(name) % 4]   # one line style per value
        rows, color = by_variant.get(name, []), plot_style.color(base_name(name))
        seeds = sorted({s["seed"] for s in summary if s["variant"] == name})
        bad = [s for s in not_completed if s["variant"] == name]
        label = plot_style.label(base_name(name)) + name[len(base_name(name)):]
        label += f" (n={len(seeds)})" if len(seeds) > 1 else ""
        label += "".join(f", seed {s['seed']} {s['status']}" for s in bad)
        for ax, field in ((ax_loss, "loss_base2"), (ax_ppl, "ppl")):
            x, mean, lo, hi = plot_style.seed_band(rows, "update", field)
            if len(x) == 0:  # failed before its first train event: only in the legend
                ax.plot([], [], color=color, linestyle=style, label=label)
                continue
            ax.plot(x, mean, color=color, linestyle=style, label=label)
            if len(seeds) > 1:
                ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)
            for s in bad:  # a run that stopped early: its own curve, dashed, x at its last event
                own = [r for r in rows if r["seed"] == s["seed"] and math.isfinite(r[field])]
                if own:
                    ax.plot([r["update"] for r in own], [r[field] for r in own], color=color, linestyle="--")
                    ax.plot(own[-1]["update"], own[-1][field], marker="x", color=color, markersize=5)
    ax_loss.set(xlabel="updates", ylabel="training loss (bits/token)")
    ax_ppl.set(xlabel="updates", ylabel="training perplexity", yscale="log")
    handles, labels = ax_loss.get_legend_handles_labels()  # below both panels: the curves stay uncovered
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False, handlelength=1.6)
    if title:
        fig.suptitle(title, fontsize=9)
    return plot_style.save(fig, path_without_ext)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    def fmt(v):
        return format(v, ".6g") if isinstance(v, float) else v

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([fmt(r[c]) for c in columns] for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first directory)")
    parser.add_argument("--name", default="fig1_warmup_study", help="file stem of the outputs")
    parser.add_argument("--title", default=None, help="figure title (default: none)")
    parser.add_argument("--split-by", nargs="+", default=None,
                        help="config keys (optimizer.eps ...): a variant whose runs differ in one of them gets one "
                             "curve per value of the first such key")
    args = parser.parse_args(argv)
    runs = find_runs_or_exit(args.dirs)
    out = args.out or Path(args.dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    names = variant_names(runs, args.split_by)
    curves, summary = curve_rows(runs, names), summary_rows(runs, names)
    curves.sort(key=lambda r: (order_key(r["variant"]), r["seed"], r["update"]))
    write_csv(out / f"{args.name}.csv", curves, ["variant", "seed", "update", *CURVE_FIELDS])
    write_csv(out / f"{args.name}_summary.csv", summary, list(summary[0]))
    paths = draw(curves, summary, out / args.name, args.title)
    for s in summary:
        print(f"{s['variant']:>14} seed {s['seed']}: {s['status']:<9} {s['updates']:>5} updates  "
              f"train ppl {s['train_ppl']:.4g}  valid ppl {s['valid_ppl']:.4g}")
    print("wrote", ", ".join(str(p) for p in [*paths, out / f"{args.name}.csv", out / f"{args.name}_summary.csv"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
