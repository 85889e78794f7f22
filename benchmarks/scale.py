"""How cost grows with data: every stage in its own process, its rate and peak memory (RSS).

Preprocess runs at 100k, 1M and 5M synthetic interactions (benchmarks/preprocess.py's data and
config, CSV, in-memory DirectRunner) beside the single-process pyarrow reference, which holds the
whole table in memory. On the 1M run, `train` (two-tower, one epoch) runs beside a `tf.data` pass
that only reads and parses the same TFRecords, and `embed` (every user and item) beside a direct
NumPy -> pyarrow Parquet write of as many vectors. Peak RSS comes from the kernel's accounting of
each finished child process (`wait4`), so one stage's memory is not mixed with another's.

    python benchmarks/scale.py [--sizes 100000,1000000,5000000] [--out benchmarks/out/scale]
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

import pyarrow.csv as pacsv
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.preprocess import config, reference, synthetic_interactions  # noqa: E402
EMBEDDING_DIM = 32


def measured(command: list[str], log: pathlib.Path, tree: pathlib.Path = ROOT) -> tuple[dict, float]:
    """Runs `command` in a child process with the code of `tree`; returns the JSON its last stdout line
    printed (if any) and its peak RSS in MiB."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as errors:
        process = subprocess.Popen(command, cwd=tree, env=environment, stdout=subprocess.PIPE, stderr=errors, text=True)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    lines = output.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return result, usage.ru_maxrss / 1024


def child(argv: list[str]) -> int:
    """The baselines, each run as its own process: `reference CSV OUT`, `read RUN`, `write N OUT`."""
    import tensorflow  # noqa: F401  imported before the clock starts, as in the stages' own timings
    started = time.perf_counter()
    if argv[0] == "reference":
        rows = reference(pathlib.Path(argv[1]), pathlib.Path(argv[2]))
    elif argv[0] == "read":
        import tensorflow_transform as tft
        from pipelines.core.rundir import RunDir
        from trainer.inputs import make_dataset
        spec = tft.TFTransformOutput(os.path.join(argv[1], "transform")).transformed_feature_spec()
        started = time.perf_counter()
        rows = sum(int(batch["user"].shape[0]) for batch in make_dataset(RunDir(argv[1]).examples_pattern("train"), spec, 1024))
    else:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq
        rows = int(argv[1])
        vectors = np.random.default_rng(0).normal(size=(rows, EMBEDDING_DIM)).astype(np.float32)
        started = time.perf_counter()
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), EMBEDDING_DIM)
        pq.write_table(pa.table({"key": [str(i) for i in range(rows)], "embedding": column}), argv[2])
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))
    return 0


def embedpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def stage_facts(run: pathlib.Path, stage: str) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"][stage]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "scale")
    args, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--child":
        return child(rest[1:])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    sizes = [int(size) for size in args.sizes.split(",")]
    rows_table, runs = [], {}
    for size in sizes:
        csv = args.out / f"rows-{size}.csv"
        pacsv.write_csv(synthetic_interactions(size), csv)
        base, base_rss = measured([sys.executable, __file__, "--child", "reference", str(csv), str(args.out)],
                                  args.out / f"reference-{size}.log")
        settings = config(csv, "csv")
        settings["model"].update({"epochs": 1, "batch_size": 1024, "embedding_dim": EMBEDDING_DIM, "hidden_units": []})
        config_path = args.out / f"config-{size}.yaml"
        config_path.write_text(yaml.safe_dump(settings))
        _, rss = measured(embedpipe("preprocess", str(config_path), "--output", str(args.out / "runs"),
                                    "--run-id", str(size)), args.out / f"preprocess-{size}.log")
        runs[size] = args.out / "runs" / str(size)
        facts = stage_facts(runs[size], "preprocess")
        assert facts["counts"]["rows_valid"] == size, facts["counts"]
        rows_table.append((size, base["seconds"], base_rss, facts["seconds"], rss))
        csv.unlink()

    print("\nPreprocess as data grows (CSV, in-memory DirectRunner; each in its own process)")
    print("| rows | reference rows/s | reference peak RSS MiB | embedpipe rows/s | embedpipe peak RSS MiB | time vs reference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size, base_seconds, base_rss, seconds, rss in rows_table:
        print(f"| {size:,} | {size / base_seconds:,.0f} | {base_rss:,.0f} | {size / seconds:,.0f} | {rss:,.0f} | "
              f"{seconds / base_seconds:.1f}x |")

    size = 1_000_000 if 1_000_000 in runs else sizes[-1]
    run = runs[size]
    read, read_rss = measured([sys.executable, __file__, "--child", "read", str(run)], args.out / "read.log")
    _, train_rss = measured(embedpipe("train", str(run)), args.out / "train.log")
    metrics = json.loads((run / "metrics.json").read_text())
    examples = read["rows"] * metrics["epochs_run"]
    _, embed_rss = measured(embedpipe("embed", str(run)), args.out / "embed.log")
    embed = stage_facts(run, "embed")
    entities = sum(embed["entities"].values())
    write, write_rss = measured([sys.executable, __file__, "--child", "write", str(entities), str(args.out / "direct.parquet")],
                                args.out / "write.log")
    print(f"\nTrain and embed on the {size:,}-row run ({read['rows']:,} training examples, {entities:,} entities)")
    print("| stage | rate | peak RSS MiB | same-run baseline | baseline rate | baseline peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| train (two-tower, 1 epoch, batch 1024) | {examples / metrics['fit_seconds']:,.0f} examples/s | {train_rss:,.0f} | "
          f"tf.data read + parse only | {read['rows'] / read['seconds']:,.0f} examples/s | {read_rss:,.0f} |")
    print(f"| embed (every user and item, {EMBEDDING_DIM} dims) | {entities / embed['seconds']:,.0f} entities/s | {embed_rss:,.0f} | "
          f"NumPy -> pyarrow Parquet write | {entities / write['seconds']:,.0f} entities/s | {write_rss:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
