"""Training throughput of the harness (``python run.py``) against ``fairseq-train`` on the same work, side by side.

Same architecture (transformer_iwslt_de_en at the sizes of a model config), same Ding data (the harness's
prepared BPE text, binarized by fairseq-preprocess with the harness's dictionaries, so the token ids agree),
same batching (``--max-tokens``, ``--required-batch-size-multiple 1``: the batches of
experiments/nmt/batching.py), label smoothing 0.1, RAdam (fairseq: this project's plugin), clip-norm 25,
1 thread, no validation inside the timed span. Runs are interleaved (ours, fairseq, ours, fairseq, ...).

Measured per run from each tool's own log, over the log intervals after the first (no start-up, no data
loading, no final evaluation): updates/s and target tokens/s (fairseq's ``ups`` and ``wps``, our
``updates_per_s`` and ``units_per_s``); and the process's peak RSS (``wait4``). Reported: medians and the
ratio ours / fairseq (> 1: the harness is faster).

    .venv/bin/python benchmarks/fairseq_throughput.py --fairseq-python .venv-fairseq/bin/python \\
        --presets cpu --repeats 2                     # model=transformer_cpu, 600 tokens, 300 updates
    .venv/bin/python benchmarks/fairseq_throughput.py --presets iwslt --repeats 1   # paper model, 4000 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESETS = {  # name: (model config, embed dim, ffn dim, dropout, max tokens, updates, log interval)
    "cpu": ("transformer_cpu", 128, 256, 0.1, 600, 300, 50),
    "iwslt": ("transformer_iwslt", 512, 1024, 0.3, 4000, 20, 5),
}
FAIRSEQ_LINE = re.compile(r"train_inner \| .*?num_updates=(\d+).*?")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run_measured(command: list[str], cwd: Path, env: dict) -> tuple[str, float, float]:
    """(combined output, wall seconds, peak RSS in MiB) of one child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if child.returncode != 0:
        raise SystemExit(f"{command[0]} ... exited {child.returncode}:\n{text[-3000:]}")
    return text, time.perf_counter() - start, usage.ru_maxrss / 1024


def binarize(data_dir: Path, fairseq_python: str, dest: Path) -> Path:
    """fairseq-preprocess on the harness's BPE text with its dictionaries (identical token ids)."""
    if (dest / "train.de-en.de.bin").exists():
        return dest
    bpe = data_dir / "bpe"
    subprocess.run([fairseq_python, "-m", "fairseq_cli.preprocess", "-s", "de", "-t", "en",
                    "--trainpref", str(bpe / "train"), "--validpref", str(bpe / "valid"),
                    "--srcdict", str(data_dir / "dict.de.txt"), "--tgtdict", str(data_dir / "dict.en.txt"),
                    "--destdir", str(dest), "--workers", "1"], check=True, capture_output=True,
                   env={**os.environ, **ONE_THREAD})
    return dest


def ours(preset: str, data_root: Path, work: Path) -> dict:
    model, _, _, _, tokens, updates, interval = PRESETS[preset]
    run_dir = work / f"ours-{time.monotonic_ns()}"
    command = [sys.executable, "run.py", "task=ding", f"model={model}", "optimizer=radam",
               f"task.max_tokens={tokens}", f"task.data_root={data_root}", "trainer.threads=1",
               f"trainer.max_updates={updates}", f"trainer.log_interval={interval}", "trainer.clip_norm=25",
               "trainer.progress_bar=false", "trainer.valid_at_epoch_end=false", "trainer.save_interval_updates=0",
               "trainer.grad_histogram_updates=[]", "task.valid_subset=8", "task.test_subset=8", "task.beam=1",
               "task.num_avg_checkpoints=0", "logger=none", f"hydra.run.dir={run_dir}"]
    _, wall, rss = run_measured(command, REPO, ONE_THREAD)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e.get("split") == "train" and "updates_per_s" in e][1:]
    seconds = sum(interval / e["updates_per_s"] for e in train)
    tokens_done = sum(e["units_per_s"] * interval / e["updates_per_s"] for e in train)
    return {"ups": len(train) * interval / seconds, "wps": tokens_done / seconds, "rss_mib": rss, "wall_s": wall}


