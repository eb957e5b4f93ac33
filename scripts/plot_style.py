"""The one plotting style of the project's figures: paper-like look, a fixed colour per optimizer variant.

Usage (from any script in scripts/):

    from scripts import plot_style            # selects the Agg backend and applies the style
    fig, ax = plot_style.figure(ncols=2)      # paper-sized figure
    ax[0].plot(x, y, color=plot_style.color("radam"), label=plot_style.label("radam"))
    plot_style.legend(ax[0])
    plot_style.save(fig, "results/fig1_training_loss")   # writes .png and .pdf, closes the figure

Colours are fixed per variant name, so a variant looks the same in every figure. Unknown names get a
stable colour from a spare palette (same name -> same colour on every run) and their name as label.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

# name -> (colour, label in legends)
VARIANTS: dict[str, tuple[str, str]] = {
    "adam_vanilla": ("#d62728", "Adam-vanilla"),
    "adam": ("#d62728", "Adam"),
    "adam_warmup": ("#1f77b4", "Adam-warmup"),
    "adam_2k": ("#2ca02c", "Adam-2k"),
    "adam_eps": ("#9467bd", "Adam-eps"),
    "radam": ("#ff7f0e", "RAdam"),
    "sgd": ("#7f7f7f", "SGD"),
    "adam_untuned_warmup": ("#17becf", "Adam-untuned-warmup"),
    "adam_preln": ("#8c564b", "Adam (Pre-LN)"),
    "radam_preln": ("#e377c2", "RAdam (Pre-LN)"),
}
_SPARE = ("#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")

STYLE = {
    "font.family": "serif",
    "font.serif": ["STIXGeneral", "DejaVu Serif"],
    "mathtext.fontset": "stix",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "lines.linewidth": 1.0,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "axes.grid": True,
    "grid.linewidth": 0.3,
    "grid.alpha": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "savefig.bbox": "tight",
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # embed TrueType: text stays text in the PDF
}
plt.rcParams.update(STYLE)

COLUMN_WIDTH = 3.25  # inches, one column of a two-column paper
PAGE_WIDTH = 6.75  # inches, full text width


def color(name: str) -> str:
    """Fixed colour of an optimizer variant (`radam`, `adam_warmup`, ...); a stable spare colour otherwise."""
    if name in VARIANTS:
        return VARIANTS[name][0]
    return _SPARE[zlib.crc32(name.encode()) % len(_SPARE)]


def label(name: str) -> str:
    """Legend label of a variant (`adam_2k` -> `Adam-2k`); unknown names are returned unchanged."""
    return VARIANTS.get(name, (None, name))[1]


def figure(ncols: int = 1, nrows: int = 1, height: float = 2.4, **kwargs):
    """A figure of the paper's width (one column for ncols = 1, the full page otherwise)."""
    width = COLUMN_WIDTH if ncols == 1 else PAGE_WIDTH
    return plt.subplots(nrows, ncols, figsize=(width, height * nrows), constrained_layout=True, **kwargs)


def seed_band(rows: list[dict], x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x values, mean, min, max) of ``y`` over the rows (one per seed) that logged each x; non-finite values
    are skipped: a curve's mean line and its min-max band over seeds."""
    by_x: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        if math.isfinite(r[y]):
            by_x[r[x]].append(r[y])
    xs = np.array(sorted(by_x))
    values = [np.array(by_x[k]) for k in xs]
    return xs, np.array([v.mean() for v in values]), np.array([v.min() for v in values]), \
        np.array([v.max() for v in values])


def legend(ax, loc: str = "best", **kwargs):
    """The project's legend: no frame, small font, `loc` as in matplotlib (default: best placement)."""
    return ax.legend(loc=loc, handlelength=1.6, borderaxespad=0.3, **kwargs)


def save(fig, path_without_ext: str | Path) -> list[Path]:
    """Write `<path>.png` and `<path>.pdf` (creating folders), close the figure, return the two paths."""
    base = Path(path_without_ext)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.parent / f"{base.name}.png", base.parent / f"{base.name}.pdf"]  # names may contain dots
    fig.savefig(paths[0])
    fig.savefig(paths[1], metadata={"CreationDate": None})  # reproducible bytes
    plt.close(fig)
    return paths
