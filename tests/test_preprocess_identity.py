"""Preprocess outputs are pinned: a fixed small input gives the same run directory as before the
speed work of issue #18 (vocabulary files, transformed TFRecords, entity tables, invalid rows,
statistics, counts and the train/eval assignment), in CSV (two files, clean and dirty, whole-record
split) and Parquet (two row groups, split by key).

The expected fingerprints in tests/data/preprocess_identity.json were written by the code before
those changes (plus the `rows_filtered` count that input filters added since, 0 here);
`python -m tests.test_preprocess_identity` rewrites them (only for a deliberate change).
"""
from __future__ import annotations

import glob
import hashlib
import json
import pathlib
import sys

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import ROOT, run_cli

INPUT = ROOT / "tests" / "data" / "interactions"
EXPECTED = ROOT / "tests" / "data" / "preprocess_identity.json"


def job_config(path: pathlib.Path, fmt: str, split: dict) -> dict:
    return {
        "name": "identity", "input": {"path": str(path), "format": fmt, "max_invalid_fraction": 0.1},
        "split": split,
        "features": {"user": {"type": "vocabulary"}, "item": {"type": "vocabulary"},
                     "day_hour": {"type": "cross", "columns": ["day", "hour"], "hash_buckets": 168},
                     "amount": {"type": "numeric"}},
        "model": {"kind": "two_tower", "query": ["user"], "candidate": ["item"]},
        "entities": [{"name": "user", "key": "user"}, {"name": "item", "key": "item", "metadata": ["title"]}],
    }


def digest(items: list) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def examples(pattern: str) -> list[bytes]:
    """The tf.Examples of gzipped TFRecord files (read by TensorFlow's own reader), serialized with
    their features in name order (the order of a map's entries in the bytes is not part of it)."""
    import tensorflow as tf
    return [tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
            for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP")]


def rounded(value):
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def fingerprint(run: pathlib.Path) -> dict:
    """Everything preprocess publishes, as order-free digests (shards and their order may vary)."""
    facts = {"counts": json.loads((run / "manifest.json").read_text())["stages"]["preprocess"]["counts"]}
    assets = run / "transform" / "transform_fn" / "assets"
    facts["vocabularies"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(assets.iterdir())}
    for split in ("train", "eval"):
        records = sorted(examples(str(run / "data" / f"{split}-*.tfrecord.gz")))
        facts[f"{split}_examples"] = [len(records), hashlib.sha256(b"".join(records)).hexdigest()]
    for table in sorted((run / "data" / "entities").iterdir()):
        rows = pq.read_table(table).to_pylist()
        facts[f"entities_{table.name}"] = [len(rows), digest(sorted(rows, key=lambda r: r["key"]))]
    invalid = [json.loads(line) for p in sorted((run / "invalid").glob("*.jsonl"))
               for line in p.read_text().splitlines()]
    for row in invalid:
        row["file"] = pathlib.Path(row["file"]).name
    facts["invalid"] = [len(invalid), digest(sorted(invalid, key=json.dumps))]
    facts["statistics"] = digest(rounded(json.loads((run / "data" / "statistics.json").read_text())))
    return facts


def parquet_input(directory: pathlib.Path) -> pathlib.Path:
    path = directory / "clean.parquet"
    pq.write_table(pacsv.read_csv(INPUT / "clean.csv"), path, row_group_size=2000)
    return path


CASES = {
    "csv": lambda d: (INPUT / "*.csv", "csv", {"eval_fraction": 0.2}),
    "parquet": lambda d: (parquet_input(d), "parquet", {"eval_fraction": 0.2, "key": ["user"]}),
}


def run_case(name: str, directory: pathlib.Path) -> dict:
    path, fmt, split = CASES[name](directory)
    config = directory / f"{name}.yaml"
    config.write_text(yaml.safe_dump(job_config(path, fmt, split)))
    assert run_cli("preprocess", config, "--output", directory / "runs", "--run-id", name) == 0
    return fingerprint(directory / "runs" / name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_identical_to_pinned(tmp_path, name):
    expected = json.loads(EXPECTED.read_text())[name]
    found = run_case(name, tmp_path)
    assert found["counts"] == expected["counts"]
    assert found == expected


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as scratch:
        EXPECTED.write_text(json.dumps({n: run_case(n, pathlib.Path(scratch)) for n in sorted(CASES)}, indent=1) + "\n")
    sys.exit(0)
