"""Hit-rate table of the plateau warning on runs with diagnostics (issue 16; design: results/plateau_heldout.md).

    python scripts/plateau_heldout.py /work/runs/plateau_heldout/ding /work/runs/plateau_heldout/bible \
        --out results --name plateau_heldout

For every run (a directory with summary.json, metrics.jsonl and diagnostics.jsonl):

    rule at U   experiments.diagnostics_log.plateau_rule on the first measured update >= U (the loop's rule: the
                median over modules of grad_small_frac >= SMALL_GRAD_FRACTION), for U in --at (25 50 100)
    first fire  the first measured update where the rule fires (any update of the run)
    loss_end    mean logged training loss (label-smoothed, nats/token) over the last --window updates (910..1000)
    L_uni       H(m), m = (1 - e) p + e / V: the lowest label-smoothed loss of a model that predicts each target
                token by its frequency alone (p: target token frequencies of the prepared train split, </s>
                included; V: target dictionary size; e: task.label_smoothing) -- the unigram plateau
    label       plateau  <=>  loss_end > L_uni - --margin (0.5 nats); borderline when within 0.2 of that line

and per set (corpus, direction, lr) and U the counts of true/false positives and negatives (positive = plateau).
Runs that did not reach --updates (1000) are listed as unfinished and left out of the counts; a `diverged`
run is labelled trains (the rule is about the plateau).

Writes <out>/<name>.csv (one row per run) and <out>/<name>_table.md (the counts and the per-run table).
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `scripts`, `experiments` importable
from experiments.diagnostics_log import FILE, SMALL_GRAD_FRACTION, plateau_rule  # noqa: E402
from scripts.fig_warmup_study import variant  # noqa: E402
from scripts.runs import Run, find_runs_or_exit, read_jsonl  # noqa: E402

MARGIN = 0.5       # nats below L_uni: fixed in results/plateau_heldout.md before the held-out runs
BORDERLINE = 0.2   # |loss_end - (L_uni - MARGIN)| below this: flagged
ORDER = ("adam_vanilla", "radam", "adam_warmup", "adam_eps", "adam_2k")


@functools.lru_cache(maxsize=None)
def unigram_loss(data_dir: Path, tgt: str, epsilon: float) -> float:
    """H(m), m = (1 - epsilon) p + epsilon / V, from <data_dir>/dict.<tgt>.txt and bin/train.<tgt>.pt."""
    import torch

    from experiments.nmt.data import TokenArray
    from experiments.nmt.dictionary import Dictionary

    paths = [data_dir / f"dict.{tgt}.txt", data_dir / "bin" / f"train.{tgt}.pt"]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"error: prepared data {', '.join(missing)} missing; rerun the run's command (it prepares "
                         f"the data) or pass --data-root")
    size = len(Dictionary.load(paths[0]))
    counts = torch.bincount(TokenArray.load(paths[1]).tokens.long(), minlength=size).double()
    m = (1 - epsilon) * counts / counts.sum() + epsilon / size
    return float(-(m * m.log()).sum())


def data_dir(run: Run, data_root: Path | None) -> Path:
    """The prepared data of a run's NMT task, as experiments/nmt/task.py names it."""
    from experiments.nmt.task import NMTTask

    task = run.config.get("task") or {}
    if task.get("data_dir"):
        return Path(task["data_dir"])
    corpus = "raw" if task.get("raw_dir") else task.get("corpus", "ding")
    root = data_root or Path(task.get("data_root") or "data")
    return root / NMTTask._default_subdir(corpus, task.get("raw_dir"))


def set_name(run: Run) -> str:
    task = run.config.get("task") or {}
    corpus = Path(task["raw_dir"]).name if task.get("raw_dir") else task.get("corpus", "ding")
    lr = (run.config.get("optimizer") or {}).get("lr")
    return f"{corpus} {task.get('src')}-{task.get('tgt')} lr {lr:g}"


