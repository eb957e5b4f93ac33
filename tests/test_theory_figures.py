"""scripts/theory_figures.py on small inputs: the CSVs hold radam.theory's numbers; the figures are written."""

import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from radam.theory import psi_variance, psi_variance_approx, simulate_psi_variance
from scripts import plot_style

REPO = Path(__file__).resolve().parents[1]
MUS = ["0", "0.001", "0.01", "0.1", "1", "10"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory_figures")
    cmd = [sys.executable, "scripts/theory_figures.py", "--out", str(out), "--trajectories", "300", "--steps", "120",
           "--seed", "3"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_writes_png_pdf_csv_and_a_summary(small_run):
    out, stdout = small_run
    for stem in ("fig8_variance_eq2_eq5", "fig9_simulated_variance"):
        for ext in ("png", "pdf", "csv"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000, f"{stem}.{ext}"
    assert (out / "fig8_variance_eq2_eq5.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "fig9_simulated_variance.pdf").read_bytes()[:4] == b"%PDF"
    assert "ratio rho=5 / rho=500: 250.1" in stdout and "mu=0: Var[psi] t=5" in stdout


def test_fig8_csv_equals_eq2_and_eq5(small_run):
    rows = read_rows(small_run[0] / "fig8_variance_eq2_eq5.csv")
    by_curve = defaultdict(dict)
    for row in rows:
        by_curve[row["curve"]][float(row["rho"])] = float(row["value"])
    assert sorted(by_curve) == ["difference", "eq2_exact", "eq5_approx"]
    rho = np.arange(5.0, 501.0)
    for curve, expected in (("eq2_exact", psi_variance(rho)), ("eq5_approx", psi_variance_approx(rho)),
                            ("difference", psi_variance_approx(rho) - psi_variance(rho))):
        assert sorted(by_curve[curve]) == rho.tolist()
        np.testing.assert_allclose([by_curve[curve][r] for r in rho], expected, rtol=1e-9)


def test_fig9_csv_equals_the_simulation(small_run):
    rows = read_rows(small_run[0] / "fig9_simulated_variance.csv")
    series = defaultdict(list)
    for row in rows:
        series[(row["curve"], row["mu"])].append((int(row["t"]), float(row["value"])))
    assert sorted({mu for _, mu in series}, key=float) == MUS
    for mu in MUS:
        sim = simulate_psi_variance(float(mu), 0.999, trajectories=300, steps=120, seed=3)
        for curve, expected in (("var_psi", sim.var_psi), ("var_rectified_psi", sim.var_rectified)):
            t, value = zip(*series[(curve, mu)])
            # from t = 5: every step up to 100, then every 10th, and the last one
            assert list(t) == [*range(5, 101), 110, 120]
            np.testing.assert_allclose(value, expected[np.array(t) - 1], rtol=1e-9)


def test_rejects_too_few_steps(tmp_path):
    cmd = [sys.executable, "scripts/theory_figures.py", "--out", str(tmp_path), "--steps", "3"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--steps must be >= 5" in done.stderr


def test_plot_style_colours_are_fixed_and_save_writes_both(tmp_path):
    assert plot_style.color("radam") == "#ff7f0e" and plot_style.label("adam_2k") == "Adam-2k"
    assert plot_style.color("some_new_variant") == plot_style.color("some_new_variant")
    assert len({plot_style.color(n) for n in plot_style.VARIANTS if n != "adam"}) == len(plot_style.VARIANTS) - 1
    fig, ax = plot_style.figure()
    ax.plot([0, 1], [0, 1], color=plot_style.color("sgd"), label=plot_style.label("sgd"))
    plot_style.legend(ax)
    paths = plot_style.save(fig, tmp_path / "sub" / "lr0.1_plot")
    assert [p.name for p in paths] == ["lr0.1_plot.png", "lr0.1_plot.pdf"] and all(p.stat().st_size > 0 for p in paths)
