"""`embedpipe preprocess` end to end on real taxi rows: outputs, counts, split, every input format."""
from __future__ import annotations

import collections
import json
import pathlib

import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from tests.conftest import TAXI_SAMPLE, run_cli, write_config
from trainer.inputs import make_dataset

FORMAT_ROWS = 300


def manifest(run: pathlib.Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def read_examples(run: pathlib.Path, split: str) -> list[tuple]:
    spec = tft.TFTransformOutput(str(run / "transform")).transformed_feature_spec()
    rows = []
    for batch in make_dataset(str(run / "data" / f"{split}-*.tfrecord.gz"), spec, batch_size=512):
        columns = {k: v.numpy().tolist() for k, v in batch.items()}
        rows += list(zip(*(columns[k] for k in sorted(columns))))
    return rows


def test_outputs_and_counts(taxi_run):
    for path in ("transform/transform_fn/saved_model.pb", "transform/transformed_metadata/schema.pbtxt",
                 "transform/transform_fn/assets/payment_type", "transform/metadata/schema.pbtxt"):
        assert (taxi_run / path).exists(), path
    assert list((taxi_run / "data").glob("train-*.tfrecord.gz")) and list((taxi_run / "data").glob("eval-*.tfrecord.gz"))
    assert list((taxi_run / "invalid").glob("invalid-*.jsonl"))
    stage = manifest(taxi_run)["stages"]["preprocess"]
    counts = stage["counts"]
    assert stage["status"] == "succeeded" and stage["seconds"] > 0
    assert counts["rows_read"] == 2000 == counts["rows_valid"] + counts["rows_invalid"]
    assert counts["rows_valid"] == counts["rows_train"] + counts["rows_eval"]
    assert abs(counts["rows_eval"] / counts["rows_valid"] - 0.2) < 0.03
    train, evaluation = read_examples(taxi_run, "train"), read_examples(taxi_run, "eval")
    assert (len(train), len(evaluation)) == (counts["rows_train"], counts["rows_eval"])
    spec = tft.TFTransformOutput(str(taxi_run / "transform")).transformed_feature_spec()
    assert set(spec) == {"day_hour", "payment_type", "company", "pickup_area", "trip_miles", "trip_seconds", "fare"}
    sample = pd.read_csv(TAXI_SAMPLE)
    assert sorted(r[sorted(spec).index("fare")] for r in train + evaluation) == pytest.approx(sorted(sample.fare))


def test_same_split_on_a_second_run(tmp_path, taxi_run):
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)})
    assert run_cli("preprocess", config, "--output", tmp_path, "--run-id", "again") == 0
    again = tmp_path / "again"
    assert manifest(again)["stages"]["preprocess"]["counts"] == manifest(taxi_run)["stages"]["preprocess"]["counts"]
    assert collections.Counter(read_examples(again, "eval")) == collections.Counter(read_examples(taxi_run, "eval"))


def write_format(frame: pd.DataFrame, fmt: str, path: pathlib.Path) -> None:
    if fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif fmt == "tfrecord":
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in frame.to_dict("records"):
                feature = {}
                for name, value in record.items():
                    if pd.isna(value):
                        continue  # a missing value is an absent feature
                    if isinstance(value, str):
                        feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
                    elif isinstance(value, int):
                        feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                    else:
                        feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def format_sample(tmp_path_factory) -> tuple[pd.DataFrame, pathlib.Path]:
    directory = tmp_path_factory.mktemp("formats")
    frame = pd.read_csv(TAXI_SAMPLE).head(FORMAT_ROWS)
    frame.to_csv(directory / "rows.csv", index=False)
    return frame, directory


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "tfrecord"])
def test_every_table_format_gives_the_same_result(format_sample, fmt):
    frame, directory = format_sample
    path = directory / f"rows.{fmt}"
    write_format(frame, fmt, path)
    features = {"day_hour": {"type": "cross", "columns": ["trip_start_day", "trip_start_hour"], "hash_buckets": 168},
                "payment_type": {"type": "vocabulary"}, "trip_miles": {"type": "numeric"},
                "area": {"type": "identity", "column": "pickup_community_area", "num_buckets": 78}}
    (directory / fmt).mkdir()
    config = write_config(directory / fmt, "chicago_taxi_fare",
                          input={"path": str(path), "format": fmt}, features=features,
                          entities=[{"name": "day_hour", "key": "day_hour"}, {"name": "area", "key": "area"}])
    assert run_cli("preprocess", config, "--output", directory / "runs", "--run-id", fmt) == 0
    run = directory / "runs" / fmt
    counts = manifest(run)["stages"]["preprocess"]["counts"]
    assert counts["rows_read"] == counts["rows_valid"] == FORMAT_ROWS
    vocabulary = (run / "transform/transform_fn/assets/payment_type").read_text().split()
    assert vocabulary[:2] == ["Cash", "Credit"]
    keys = set(pd.read_parquet(run / "data/entities/day_hour").key)
    assert keys == {f"{d}|{h}" for d, h in zip(frame.trip_start_day, frame.trip_start_hour)}
    areas = set(pd.read_parquet(run / "data/entities/area").key)
    assert areas == {str(int(a)) for a in frame.pickup_community_area.dropna()}


