"""Paper Figs. 2-3: histograms of |gradient| (log-scale x) at the first updates, one panel per variant.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020 (arXiv:1908.03265), Sec. 3,
Figs. 2 (Adam with vs without warmup) and 3 (Adam-2k, Adam-eps, RAdam): without warmup the distribution of
|g| is distorted (mass pushed towards tiny values) within ~10 updates.

    python scripts/fig_grad_histograms.py multiruns/2026-11-29_00-20-00            # into the sweep dir
    python scripts/fig_grad_histograms.py SWEEP --out results --name fig2_3_grad_histograms_ding_cpu --seed 1

Reads ``grad_histograms.jsonl`` (written at trainer.grad_histogram_updates, docs/harness.md) through
scripts/runs.py. Per variant the run of --seed (default: each variant's lowest seed) is drawn: one curve per
recorded update, the fraction of the non-zero gradient entries per log10 bin (exact zeros, e.g. embeddings of
tokens absent from the batch, are left out and counted in the CSV). A pre-LN run is its own variant
(`adam_vanilla` -> `adam_preln`), as in scripts/fig_warmup_study.py.

Writes into --out (default: the directory):
    <name>.png / .pdf      the figure
    <name>.csv             tidy: variant,seed,update,log10_lo,log10_hi,count   (every run, every bin)
    <name>_medians.csv     variant,seed,update,median_abs_grad,zeros,underflow,overflow,total
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `scripts` importable
from scripts import plot_style  # noqa: E402
from scripts.fig_warmup_study import order_key, variant  # noqa: E402
from scripts.runs import Run, find_runs_or_exit  # noqa: E402


def edges(hist: dict) -> np.ndarray:
    """log10 bin edges, (bins + 1,)."""
    lo, hi = hist["edges_log10"]
    return np.linspace(lo, hi, hist["bins"] + 1)


def median_log10(hist: dict) -> float:
    """log10 of the median non-zero |g| (linear interpolation inside the bin; under/overflow at the ends)."""
    counts = np.asarray(hist["counts"], dtype=np.float64)
    cum = np.concatenate([[hist["underflow"]], hist["underflow"] + np.cumsum(counts)])  # (bins + 1,) at edges
    half = (cum[-1] + hist["overflow"]) / 2
    if half <= 0:
        return float("nan")
    i = int(np.searchsorted(cum, half))  # first edge with cum >= half
    e = edges(hist)
    if i == 0 or i > len(counts):
        return float(e[min(i, len(e) - 1)])
    return float(e[i - 1] + (half - cum[i - 1]) / counts[i - 1] * (e[i] - e[i - 1]))


def pick_runs(runs: list[Run], seed: int | None) -> dict[str, Run]:
    """variant -> the run to draw (the given seed, else the lowest seed that has histograms)."""
    chosen: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        name = variant(run)
        if name in chosen or not run.histograms() or (seed is not None and run.seed != seed):
            continue
        chosen[name] = run
    return dict(sorted(chosen.items(), key=lambda kv: order_key(kv[0])))


def draw(chosen: dict[str, Run], path_without_ext: Path) -> list[Path]:
    ncols = min(3, len(chosen))
    nrows = -(-len(chosen) // ncols)
    fig, axes = plot_style.figure(ncols=max(ncols, 2), nrows=nrows, height=1.9, sharex=True, sharey=True,
                                  squeeze=False)
    updates = sorted({h["update"] for run in chosen.values() for h in run.histograms()})
    cmap = plot_style.plt.get_cmap("viridis")
    shade = {u: cmap(i / max(len(updates) - 1, 1)) for i, u in enumerate(updates)}
    lo_x, hi_x = np.inf, -np.inf
    for ax, (name, run) in zip(axes.flat, chosen.items()):
        for h in run.histograms():
            e, counts = edges(h), np.asarray(h["counts"], dtype=np.float64)
            frac = counts / max(counts.sum(), 1.0)
            ax.plot(10 ** ((e[:-1] + e[1:]) / 2), frac, color=shade[h["update"]], label=f"{h['update']}")
            used = np.flatnonzero(counts)
            if len(used):
                lo_x, hi_x = min(lo_x, e[used[0]]), max(hi_x, e[used[-1] + 1])
        ax.set_title(f"{plot_style.label(name)} (seed {run.seed})")
        ax.set_xscale("log")
    for ax in axes.flat[len(chosen):]:
        ax.set_visible(False)
    if np.isfinite(lo_x):
        axes.flat[0].set_xlim(10 ** lo_x, 10 ** hi_x)
    for ax in axes[-1]:
        ax.set_xlabel("|gradient|")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of entries")
    plot_style.legend(axes.flat[0], loc="upper left", title="update", ncols=1, fontsize=6.5, title_fontsize=6.5)
    return plot_style.save(fig, path_without_ext)


def write_csvs(runs: list[Run], out: Path, name: str) -> list[Path]:
    bins_path, med_path = out / f"{name}.csv", out / f"{name}_medians.csv"
    with open(bins_path, "w", newline="") as fb, open(med_path, "w", newline="") as fm:
        bins_csv, med_csv = csv.writer(fb), csv.writer(fm)
        bins_csv.writerow(["variant", "seed", "update", "log10_lo", "log10_hi", "count"])
        med_csv.writerow(["variant", "seed", "update", "median_abs_grad", "zeros", "underflow", "overflow", "total"])
        for run in sorted(runs, key=lambda r: (order_key(variant(r)), r.seed)):
            for h in run.histograms():
                key = [variant(run), run.seed, h["update"]]
                e = edges(h)
                bins_csv.writerows([*key, f"{e[i]:.4g}", f"{e[i + 1]:.4g}", c] for i, c in enumerate(h["counts"]))
                med_csv.writerow([*key, format(10 ** median_log10(h), ".4g"), h["zeros"], h["underflow"],
                                  h["overflow"], h["total"]])
    return [bins_path, med_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="sweep or run directory")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the directory)")
    parser.add_argument("--name", default="fig2_3_grad_histograms", help="file stem of the outputs")
    parser.add_argument("--seed", type=int, default=None, help="the seed drawn per variant (default: lowest)")
    args = parser.parse_args(argv)
    runs = find_runs_or_exit([args.dir])
    chosen = pick_runs(runs, args.seed)
    if not chosen:
        print(f"error: no grad_histograms.jsonl{f' for seed {args.seed}' if args.seed else ''} under {args.dir}; "
              "run with trainer.grad_histogram_updates=[1,5,10,25,50,75,100]", file=sys.stderr)
        return 1
    out = args.out or Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [*draw(chosen, out / args.name), *write_csvs(runs, out, args.name)]
    print("wrote", ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
