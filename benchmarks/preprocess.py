"""Preprocess throughput: embedpipe's Beam + tf.Transform job beside a single-process pyarrow reference.

N synthetic interactions (Zipf-distributed users and items, day, hour, a numeric column) are
written as CSV and Parquet. The job (two vocabularies, one hashed day x hour cross, a z-scored
number, TFRecords + entity tables) runs in the modes below; the reference does the same counting,
indexing, hashing, scaling and tf.Example encoding with pyarrow in one process, in the same run.

    python benchmarks/preprocess.py [--rows 1000000] [--modes csv,csv-2proc,parquet,parquet-2proc]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.report import print_ratio_table  # noqa: E402
MULTI_PROCESS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
MODES = {"csv": ("csv", []), "csv-2proc": ("csv", MULTI_PROCESS),
         "parquet": ("parquet", []), "parquet-2proc": ("parquet", MULTI_PROCESS)}


def synthetic_interactions(rows: int, seed: int = 0) -> pa.Table:
    """Zipf(1.2) users over 100k ids and items over 20k ids, uniform day/hour, lognormal amount."""
    rng = np.random.default_rng(seed)
    users = np.minimum(rng.zipf(1.2, rows), 100_000)
    items = np.minimum(rng.zipf(1.2, rows), 20_000)
    return pa.table({
        "user": pa.array(users.astype(str)), "item": pa.array(items.astype(str)),
        "day": pa.array(rng.integers(1, 8, rows).astype(str)), "hour": pa.array(rng.integers(0, 24, rows).astype(str)),
        "amount": pa.array(rng.lognormal(2.0, 1.0, rows).round(2)),
    })


def config(path: pathlib.Path, fmt: str) -> dict:
    return {
        "name": "bench", "input": {"path": str(path), "format": fmt}, "split": {"eval_fraction": 0.1},
        "features": {"user": {"type": "vocabulary"}, "item": {"type": "vocabulary"},
                     "day_hour": {"type": "cross", "columns": ["day", "hour"], "hash_buckets": 168},
                     "amount": {"type": "numeric"}},
        "model": {"kind": "two_tower", "query": ["user"], "candidate": ["item"]},
        "entities": [{"name": "user", "key": "user"}, {"name": "item", "key": "item"}],
    }


def reference(csv_path: pathlib.Path, out: pathlib.Path) -> int:
    """Single process: read, count vocabularies, index, hash the cross, z-score, encode, write gzipped TFRecords."""
    import tensorflow as tf
    from tfx_bsl.public import tfxio
    from tensorflow_transform.tf_metadata import schema_utils
    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(
        column_types={"user": pa.string(), "item": pa.string(), "day": pa.string(), "hour": pa.string()}))
    columns = {}
    for name in ("user", "item"):
        counts = pc.value_counts(table[name]).flatten()
        order = pc.sort_indices(pa.table({"v": counts[0], "c": counts[1]}), [("c", "descending"), ("v", "descending")])
        vocabulary = pc.take(counts[0], order)
        columns[name] = pc.fill_null(pc.index_in(table[name], value_set=vocabulary), len(vocabulary)).cast(pa.int64())
    joined = pc.binary_join_element_wise(table["day"], table["hour"], "|").to_numpy(zero_copy_only=False)
    columns["day_hour"] = pa.array(tf.strings.to_hash_bucket_fast(joined, 168).numpy())
    amount = table["amount"].to_numpy()
    columns["amount"] = pa.array(((amount - amount.mean()) / amount.std()).astype(np.float32))
    offsets = pa.array(np.arange(table.num_rows + 1))
    transformed = pa.table(columns).combine_chunks()
    batch = pa.RecordBatch.from_arrays([pa.LargeListArray.from_arrays(offsets, transformed.column(c).chunk(0))
                                        for c in columns], names=list(columns))
    spec = {"user": tf.io.FixedLenFeature([], tf.int64), "item": tf.io.FixedLenFeature([], tf.int64),
            "day_hour": tf.io.FixedLenFeature([], tf.int64), "amount": tf.io.FixedLenFeature([], tf.float32)}
    encoder = tfxio.RecordBatchToExamplesEncoder(schema_utils.schema_from_feature_spec(spec))
    written = 0
    with tf.io.TFRecordWriter(str(out / "reference.tfrecord.gz"), options="GZIP") as writer:
        for start in range(0, table.num_rows, 65536):
            for example in encoder.encode(batch.slice(start, 65536)):
                writer.write(example)
                written += 1
    return written


def run_job(path: pathlib.Path, fmt: str, beam_args: list[str], out: pathlib.Path) -> dict:
    import yaml
    from pipelines import cli
    config_path = out / f"bench-{fmt}.yaml"
    config_path.write_text(yaml.safe_dump(config(path, fmt)))
    run_id = f"{fmt}-{len(beam_args)}"
    shutil.rmtree(out / "runs" / run_id, ignore_errors=True)
    if cli.main(["preprocess", str(config_path), "--output", str(out / "runs"), "--run-id", run_id, *beam_args]):
        raise SystemExit("preprocess failed")
    return json.loads((out / "runs" / run_id / "manifest.json").read_text())["stages"]["preprocess"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "preprocess")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.out.mkdir(parents=True, exist_ok=True)
    table = synthetic_interactions(args.rows)
    csv_path, parquet_path = args.out / "rows.csv", args.out / "rows.parquet"
    pacsv.write_csv(table, csv_path)
    pq.write_table(table, parquet_path, row_group_size=100_000)
    results = []
    started = time.perf_counter()
    written = reference(csv_path, args.out)
    seconds = time.perf_counter() - started
    assert written == args.rows
    results.append(("pyarrow reference (1 process)", seconds))
    for mode in args.modes.split(","):
        fmt, beam_args = MODES[mode]
        stage = run_job(csv_path if fmt == "csv" else parquet_path, fmt, beam_args, args.out)
        assert stage["counts"]["rows_valid"] == args.rows, stage["counts"]
        results.append((f"embedpipe preprocess, {mode}", stage["seconds"]))
    print_ratio_table(f"Preprocess of {args.rows:,} rows (2 vocabularies, 1 hashed cross, 1 z-score, TFRecords)",
                      "pipeline", "rows", args.rows, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