def evaluate(run: Run, at: list[int], updates: int, window: int, data_root: Path | None) -> dict:
    events = read_jsonl(run.dir / FILE)
    row = {"set": set_name(run), "variant": variant(run), "seed": run.seed, "status": run.status,
           "updates": run.summary.get("updates")}
    for u in at:
        event = next((e for e in events if e["update"] >= u), None)
        median, fires = plateau_rule(event["modules"]) if event else (None, False)
        row[f"median_U{u}"] = None if median is None else round(median, 4)
        row[f"fires_U{u}"] = fires if event else None
    row["first_fire"] = next((e["update"] for e in events if plateau_rule(e["modules"])[1]), None)
    losses = [e["loss"] for e in run.events("train") if updates - window < e["update"] <= updates]
    finished = (row["updates"] or 0) >= updates and bool(losses)
    task = run.config.get("task") or {}
    l_uni = unigram_loss(data_dir(run, data_root), task.get("tgt", "en"), float(task.get("label_smoothing", 0.1)))
    loss_end = statistics.fmean(losses) if losses else math.nan
    gap = loss_end - l_uni
    row.update(loss_end=round(loss_end, 4), l_uni=round(l_uni, 4), gap=round(gap, 4))
    if run.status == "diverged":
        row["label"] = "trains"
    elif not finished:
        row["label"] = "unfinished"
    else:
        row["label"] = "plateau" if gap > -MARGIN else "trains"
    row["borderline"] = finished and abs(gap + MARGIN) < BORDERLINE
    for u in at:
        fires = row[f"fires_U{u}"]
        row[f"outcome_U{u}"] = ("" if row["label"] == "unfinished" or fires is None else
                                {(True, True): "TP", (True, False): "FP", (False, True): "FN",
                                 (False, False): "TN"}[(bool(fires), row["label"] == "plateau")])
    row["run_dir"] = str(run.dir)
    return row


def counts(rows: list[dict], at: list[int]) -> list[dict]:
    out = []
    for name in sorted({r["set"] for r in rows}):
        for u in at:
            got = [r[f"outcome_U{u}"] for r in rows if r["set"] == name and r[f"outcome_U{u}"]]
            out.append({"set": name, "U": u, **{k: got.count(k) for k in ("TP", "FP", "FN", "TN")}, "runs": len(got)})
    return out


def markdown(rows: list[dict], summary: list[dict], at: list[int]) -> str:
    lines = [f"Rule: median over modules of grad_small_frac >= {SMALL_GRAD_FRACTION} at the first measured update "
             f">= U. Label: plateau <=> loss_end > L_uni - {MARGIN} (results/plateau_heldout.md).", "",
             "| set | U | TP | FP | FN | TN | runs |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {s['set']} | {s['U']} | {s['TP']} | {s['FP']} | {s['FN']} | {s['TN']} | {s['runs']} |" for s in summary]
    head = ["set", "variant", "seed", "loss_end", "L_uni", "gap", "label"] + [f"U={u}: median, outcome" for u in at]
    lines += ["", "| " + " | ".join(head + ["first fire"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in rows:
        label = r["label"] + (" (borderline)" if r["borderline"] else "")
        cells = [r["set"], r["variant"], str(r["seed"]), f"{r['loss_end']:.3f}", f"{r['l_uni']:.3f}",
                 f"{r['gap']:+.3f}", label]
        cells += [f"{_fmt(r[f'median_U{u}'])}, {r[f'outcome_U{u}'] or '-'}" for u in at]
        cells.append("never" if r["first_fire"] is None else str(r["first_fire"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _order(row: dict) -> tuple:
    v = row["variant"]
    return row["set"], ORDER.index(v) if v in ORDER else len(ORDER), v, row["seed"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="run or sweep directories")
    ap.add_argument("--out", type=Path, help="output directory (default: the first path)")
    ap.add_argument("--name", default="plateau_heldout")
    ap.add_argument("--at", type=int, nargs="+", default=[25, 50, 100], help="updates U at which the rule is read")
    ap.add_argument("--updates", type=int, default=1000, help="the run length the label reads (default 1000)")
    ap.add_argument("--window", type=int, default=100, help="loss_end averages the logged losses of the last N updates")
    ap.add_argument("--data-root", type=Path, help="prepared data root, if not the runs' task.data_root")
    args = ap.parse_args(argv)
    if any(u < 1 for u in args.at) or args.updates < 1 or not 1 <= args.window <= args.updates:
        raise SystemExit("error: --at values and --updates must be >= 1 and --window in [1, --updates]")
    runs = [r for r in find_runs_or_exit(args.paths) if (r.dir / FILE).exists()]
    if not runs:
        print(f"error: no run under {' '.join(args.paths)} has {FILE}; train with trainer.diagnostics_interval=N",
              file=sys.stderr)
        raise SystemExit(1)
    rows = sorted((evaluate(r, args.at, args.updates, args.window, args.data_root) for r in runs), key=_order)
    summary = counts(rows, args.at)
    out = args.out or Path(args.paths[0])
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{args.name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / f"{args.name}_table.md").write_text(markdown(rows, summary, args.at))
    print(markdown(rows, summary, args.at), end="")
    print(f"wrote {out / args.name}.csv and {out / args.name}_table.md ({len(rows)} runs)")


if __name__ == "__main__":
    main()
