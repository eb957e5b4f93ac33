"""logger=wandb mirrors metrics.jsonl to Weights & Biases; WANDB_MODE=offline writes a local run, no network."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tests.conftest import TINY_NMT, events, run_env, run_py

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 7-byte file header, 32 KiB blocks of framed records


def wandb_records(path: Path) -> list[bytes]:
    """The protobuf payloads of a .wandb file (frames: crc32 u32, length u16, type u8; FULL/FIRST/MIDDLE/LAST)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, out, partial = 7, [], b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        partial = payload if kind in (1, 2) else partial + payload
        if kind in (1, 4):
            out.append(partial)
            partial = b""
    return out


def history(run_file: Path) -> list[dict]:
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for payload in wandb_records(run_file):
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_offline_wandb_run_holds_the_metrics(ding_data, tmp_path):
    run_dir = tmp_path / "run"
    env = run_env(ding_data, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path))
    run_py(*TINY_NMT, "logger=wandb", "logger.tags=[ci,offline]", "trainer.max_updates=4", "trainer.log_interval=2",
           f"hydra.run.dir={run_dir}", env=env)
    run_files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    assert run_files[0].stem == "run-" + (run_dir / "wandb_id").read_text().strip()
    rows = history(run_files[0])
    train = [e for e in events(run_dir) if e["split"] == "train"]
    logged = [r for r in rows if "train/loss" in r]
    assert [r["_step"] for r in logged] == [e["update"] for e in train] == [2, 4]
    for row, event in zip(logged, train):
        assert row["train/loss"] == event["loss"] and row["train/lr"] == event["lr"]
    assert any("valid/loss" in r for r in rows) and any("test/bleu" in r for r in rows)
