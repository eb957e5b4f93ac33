"""Paper Figs. 8 and 9: the variance of the adaptive learning rate, analytic (Eq. 2 vs Eq. 5) and simulated.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020 (arXiv:1908.03265),
Appendix figures 8 and 9 (Fig. 9 is "Figure 1" of the original code's README). CPU only, ~10 s in all.

    python scripts/theory_figures.py                        # full size, into results/ (what `make theory` does)
    python scripts/theory_figures.py --out /tmp/x --trajectories 200 --steps 300 --seed 1

Writes into --out:
    fig8_variance_eq2_eq5.{png,pdf,csv}    Eq. 2 (exact) and Eq. 5 (approx.) Var[psi], tau = 1, rho = 5..500,
                                           and their difference Eq. 5 - Eq. 2.  CSV: curve,rho,value
    fig9_simulated_variance.{png,pdf,csv}  Var[psi_t] and Var[r_t psi_t] across trajectories, g ~ N(mu, 1),
                                           b2 = 0.999, from t = 5 (CSV: every t <= 100,
                                           then every 10th).                CSV: curve,mu,t,value
Both CSVs are long ("tidy"): one row per (curve, x); values with 10 significant digits.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `radam` and `scripts` importable
from radam.theory import psi_variance, psi_variance_approx, psi_variance_delta, simulate_psi_variance  # noqa: E402
from scripts import plot_style  # noqa: E402

BETA2 = 0.999
MUS = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0)
FIRST_T = 5  # the paper plots from t = 5 (psi_1 = 1/|g_1| has infinite variance)
RHO = np.arange(5, 501, dtype=np.float64)  # (496,) Fig. 8's x axis
FIG8 = "fig8_variance_eq2_eq5"
FIG9 = "fig9_simulated_variance"


def write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([*row[:-1], format(row[-1], ".10g")] for row in rows)


# ------------------------------------------------------------------------------------------------ Fig. 8
def fig8_curves(rho: np.ndarray) -> dict[str, np.ndarray]:
    eq2, eq5 = psi_variance(rho), psi_variance_approx(rho)
    return {"eq2_exact": eq2, "eq5_approx": eq5, "difference": eq5 - eq2}


def draw_fig8(rho: np.ndarray, curves: dict[str, np.ndarray], out: Path) -> list[Path]:
    fig, (left, right) = plot_style.figure(ncols=2)
    left.plot(rho, curves["eq2_exact"], color="k", label="Eq. 2 (exact)")
    left.plot(rho, curves["eq5_approx"], color="#d62728", linestyle="--", label="Eq. 5 (first-order approx.)")
    right.plot(rho, curves["difference"], color="#1f77b4", label="Eq. 5 $-$ Eq. 2")
    for ax, title in ((left, r"Var[$\psi$], $\tau = 1$"), (right, "difference")):
        ax.set(yscale="log", xlabel=r"$\rho$", title=title, xlim=(rho[0], rho[-1]))
        plot_style.legend(ax, loc="upper right")
    return plot_style.save(fig, out / FIG8)


# ------------------------------------------------------------------------------------------------ Fig. 9
def fig9_simulations(trajectories: int, steps: int, seed: int) -> dict[float, object]:
    return {mu: simulate_psi_variance(mu, BETA2, trajectories, steps, seed) for mu in MUS}


def draw_fig9(sims: dict, out: Path) -> list[Path]:
    fig, (left, right) = plot_style.figure(ncols=2, sharey=True)
    colours = plot_style.plt.cm.viridis(np.linspace(0.0, 0.9, len(sims)))
    for colour, (mu, sim) in zip(colours, sims.items()):
        t = sim.t[FIRST_T - 1 :]
        left.plot(t, sim.var_psi[FIRST_T - 1 :], color=colour, label=rf"$\mu = {mu:g}$")
        right.plot(t, sim.var_rectified[FIRST_T - 1 :], color=colour, label=rf"$\mu = {mu:g}$")
    left.set(title=r"Var[$\psi_t$] (no rectification)", ylabel="variance")
    right.set(title=r"Var[$r_t \psi_t$] (rectified)")
    for ax in (left, right):
        ax.set(yscale="log", xlabel="iteration $t$", xlim=(FIRST_T, sims[MUS[0]].t[-1]))
    plot_style.legend(right, loc="lower right", bbox_to_anchor=(1.0, 0.25), ncols=2)  # between mu = 1 and mu = 10
    return plot_style.save(fig, out / FIG9)


def csv_steps(t: np.ndarray) -> np.ndarray:
    """Indices of the steps kept in Fig. 9's CSV: every t <= 100, then every 10th, and the last (~8k rows)."""
    keep = (t >= FIRST_T) & ((t <= 100) | (t % 10 == 0))
    keep[-1] = True
    return np.flatnonzero(keep)


