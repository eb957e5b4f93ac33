"""The adaptive learning rate per layer against updates, from diagnostics.jsonl (trainer.diagnostics_interval).

    python scripts/fig_diagnostics.py multiruns/SWEEP                                  # into the sweep dir
    python scripts/fig_diagnostics.py SWEEP --out results --name fig_diagnostics_ding_cpu --seed 1

One column per variant (the run of --seed; default: each variant's lowest seed), three rows against updates:
    sd(ln psi_t)         the spread of the adaptive lr over a layer's coordinates (radam/diagnostics.py)
    ||dtheta||/||theta|| the update-to-weight ratio
    Var/Mean^2 of psi_t  measured (one line per layer) and Eq. 2 at rho_t (black, dashed): the measured value
                         tends to Eq. 2 from above as far as the coordinates share one scale
A layer is the first two components of a module name (``encoder_layers.3``, ``decoder_embed``); its value is
the median over its modules. Colours run from the input side (light) to the output side (dark).

Writes into --out (default: the directory): <name>.png / .pdf, and <name>.csv (tidy: variant,seed,update,
module,<every stat>; every run, every module).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `scripts` importable
from scripts import plot_style  # noqa: E402
from scripts.fig_warmup_study import order_key, variant  # noqa: E402
from scripts.runs import Run, find_runs_or_exit  # noqa: E402

FILE = "diagnostics.jsonl"
ROWS = (("psi_log_spread", "sd(ln $\\psi_t$)", False), ("update_ratio", "$\\|\\Delta\\theta\\| / \\|\\theta\\|$", True),
        ("psi_cv2", "Var/Mean$^2$ of $\\psi_t$", True))
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def read_diagnostics(run: Run) -> list[dict]:
    """The complete events of a run's diagnostics.jsonl, "nan"/"inf" strings as floats, None as NaN."""
    path = run.dir / FILE
    events = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line, object_hook=_floats))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return events


def _floats(obj: dict) -> dict:
    return {k: (math.nan if v is None else NON_FINITE.get(v, v)) if not isinstance(v, dict) else v
            for k, v in obj.items()}


def layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


def layer_order(name: str) -> tuple[int, int, str]:
    """Input side first: encoder embedding, encoder layers, decoder embedding, decoder layers, output."""
    side = 0 if name.startswith("encoder") else 2 if name.startswith("output") else 1
    parts = name.split(".")
    index = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    return side, index, name


def per_layer(events: list[dict], stat: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """layer -> (updates, median over its modules of ``stat``)."""
    out: dict[str, tuple[list, list]] = {}
    for e in events:
        values: dict[str, list[float]] = {}
        for module, stats in e["modules"].items():
            if math.isfinite(stats[stat]):
                values.setdefault(layer(module), []).append(stats[stat])
        for name, vs in values.items():
            xs, ys = out.setdefault(name, ([], []))
            xs.append(e["update"])
            ys.append(statistics.median(vs))
    return {k: (np.array(x), np.array(y)) for k, (x, y) in out.items()}


def eq2_curve(events: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    pts = [(e["update"], next(iter(e["modules"].values()))["psi_cv2_eq2"]) for e in events if e["modules"]]
    pts = [(u, v) for u, v in pts if math.isfinite(v)]
    return np.array([u for u, _ in pts]), np.array([v for _, v in pts])


def pick_runs(runs: list[Run], seed: int | None) -> dict[str, Run]:
    chosen: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        if (seed is None or run.seed == seed) and read_diagnostics(run):
            chosen.setdefault(variant(run), run)
    return dict(sorted(chosen.items(), key=lambda kv: order_key(kv[0])))


def draw(chosen: dict[str, Run], path: Path) -> None:
    fig, axes = plot_style.figure(ncols=len(chosen), nrows=len(ROWS), height=1.7, sharex=True, squeeze=False)
    for col, (name, run) in enumerate(chosen.items()):
        events = read_diagnostics(run)
        for row, (stat, ylabel, log) in enumerate(ROWS):
            ax = axes[row][col]
            curves = per_layer(events, stat)
            names = sorted(curves, key=layer_order)
            colours = plot_style.plt.cm.viridis(np.linspace(0.9, 0.1, max(len(names), 1)))
            for c, n in zip(colours, names):
                ax.plot(*curves[n], color=c, lw=0.8)
            if stat == "psi_cv2":
                ax.plot(*eq2_curve(events), color="black", ls="--", lw=1.0, label="Eq. 2 at $\\rho_t$")
                plot_style.legend(ax, fontsize=6)
            if log:
                ax.set_yscale("log")
            if col == 0:
                ax.set_ylabel(ylabel)
            if row == 0:
                ax.set_title(f"{plot_style.label(name)} (seed {run.seed})")
            if row == len(ROWS) - 1:
                ax.set_xlabel("update")
    plot_style.save(fig, path)


def write_csv(runs: list[Run], path: Path) -> None:
    from radam.diagnostics import STATS

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", "update", "module", *STATS])
        for run in sorted(runs, key=lambda r: (order_key(variant(r)), r.seed)):
            for e in read_diagnostics(run):
                for module, stats in e["modules"].items():
                    w.writerow([variant(run), run.seed, e["update"], module, *(stats[k] for k in STATS)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="run or sweep directories")
    ap.add_argument("--out", type=Path, help="output directory (default: the first path)")
    ap.add_argument("--name", default="fig_diagnostics")
    ap.add_argument("--seed", type=int, help="the seed drawn per variant (default: each variant's lowest)")
    args = ap.parse_args(argv)
    runs = find_runs_or_exit(args.paths)
    chosen = pick_runs(runs, args.seed)
    if not chosen:
        print(f"error: no run under {' '.join(args.paths)} has {FILE}; train with trainer.diagnostics_interval=N",
              file=sys.stderr)
        raise SystemExit(1)
    out = args.out or Path(args.paths[0])
    draw(chosen, out / args.name)
    write_csv([r for r in runs if read_diagnostics(r)], out / f"{args.name}.csv")
    print(f"wrote {out / args.name}.png/.pdf/.csv ({len(chosen)} variants)")


if __name__ == "__main__":
    main()
