"""Paper Tables 1-3 from run records: the published numbers beside ours, with n, failures and scale.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020 (arXiv:1908.03265):
Table 1 (image classification: CIFAR-10 ResNet-20, ImageNet ResNet-18; One Billion Word from Fig. 4, and
our CPU stand-ins: the Ding corpus for NMT and LM, MNIST-5k for images),
Table 2 (NMT BLEU: IWSLT'14 De-En / En-De, WMT'16 En-De), Table 3 (Appendix C: CIFAR-10 at lr 0.1, four
treatments of the first steps; MNIST-5k at CPU scale as a second column). The paper's numbers are the constants below (../shared/PAPER.md, sec. 5).

    python scripts/tables.py multiruns/2026-11-28_12-00-00 runs/iwslt --out results/tables

Reads run records only through scripts/runs.py. Writes into --out (default results/tables):
    tables.md                     the three tables (also printed)
    table1.csv table2.csv table3.csv   one row per (row, column, setting): every number behind the Markdown

Metric of each run (the task owners' names): NMT = summary.json final.test.bleu (tokenized BLEU; sacreBLEU
beside it from final.test.sacrebleu); CIFAR-10 / ImageNet = best.value where best.metric == "acc" (best test
accuracy, as the paper); One Billion Word = final.test.test_ppl (lower is better).

A cell holds every run mapped to it (`locate` below: an explicit table, no guessing). Its runs are grouped
into settings by optimizer lr (the paper tuned lr for Table 1); the Markdown shows the best setting by mean
and the CSV every one. A setting's number is mean +- sample std (ddof 1) over its completed runs with n;
diverged, failed and unfinished runs are counted, not dropped: "91.20 +- 0.150 (n=2); diverged (1/3)".
Cells without runs say "not run". Runs that map to no cell are listed under the tables.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `scripts` importable
from scripts.runs import Run, find_runs_or_exit  # noqa: E402

# ---------------------------------------------------------------------------------- the paper's numbers
# Table 1 (best test accuracy, %), and the One Billion Word test perplexity of Fig. 4 (PAPER.md sec. 5).
PAPER_TABLE1 = {
    ("CIFAR-10", "SGD"): 91.51, ("CIFAR-10", "Adam"): 90.54, ("CIFAR-10", "Adam+warmup"): 91.29,
    ("CIFAR-10", "RAdam"): 91.38,
    ("ImageNet", "SGD"): 69.86, ("ImageNet", "Adam"): 66.54, ("ImageNet", "RAdam"): 67.62,
    ("One Billion Word", "Adam"): 36.92, ("One Billion Word", "RAdam"): 35.70,
}
# Table 2 (BLEU; IWSLT'14: mean +- std over 5 seeds).
PAPER_TABLE2 = {
    ("IWSLT'14 De-En", "Adam+warmup"): "34.66 +- 0.014", ("IWSLT'14 De-En", "RAdam"): "34.76 +- 0.003",
    ("IWSLT'14 En-De", "Adam+warmup"): "28.56 +- 0.067", ("IWSLT'14 En-De", "RAdam"): "28.48 +- 0.054",
    ("WMT'16 En-De", "Adam+warmup"): "27.03", ("WMT'16 En-De", "RAdam"): "27.27",
}
# Table 3 (Appendix C: CIFAR-10, lr 0.1, test accuracy %); the paper gives no number for skipping steps 1-4.
PAPER_TABLE3 = {
    "RAdam throughout": 91.08, "no update in steps 1-4, then RAdam": None,
    "Adam in steps 1-4, then RAdam": 89.98, "SGD in steps 1-4, Adam in 5-8, then RAdam": 90.29,
}

# ----------------------------------------------------------------------------- run -> table cell (explicit)
# Rows: summary.json `task` (the Hydra choice name) -> Table 1 row; NMT rows also read the corpus/direction.
TASK_ROWS = {"cifar10": "CIFAR-10", "imagenet": "ImageNet", "lm1b": "One Billion Word",
             "mnist5k": "MNIST-5k ResNet-8 (CPU corpus, not in the paper)",
             "ding_lm": "Ding LM (CPU corpus, not in the paper)"}
NMT_TASKS = ("ding", "iwslt", "wmt16")
NMT_ROWS = {  # (config task.corpus, src, tgt) -> Table 2 row
    ("iwslt", "de", "en"): "IWSLT'14 De-En", ("iwslt", "en", "de"): "IWSLT'14 En-De",
    ("wmt16", "en", "de"): "WMT'16 En-De", ("ding", "de", "en"): "Ding De-En (CPU corpus, not in the paper)",
}
# Columns: summary.json `optimizer` (the Hydra choice name) -> column.
TABLE1_COLUMNS = {"sgd": "SGD", "adam_vanilla": "Adam", "adam_warmup": "Adam+warmup", "radam": "RAdam"}
TABLE2_COLUMNS = {"adam_warmup": "Adam+warmup", "radam": "RAdam"}
# Table 3 (configs/experiment/four_step.yaml, mnist5k_four_step.yaml): RAdam runs at lr 0.1 with the paper's
# threshold 4, told apart by radam.RAdam's option config["optimizer"]["first_steps"] ((rule, n) pairs; empty:
# Algorithm 2 throughout); a column per task (the paper's: CIFAR-10). They are not in Table 1; other first_steps
# are in no table.
TABLE3_LR, TABLE3_THRESHOLD = 0.1, 4.0
TABLE3_COLUMNS = {"cifar10": "RAdam", "mnist5k": "RAdam, MNIST-5k ResNet-8 (CPU corpus)"}
TABLE3_ROWS = {
    (): "RAdam throughout", (("skip", 4),): "no update in steps 1-4, then RAdam",
    (("adam", 4),): "Adam in steps 1-4, then RAdam",
    (("sgd", 4), ("adam", 4)): "SGD in steps 1-4, Adam in 5-8, then RAdam",
}

# metric -> (where in summary.json, key, higher is better)
METRICS = {"acc": ("best", "acc", True), "bleu": ("final.test", "bleu", True),
           "sacrebleu": ("final.test", "sacrebleu", True), "test_ppl": ("final.test", "test_ppl", False)}
ROW_METRIC = {"CIFAR-10": "acc", "ImageNet": "acc", "One Billion Word": "test_ppl",  # Table 2 rows: bleu
              "MNIST-5k ResNet-8 (CPU corpus, not in the paper)": "acc",
              "Ding LM (CPU corpus, not in the paper)": "test_ppl"}
TABLES = {
    "table1": ("Table 1: image classification (best test accuracy, %) and One Billion Word (test PPL, Fig. 4)",
               list(TASK_ROWS.values()), list(TABLE1_COLUMNS.values())),
    "table2": ("Table 2: NMT BLEU (tokenized; sacreBLEU beside it)", list(NMT_ROWS.values()),
               list(TABLE2_COLUMNS.values())),
    "table3": ("Table 3: CIFAR-10 (and MNIST-5k at CPU scale), lr 0.1, first steps handled differently (best "
               "test accuracy, %)", list(TABLE3_ROWS.values()), list(TABLE3_COLUMNS.values())),
}
PAPER = {"table1": PAPER_TABLE1, "table2": PAPER_TABLE2,
         "table3": {(row, "RAdam"): value for row, value in PAPER_TABLE3.items()}}


def locate(run: Run) -> list[tuple[str, str, str]]:
    """The (table, row, column) cells a run belongs to (none or one)."""
    task, opt, config = run.task, run.optimizer, run.config
    first_steps = tuple(tuple(pair) for pair in config.get("optimizer", {}).get("first_steps") or ())
    if task in NMT_TASKS:
        t = config.get("task", {})
        row = NMT_ROWS.get((t.get("corpus"), t.get("src"), t.get("tgt")))
        return [("table2", row, TABLE2_COLUMNS[opt])] if row and opt in TABLE2_COLUMNS else []
    if task in TABLE3_COLUMNS and opt == "radam" and lr(run) == TABLE3_LR and threshold(run) == TABLE3_THRESHOLD:
        return [("table3", TABLE3_ROWS[first_steps], TABLE3_COLUMNS[task])] if first_steps in TABLE3_ROWS else []
    if task in TASK_ROWS and opt in TABLE1_COLUMNS and not first_steps:
        return [("table1", TASK_ROWS[task], TABLE1_COLUMNS[opt])]
    return []


def lr(run: Run) -> float | None:
    return _number(run.config.get("optimizer", {}).get("lr"))


def threshold(run: Run) -> float | None:
    return _number(run.config.get("optimizer", {}).get("threshold"))


def _number(value) -> float | None:
    """A float, or None (missing, or an interpolation left as a string in a failed run's Hydra config)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- numbers
def metric_value(run: Run, metric: str) -> float | None:
    """The run's number for ``metric`` from summary.json, or None if it has none."""
    where, key, _ = METRICS[metric]
    if where == "best":
        best = run.summary.get("best") or {}
        return best.get("value") if best.get("metric") == key else None
    return ((run.summary.get("final") or {}).get("test") or {}).get(key)


@dataclass
class Setting:
    """The runs of one cell at one lr, summarised."""

    lr: float | None
    runs: list[Run]
    metric: str

    def values(self, metric: str | None = None) -> list[float]:
        values = [metric_value(r, metric or self.metric) for r in self.runs if r.status == "completed"]
        return [float(v) for v in values if v is not None and math.isfinite(float(v))]

    @property
    def mean(self) -> float | None:
        values = self.values()
        return statistics.fmean(values) if values else None

    @property
    def std(self) -> float | None:
        values = self.values()
        return statistics.stdev(values) if len(values) > 1 else None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def unfinished(self) -> int:
        return sum(r.status in ("running", "preempted") for r in self.runs)

    @property
    def no_metric(self) -> int:
        """Completed runs without a (finite) value for the metric, e.g. a task that wrote no test result."""
        return self.count("completed") - len(self.values())


def mean_std(values: list[float]) -> str:
    if not values:
        return ""
    text = f"{statistics.fmean(values):.2f}"
    return text + (f" +- {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def describe(s: Setting) -> str:
    """'34.12 +- 0.050 (n=2); diverged (1/3)' -- every run of the setting is accounted for."""
    n, parts = len(s.runs), []
    if s.values():
        parts.append(f"{mean_std(s.values())} (n={len(s.values())})")
    for label, k in (("diverged", s.count("diverged")), ("failed", s.count("failed")),
                     ("unfinished", s.unfinished), ("no metric", s.no_metric)):
        if k:
            parts.append(f"{label} ({k}/{n})")
    return "; ".join(parts)


def scale(runs: list[Run]) -> str:
    """What our number was run at: task, model, updates, device (distinct values joined by ' / ')."""
    def distinct(values) -> str:  # a run that failed at start has no updates or device: "-"
        return " / ".join(dict.fromkeys(str(v) for v in values if v not in (None, ""))) or "-"
    return (f"{distinct(r.task for r in runs)}; {distinct(model_name(r) for r in runs)}; "
            f"{distinct(r.summary.get('updates') for r in runs)} updates; "
            f"{distinct(device(r) for r in runs)}")


def model_name(run: Run) -> str:
    model = run.config.get("model", {})
    name = str(model.get("_target_", "?")).rsplit(".", 1)[-1]
    sizes = [f"{k}={model[k]}" for k in ("encoder_layers", "decoder_layers", "embed_dim", "ffn_dim", "depth",
                                         "width", "num_layers", "hidden_dim") if k in model]
    return f"{name}({', '.join(sizes)})" if sizes else name


def device(run: Run) -> str:
    world = run.summary.get("world_size") or 1
    return f"{run.summary.get('device') or ''}" + (f" x{world}" if world > 1 else "")


# ------------------------------------------------------------------------------------------- tables
def settings_of(runs: list[Run], metric: str) -> list[Setting]:
    by_lr: dict[float | None, list[Run]] = {}
    for run in runs:
        by_lr.setdefault(lr(run), []).append(run)
    return [Setting(key, group, metric) for key, group in sorted(by_lr.items(), key=lambda kv: str(kv[0]))]


def best_setting(settings: list[Setting], metric: str) -> Setting:
    """The setting with the best mean (the paper's tuned lr); with no numbers at all, the one with most runs."""
    higher = METRICS[metric][2]
    scored = [s for s in settings if s.mean is not None]
    if not scored:
        return max(settings, key=lambda s: len(s.runs))
    return (max if higher else min)(scored, key=lambda s: s.mean)


def build(runs: list[Run]) -> tuple[dict[str, list[dict]], list[Run]]:
    """{table: [row dicts for the CSV, one per (row, column, setting)]} and the runs that fit no cell."""
    cells: dict[tuple[str, str, str], list[Run]] = {}
    unplaced = []
    for run in runs:
        found = locate(run)
        unplaced += [] if found else [run]
        for cell in found:
            cells.setdefault(cell, []).append(run)
    out: dict[str, list[dict]] = {}
    for table, (_, rows, columns) in TABLES.items():
        out[table] = []
        for row in rows:
            metric = ROW_METRIC.get(row, "bleu") if table != "table3" else "acc"
            for column in columns:
                out[table] += cell_rows(table, row, column, cells.get((table, row, column), []), metric)
    return out, unplaced


def cell_rows(table: str, row: str, column: str, runs: list[Run], metric: str) -> list[dict]:
    paper = PAPER[table].get((row, column))
    base = {"table": table, "row": row, "column": column, "metric": metric,
            "paper": "" if paper is None else paper if isinstance(paper, str) else f"{paper:.2f}"}
    if not runs:
        return [{**base, "lr": "", "ours": "not run", "mean": "", "std": "", "n": 0, "runs": 0, "diverged": 0,
                 "failed": 0, "unfinished": 0, "sacrebleu": "", "scale": "", "shown": True}]
    settings = settings_of(runs, metric)
    shown = best_setting(settings, metric)
    return [{**base, "lr": "" if s.lr is None else s.lr, "ours": describe(s),
             "mean": "" if s.mean is None else repr(s.mean), "std": "" if s.std is None else repr(s.std),
             "n": len(s.values()), "runs": len(s.runs), "diverged": s.count("diverged"),
             "failed": s.count("failed"), "unfinished": s.unfinished,
             "sacrebleu": mean_std(s.values("sacrebleu")) if table == "table2" else "",
             "scale": scale(s.runs), "shown": s is shown, "settings": len(settings)} for s in settings]


CSV_FIELDS = ["table", "row", "column", "metric", "paper", "lr", "ours", "mean", "std", "n", "runs", "diverged",
              "failed", "unfinished", "sacrebleu", "scale", "shown"]


def markdown(tables: dict[str, list[dict]], unplaced: list[Run]) -> str:
    lines = []
    for table, (title, _, _) in TABLES.items():
        sacre = table == "table2"
        head = ["row", "optimizer", "paper", "ours"] + (["ours sacreBLEU"] if sacre else []) + ["lr", "our scale"]
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in (r for r in tables[table] if r["shown"]):
            lr_text = "" if r["lr"] == "" else f"{r['lr']:g}" + (
                f" (best of {r['settings']})" if r.get("settings", 1) > 1 else "")
            cells = [r["row"], r["column"], str(r["paper"]) or "-", r["ours"]] + (
                [r["sacrebleu"] or "-"] if sacre else []) + [lr_text, r["scale"]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Ours: mean +- sample std (ddof 1) over completed runs, n of them; diverged / failed / "
                 "unfinished runs counted. Scale: task; model; updates; device.")
    if unplaced:  # e.g. the warmup study's other variants, or a Table 3 treatment not in TABLE3_ROWS
        counts: dict[str, int] = {}
        for r in unplaced:
            key = f"{r.task}/{r.optimizer} {r.status}"
            counts[key] = counts.get(key, 0) + 1
        lines += ["", f"Runs in no table ({len(unplaced)}): " + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))]
    return "\n".join(lines) + "\n"


def write(tables: dict[str, list[dict]], unplaced: list[Run], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "tables.md"]
    paths[0].write_text(markdown(tables, unplaced))
    for table, rows in tables.items():
        path = out / f"{table}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run or sweep directories (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("results/tables"), help="output folder")
    args = parser.parse_args(argv)
    runs = find_runs_or_exit(args.dirs)
    tables, unplaced = build(runs)
    paths = write(tables, unplaced, args.out)
    print((args.out / "tables.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