def fig9_rows(sims: dict):
    for mu, sim in sims.items():
        kept = csv_steps(sim.t)
        for curve, values in (("var_psi", sim.var_psi), ("var_rectified_psi", sim.var_rectified)):
            for t, value in zip(sim.t[kept], values[kept]):
                yield curve, format(mu, "g"), int(t), float(value)


def fig9_summary(mu: float, sim) -> str:
    """One line: Var[psi] at t = 5 and at the last step (with the delta-method expectation), rectified range."""
    last, i = int(sim.t[-1]), FIRST_T - 1
    rect = sim.var_rectified[min(99, last - 1) :]  # from t = 100 (or the last step)
    return (f"mu={mu:g}: Var[psi] t=5 {sim.var_psi[i]:.3g} -> t={last} {sim.var_psi[-1]:.3g} "
            f"(delta method {psi_variance_delta(BETA2, last, mu):.3g}); Var[r psi] t=5 {sim.var_rectified[i]:.3g}, "
            f"t>={min(100, last)}: {rect.min():.3g}..{rect.max():.3g}")


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results)")
    parser.add_argument("--trajectories", type=int, default=5000, help="Fig. 9 trajectories (paper: 5000)")
    parser.add_argument("--steps", type=int, default=6000, help="Fig. 9 iterations (paper: 6000)")
    parser.add_argument("--seed", type=int, default=0, help="Fig. 9 random seed")
    args = parser.parse_args(argv)
    if args.steps < FIRST_T:
        parser.error(f"--steps must be >= {FIRST_T} (Fig. 9 starts at t = {FIRST_T}); got {args.steps}")
    if args.trajectories < 2:
        parser.error(f"--trajectories must be >= 2 to estimate a variance; got {args.trajectories}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    curves = fig8_curves(RHO)
    write_csv(args.out / f"{FIG8}.csv", ["curve", "rho", "value"],
              ((name, int(r), float(v)) for name, values in curves.items() for r, v in zip(RHO, values)))
    written = draw_fig8(RHO, curves, args.out)
    time8 = time.perf_counter() - start

    start = time.perf_counter()
    sims = fig9_simulations(args.trajectories, args.steps, args.seed)
    write_csv(args.out / f"{FIG9}.csv", ["curve", "mu", "t", "value"], fig9_rows(sims))
    written += draw_fig9(sims, args.out)
    time9 = time.perf_counter() - start

    eq2, eq5 = curves["eq2_exact"], curves["eq5_approx"]
    print(f"Fig. 8 ({time8:.1f} s): Var[psi] Eq. 2 / Eq. 5 at rho=5: {eq2[0]:.4g} / {eq5[0]:.4g}, "
          f"rho=500: {eq2[-1]:.5g} / {eq5[-1]:.5g}; Eq. 2 ratio rho=5 / rho=500: {eq2[0] / eq2[-1]:.1f}")
    print(f"Fig. 9 ({time9:.1f} s, {args.trajectories} trajectories x {args.steps} steps, seed {args.seed}, "
          f"b2={BETA2}):")
    for mu in (0.0, 10.0):
        print("  " + fig9_summary(mu, sims[mu]))
    print("wrote " + ", ".join(str(p) for p in [args.out / f"{FIG8}.csv", args.out / f"{FIG9}.csv", *written]))


if __name__ == "__main__":
    main()