def fairseq(preset: str, data_bin: Path, fairseq_python: str, work: Path) -> dict:
    _, dim, ffn, dropout, tokens, updates, interval = PRESETS[preset]
    command = [fairseq_python, "-m", "fairseq_cli.train", str(data_bin), "-s", "de", "-t", "en",
               "--user-dir", str(REPO / "integrations" / "fairseq_radam"), "-a", "transformer_iwslt_de_en",
               "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim), "--encoder-ffn-embed-dim", str(ffn),
               "--decoder-ffn-embed-dim", str(ffn), "--dropout", str(dropout), "--criterion",
               "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "radam", "--lr", "3e-4",
               "--adam-betas", "(0.9, 0.999)", "--weight-decay", "1e-4", "--clip-norm", "25",
               "--lr-scheduler", "polynomial_decay", "--end-learning-rate", "1e-9", "--total-num-update",
               str(updates), "--max-update", str(updates), "--max-tokens", str(tokens),
               "--required-batch-size-multiple", "1", "--cpu", "--num-workers", "0", "--disable-validation",
               "--no-save", "--log-format", "json", "--log-interval", str(interval), "--seed", "1",
               "--save-dir", str(work / "fs-ckpt")]
    text, wall, rss = run_measured(command, REPO, {**ONE_THREAD, "PYTHONPATH": str(REPO)})
    inner = [json.loads(line[line.index("{"):]) for line in text.splitlines()
             if "train_inner" in line and "{" in line][1:]
    seconds = sum(interval / float(e["ups"]) for e in inner)
    tokens_done = sum(float(e["wps"]) * interval / float(e["ups"]) for e in inner)
    return {"ups": len(inner) * interval / seconds, "wps": tokens_done / seconds, "rss_mib": rss, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fairseq-python", default=str(REPO / ".venv-fairseq" / "bin" / "python"))
    parser.add_argument("--data-root", default=os.environ.get("RADAM_DATA", str(REPO / "data")))
    parser.add_argument("--presets", nargs="+", default=["cpu"], choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data_root = Path(args.data_root).resolve()
    if not (data_root / "ding" / "bpe" / "train.de").exists():
        raise SystemExit(f"{data_root}/ding is not prepared; run `python run.py trainer.max_updates=1 "
                         f"task.data_root={data_root}` once (or set --data-root)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_bin = binarize(data_root / "ding", args.fairseq_python, work / "data-bin")
        for preset in args.presets:
            runs = {"ours": [], "fairseq": []}
            for r in range(args.repeats):  # interleaved, alternating which goes first
                order = ("ours", "fairseq") if r % 2 == 0 else ("fairseq", "ours")
                for tool in order:
                    result = ours(preset, data_root, work) if tool == "ours" else \
                        fairseq(preset, data_bin, args.fairseq_python, work)
                    runs[tool].append(result)
                    print(f"{preset} {tool} run {r + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()),
                          flush=True)
            med = {tool: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for tool, rs in runs.items()}
            model, _, _, _, tokens, updates, _ = PRESETS[preset]
            print(f"\n{preset} (model={model}, --max-tokens {tokens}, {updates} updates, 1 thread), medians of "
                  f"{args.repeats}:")
            print("| | updates/s | target tokens/s | peak RSS (MiB) | process wall (s) |\n|---|---|---|---|---|")
            for tool in ("ours", "fairseq"):
                m = med[tool]
                print(f"| {tool} | {m['ups']:.3f} | {m['wps']:.0f} | {m['rss_mib']:.0f} | {m['wall_s']:.1f} |")
            ratio = {k: med["ours"][k] / med["fairseq"][k] for k in ("ups", "wps")}
            print(f"| ratio ours / fairseq | {ratio['ups']:.3f} | {ratio['wps']:.3f} | "
                  f"{med['ours']['rss_mib'] / med['fairseq']['rss_mib']:.2f} | "
                  f"{med['ours']['wall_s'] / med['fairseq']['wall_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
