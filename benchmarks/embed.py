"""Embed throughput: N synthetic entities x 64 dims through the embed job beside a direct Parquet write.

A run with N distinct raw keys of a hashed feature (64-dim embedding) is preprocessed and trained
for one epoch; then the embed job enumerates all N keys, calls the SavedModel in batches and
writes Parquet. The baseline writes the same keys and vectors from NumPy with pyarrow in one call.

    python benchmarks/embed.py [--entities 1000000] [--out benchmarks/out/embed]
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
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.report import print_ratio_table  # noqa: E402
MULTI_PROCESS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


def prepare_run(entities: int, out: pathlib.Path) -> pathlib.Path:
    """A trained run whose entity `thing` has `entities` distinct keys."""
    import yaml
    from pipelines import cli
    rng = np.random.default_rng(0)
    data = out / "things.csv"
    pacsv.write_csv(pa.table({"thing": [f"t{i:08d}" for i in range(entities)],
                              "score": rng.normal(size=entities).astype(np.float32)}), data)
    config = {"name": "embed_bench", "input": {"path": str(data), "format": "csv"},
              "features": {"thing": {"type": "hash", "hash_buckets": 65536}},
              "model": {"kind": "supervised", "label": "score", "embedding_dim": 64, "hidden_units": [],
                        "epochs": 1, "batch_size": 8192},
              "entities": [{"name": "thing", "key": "thing"}]}
    path = out / "embed_bench.yaml"
    path.write_text(yaml.safe_dump(config))
    shutil.rmtree(out / "runs", ignore_errors=True)
    assert cli.main(["preprocess", str(path), "--output", str(out / "runs"), "--run-id", "bench"]) == 0
    assert cli.main(["train", str(out / "runs" / "bench")]) == 0
    return out / "runs" / "bench"


def embed(run: pathlib.Path, beam_args: list[str]) -> float:
    from pipelines.core.beam_runner import pipeline_options
    from pipelines.core.rundir import RunDir
    from pipelines.stages.embed.pipeline import run_embed
    started = time.perf_counter()
    run_embed(RunDir(str(run)), pipeline_options(beam_args))
    return time.perf_counter() - started


def direct_write(run: pathlib.Path, out: pathlib.Path) -> float:
    """The same keys and vectors, from NumPy to one Parquet file (the vectors are read beforehand)."""
    table = pq.read_table(run / "embeddings" / "thing")
    keys = table.column("key").to_numpy(zero_copy_only=False).astype(object)
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    started = time.perf_counter()
    direct = pa.table({"key": pa.array(keys, pa.string()),
                       "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
                       "count": pa.array(np.zeros(len(keys), np.int64))})
    pq.write_table(direct, out / "direct.parquet", use_dictionary=["key"], compression="snappy")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "embed")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.out.mkdir(parents=True, exist_ok=True)
    run = prepare_run(args.entities, args.out)
    results = [("embed job, in-process runner", embed(run, []))]
    count = json.loads((run / "manifest.json").read_text())["stages"]["embed"]["entities"]["thing"]
    assert count == args.entities, count
    results.append(("embed job, 2 worker processes", embed(run, MULTI_PROCESS)))
    results.insert(0, ("direct NumPy -> pyarrow Parquet write", direct_write(run, args.out)))
    print_ratio_table(f"Embedding {args.entities:,} entities x 64 dims to Parquet", "writer", "entities",
                      args.entities, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
