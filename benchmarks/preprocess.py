"""Preprocess speed: embedpipe's Beam + tf.Transform job beside a single-process pyarrow reference.

Synthetic interactions (Zipf-distributed users and items, day, hour, a numeric column) are written
as CSV (and Parquet for the parquet modes) at each size. The job (two vocabularies, one hashed
day x hour cross, a z-scored number, TFRecords + entity tables + statistics) runs as a user runs
it: `python -m pipelines.cli preprocess`, a new process, imports included, in the modes asked for;
the reference does the same counting, indexing, hashing, scaling and gzipped tf.Example writing
with pyarrow in one new process, in the same run. Both get a fixed cost (the time of the smallest
run) and a marginal rate (rows per second between the second smallest and the largest run).

    python benchmarks/preprocess.py [--sizes 10000,100000,1000000,3000000] [--modes csv,csv-2proc,parquet]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
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


def timed(command: list[str], log: pathlib.Path, tree: pathlib.Path = ROOT) -> tuple[float, float]:
    """Runs `command` in `tree` as a user would (a new process, imports included): wall seconds and
    peak RSS in MiB."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=tree, env=environment, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return seconds, usage.ru_maxrss / 1024


def input_file(rows: int, fmt: str, out: pathlib.Path) -> pathlib.Path:
    """The synthetic rows as CSV or Parquet, written once per size (the same seed gives the same rows)."""
    path = out / f"rows-{rows}.{fmt}"
    if not path.exists():
        table = synthetic_interactions(rows)
        if fmt == "csv":
            pacsv.write_csv(table, path)
        else:
            pq.write_table(table, path, row_group_size=100_000)
    return path


def run_job(rows: int, mode: str, out: pathlib.Path, tree: pathlib.Path = ROOT) -> tuple[float, float]:
    """`python -m pipelines.cli preprocess` of `rows` rows in `mode` with the code of `tree`: wall
    seconds and peak RSS in MiB."""
    fmt, beam_args = MODES[mode]
    config_path = out / f"bench-{mode}-{rows}.yaml"
    config_path.write_text(yaml.safe_dump(config(input_file(rows, fmt, out), fmt)))
    run_id = f"{mode}-{rows}"
    shutil.rmtree(out / "runs" / run_id, ignore_errors=True)
    measured = timed([sys.executable, "-m", "pipelines.cli", "preprocess", str(config_path), "--output",
                      str(out / "runs"), "--run-id", run_id, *beam_args], out / f"{run_id}.log", tree)
    counts = json.loads((out / "runs" / run_id / "manifest.json").read_text())["stages"]["preprocess"]["counts"]
    assert counts["rows_valid"] == rows, counts
    shutil.rmtree(out / "runs" / run_id)
    return measured


def run_reference(rows: int, out: pathlib.Path) -> tuple[float, float]:
    return timed([sys.executable, __file__, "--reference", str(input_file(rows, "csv", out)), str(out)],
                 out / f"reference-{rows}.log")


def cost_model(seconds: dict[int, float], small: int, large: int, fixed: int) -> tuple[float, float]:
    """Fixed cost (the time of the `fixed`-row run) and marginal rate (rows/s between `small` and `large`)."""
    return seconds[fixed], (large - small) / (seconds[large] - seconds[small])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,3000000",
                        help="row counts; fixed cost is the smallest run's time, the marginal rate is "
                             "measured between the second smallest and the largest")
    parser.add_argument("--modes", default="csv", help=f"embedpipe runs, comma-separated: {', '.join(MODES)}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size and mode; the fastest counts")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "preprocess")
    parser.add_argument("--before", type=pathlib.Path,
                        help="another checkout (an earlier commit) whose preprocess runs too, for before/after")
    parser.add_argument("--reference", nargs=2, metavar=("CSV", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference:
        return 0 if reference(pathlib.Path(args.reference[0]), pathlib.Path(args.reference[1])) else 1
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    modes = args.modes.split(",")
    jobs = {"pyarrow reference (1 process)": lambda rows: run_reference(rows, args.out)}
    if args.before:
        jobs.update({f"before: embedpipe preprocess, {mode}": lambda rows, mode=mode: run_job(
            rows, mode, args.out, args.before.resolve()) for mode in modes})
    jobs.update({f"embedpipe preprocess, {mode}": lambda rows, mode=mode: run_job(rows, mode, args.out) for mode in modes})
    measured: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in jobs}
    for rows in sizes:
        for _ in range(args.repeat):  # interleaved, so the machine's load falls on every job alike
            for name, job in jobs.items():
                seconds, rss = job(rows)
                best = measured[name].get(rows)
                measured[name][rows] = (seconds, rss) if best is None or seconds < best[0] else best
    print(f"\nPreprocess wall time as a user runs it, imports included (2 vocabularies, 1 hashed cross, "
          f"1 z-score, TFRecords; CSV unless named; best of {args.repeat})")
    print("| pipeline | " + " | ".join(f"{rows:,} rows s (peak MiB)" for rows in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for name, by_size in measured.items():
        print(f"| {name} | " + " | ".join(f"{s:.1f} ({m:,.0f})" for s, m in (by_size[rows] for rows in sizes)) + " |")
    if len(sizes) >= 3:
        print(f"\nPreprocess cost model: fixed cost = the {sizes[0]:,}-row run, marginal rate between "
              f"{sizes[1]:,} and {sizes[-1]:,} rows")
        print("| pipeline | fixed cost s | marginal rows/s | marginal rate vs reference |")
        print("| --- | --- | --- | --- |")
        base = None
        for name, by_size in measured.items():
            fixed, rate = cost_model({r: s for r, (s, _) in by_size.items()}, sizes[1], sizes[-1], sizes[0])
            base = base or rate
            print(f"| {name} | {fixed:.1f} | {rate:,.0f} | {rate / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