def examples_in_order(run: pathlib.Path, split: str) -> list[dict]:
    """A split's tf.Examples in file order, as {feature: tf.train.Feature} (the bytes of a proto map
    need not repeat between runs)."""
    files = sorted(str(path) for path in (run / "data").glob(f"{split}-*.tfrecord.gz"))
    return [dict(tf.train.Example.FromString(record.numpy()).features.feature)
            for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_the_replayed_transform_pass_writes_what_a_second_read_of_the_input_writes(tmp_path, monkeypatch):
    """On the in-process runner tf.Transform's second pass reads the first pass's typed rows back
    from scratch files; on other runners it reads and decodes the input again. Same run directory."""
    from pipelines.stages.preprocess import pipeline, replay
    frame = pd.read_csv(TAXI_SAMPLE).astype({"trip_miles": object})
    frame.loc[[3, 700, 1500], "trip_miles"] = "far"
    frame.to_csv(tmp_path / "rows.csv", index=False)
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "rows.csv")})
    replayed, read = [], replay.ReadSpilledBatches.process

    def record_replayed(self, path):
        replayed.append(path)
        yield from read(self, path)

    monkeypatch.setattr(replay.ReadSpilledBatches, "process", record_replayed)
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", "replayed") == 0
    assert sorted(pathlib.Path(path).name.split("-")[0] for path in replayed) == ["eval", "train"]
    assert not any(pathlib.Path(path).parent.exists() for path in replayed)   # the scratch directory is gone
    monkeypatch.setattr(pipeline, "runs_in_process", lambda options: False)   # as on Dataflow: a second read
    replayed.clear()
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", "reread") == 0
    assert not replayed
    runs = {name: tmp_path / "runs" / name for name in ("replayed", "reread")}
    counts = [manifest(run)["stages"]["preprocess"]["counts"] for run in runs.values()]
    assert counts[0] == counts[1] and counts[0]["rows_invalid"] == 3
    for split in ("train", "eval"):
        records = [examples_in_order(run, split) for run in runs.values()]
        assert len(records[0]) == counts[0][f"rows_{split}"] and records[0] == records[1]
    for asset in (runs["reread"] / "transform/transform_fn/assets").iterdir():
        assert (runs["replayed"] / "transform/transform_fn/assets" / asset.name).read_bytes() == asset.read_bytes()
    for entity in ("day_hour", "company"):
        tables = [pd.read_parquet(run / "data/entities" / entity).sort_values("key", ignore_index=True)
                  for run in runs.values()]
        pd.testing.assert_frame_equal(tables[0], tables[1])
    invalid = [sorted(line for path in (run / "invalid").glob("*.jsonl") for line in path.read_text().splitlines())
               for run in runs.values()]
    assert invalid[0] == invalid[1] and len(invalid[0]) == counts[0]["rows_invalid"]


def test_replayed_batches_come_back_whole_and_in_order(tmp_path):
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that
    import apache_beam as beam
    import pyarrow as pa
    from pipelines.stages.preprocess.replay import ReplayBatches
    batches = [pa.record_batch({"user": [f"u{i}" for i in range(start, start + size)],
                                "amount": pa.array([i / 4 for i in range(start, start + size)], pa.float32())})
               for start, size in ((0, 5), (5, 1), (6, 1000))]

    def same_batches(replayed):
        assert [b.to_pydict() for b in replayed] == [b.to_pydict() for b in batches]
        assert all(b.schema.equals(batches[0].schema) for b in replayed)

    with TestPipeline() as p:
        replayed = p | beam.Create(batches) | ReplayBatches(str(tmp_path), "train")
        assert_that(replayed, same_batches)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("train-") and files[0].suffix == ".arrows"


def test_text_format_reads_one_document_per_line(tmp_path):
    lines = ["The cat sat", "the dog sat", "", "A cat and a dog", "the end"]
    (tmp_path / "docs.txt").write_text("\n".join(lines) + "\n")
    features = {"doc": {"type": "hash", "column": "text", "hash_buckets": 8},
                "doc_id": {"type": "hash", "column": "text", "hash_buckets": 16},
                "words": {"type": "text", "column": "text"}}
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "docs.txt"), "format": "text"},
                          features=features, model={"kind": "two_tower", "query": ["doc"], "candidate": ["doc_id", "words"],
                                                    "embeddings": {}},
                          entities=[{"name": "word", "key": "words"}], split={"eval_fraction": 0.01})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", "x") == 0
    run = tmp_path / "runs" / "x"
    assert manifest(run)["stages"]["preprocess"]["counts"]["rows_read"] == len(lines)
    vocabulary = (run / "transform/transform_fn/assets/words").read_text().split()
    assert vocabulary[0] == "the" and set(vocabulary) == {"the", "cat", "sat", "dog", "a", "and", "end"}
    assert manifest(run)["stages"]["preprocess"]["counts"]["rows_train"] == len(lines)
    counts = dict(pd.read_parquet(run / "data/entities/word", columns=["key", "count"]).values.tolist())
    assert counts == {"the": 3, "cat": 2, "sat": 2, "dog": 2, "a": 2, "and": 1, "end": 1}


def test_line_batch_source_splits_exactly(tmp_path):
    """Every line once, whatever the split points; headers skipped per file; CRLF endings removed."""
    from apache_beam.io.range_trackers import OffsetRangeTracker
    from pipelines.stages.preprocess.batched_io import LineBatchSource
    path = tmp_path / "lines.csv"
    lines = [f"row{i},{'x' * (i % 7)}" for i in range(1000)]
    path.write_bytes(("header\r\n" + "\r\n".join(lines) + "\r\n").encode())
    source = LineBatchSource(str(path), skip_header_lines=1, lines_per_batch=64)
    size = path.stat().st_size
    for cuts in ([0, size], [0, 5, 6, 7, 500, 4321, size], list(range(0, size, 997)) + [size]):
        read = []
        for start, stop in zip(cuts, cuts[1:]):
            for _, batch in source.read_records(str(path), OffsetRangeTracker(start, stop)):
                assert len(batch) <= 64
                read += [line.decode() for line in batch]
        assert read == lines, cuts


@pytest.mark.parametrize("block_bytes", [5, 64, 1 << 20])
def test_line_batch_source_across_blocks_and_dynamic_splits(tmp_path, monkeypatch, block_bytes):
    """Records spanning lines and blocks come out whole; a split that arrives while a run of lines
    is being claimed leaves every line to exactly one of the two ranges."""
    from apache_beam.io.range_trackers import OffsetRangeTracker
    from pipelines.stages.preprocess import batched_io
    monkeypatch.setattr(batched_io, "BLOCK_BYTES", block_bytes)
    records = [f'{i},"say ""hi""\r\non two lines",x' if i % 5 == 0 else f"{i},plain,{'y' * (i % 9)}" for i in range(300)]
    path = tmp_path / "quoted.csv"
    path.write_bytes(("a,b,c\r\n" + "\r\n".join(records) + "\r\n").encode())
    source = batched_io.LineBatchSource(str(path), skip_header_lines=1, lines_per_batch=50, quoted_newlines=True)
    read = [r.decode() for _, b in source.read_records(str(path), OffsetRangeTracker(0, path.stat().st_size)) for r in b]
    assert read == records

    class SplitOnThirdCall(OffsetRangeTracker):
        def __init__(self, start, stop, at):
            super().__init__(start, stop)
            self.calls, self.at, self.split = 0, at, None

        def set_current_position(self, position):
            super().set_current_position(position)
            self.calls += 1
            if self.calls == 3:
                self.split = self.try_split(self.at)

    lines = [f"row{i},{'x' * (i % 13)}" for i in range(2000)]
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(lines) + "\n")
    size = path.stat().st_size
    source = batched_io.LineBatchSource(str(path), lines_per_batch=64)
    for at in (size // 3, size // 2, size - 10):
        tracker = SplitOnThirdCall(0, size, at)
        first = [r.decode() for _, b in source.read_records(str(path), tracker) for r in b]
        assert tracker.split is not None
        rest = [r.decode() for _, b in source.read_records(str(path), OffsetRangeTracker(tracker.split[0], size))
                for r in b]
        assert first + rest == lines, at


def test_gzip_in_thread_writes_the_bytes_of_beams_gzip(tmp_path):
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    from pipelines.stages.preprocess.batched_io import GzipInThread, frame_records
    chunks = [frame_records([bytes([i % 251]) * (i % 97) for i in range(j, j + 3000)]) for j in range(0, 15000, 3000)]
    for name, handle in (("beam.gz", FileSystems.create(str(tmp_path / "beam.gz"), "x", CompressionTypes.GZIP)),
                         ("thread.gz", GzipInThread(FileSystems.create(str(tmp_path / "thread.gz"), "x",
                                                                       CompressionTypes.UNCOMPRESSED)))):
        for chunk in chunks:
            handle.write(chunk)
        handle.close()
    assert (tmp_path / "thread.gz").read_bytes() == (tmp_path / "beam.gz").read_bytes()


def test_tfrecord_framing_reads_back(tmp_path):
    from pipelines.stages.preprocess.batched_io import frame_records
    records = [b"", b"a", b"x" * 100_000]
    (tmp_path / "r.tfrecord").write_bytes(frame_records(records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "r.tfrecord"))] == records
