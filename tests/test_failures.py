"""Bad input and failures: nothing lost, nothing half-published, clear errors, resumable runs."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.conftest import ROOT, TAXI_SAMPLE, run_cli, write_config

GOOD_ROWS = 400


def manifest(run: pathlib.Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def invalid_rows(run: pathlib.Path) -> list[dict]:
    return [json.loads(line) for path in sorted((run / "invalid").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def corrupted_csv(path: pathlib.Path) -> tuple[list[bytes], dict[str, str]]:
    """The first GOOD_ROWS taxi rows plus one bad row of every kind; returns (bad lines, reason by line)."""
    lines = TAXI_SAMPLE.read_bytes().splitlines()
    header, good = lines[0], lines[1:GOOD_ROWS + 1]
    fields = good[0].decode().split(",")
    names = header.decode().split(",")

    def variant(**changes) -> bytes:
        row = list(fields)
        for name, value in changes.items():
            row[names.index(name)] = value
        return ",".join(row).encode()

    bad = {
        b"1,2,3": "expected 18 CSV fields, got 3",
        variant(trip_miles="three"): "column 'trip_miles': 'three' is not a number",
        variant(trip_seconds="1e400"): "column 'trip_seconds': '1e400' is out of float32 range",
        variant(fare=""): "label 'fare' is missing",
        variant(fare="nan"): "label 'fare' is NaN",
        variant(pickup_community_area="7.5"): "column 'pickup_community_area': '7.5' is not an integer id",
        variant(company="Caf\xe9").replace("Café".encode(), b"Caf\xe9"): "invalid UTF-8",
    }
    extreme = [variant(company="x" * 20000), variant(trip_miles="-5000"), variant(pickup_community_area="999"),
               variant(payment_type="Bitcoin"), variant(trip_seconds="3e38")]
    body = good[:200] + list(bad) + extreme + good[200:]
    path.write_bytes(b"\n".join([header] + body) + b"\n")
    return list(bad), {line.decode("utf-8", "replace"): reason for line, reason in bad.items()}


def test_corrupted_csv_keeps_every_good_row(tmp_path):
    bad, reasons = corrupted_csv(tmp_path / "dirty.csv")
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "dirty.csv"),
                                                           "max_invalid_fraction": 0.05})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", "dirty") == 0
    run = tmp_path / "runs" / "dirty"
    counts = manifest(run)["stages"]["preprocess"]["counts"]
    assert counts["rows_read"] == GOOD_ROWS + len(bad) + 5
    assert counts["rows_invalid"] == len(bad) and counts["rows_valid"] == GOOD_ROWS + 5
    assert counts["rows_valid"] == counts["rows_train"] + counts["rows_eval"]
    assert counts["identity_out_of_range"] == 1
    rows = invalid_rows(run)
    assert len(rows) == len(bad) and all(r["file"].endswith("dirty.csv") for r in rows)
    for row in rows:
        expected = "invalid UTF-8" if row["record"].startswith("base64:") else reasons[row["record"]]
        assert expected in row["reason"], (row, expected)
    readable = [line.decode() for line in bad if b"\xe9" not in line]
    assert sorted(r["record"] for r in rows if not r["record"].startswith("base64:")) == sorted(readable)
    written = sum(1 for _ in tf.data.TFRecordDataset(
        [str(p) for p in (run / "data").glob("*.tfrecord.gz")], compression_type="GZIP"))
    assert written == counts["rows_valid"]


def test_corrupt_tfrecord_becomes_an_invalid_row(tmp_path):
    frame = pd.read_csv(TAXI_SAMPLE).head(60)
    path = tmp_path / "trips.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in frame.to_dict("records"):
            feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode()]))
                       for k, v in record.items() if not pd.isna(v)}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    data = bytearray(path.read_bytes())
    cut = len(data) * 3 // 4
    data[cut + 20] ^= 0xFF  # flip a byte three quarters in
    path.write_bytes(bytes(data))
    features = {"payment_type": {"type": "vocabulary"}, "trip_miles": {"type": "numeric"}}
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(path), "format": "tfrecord",
                                                           "max_invalid_fraction": 0.5},
                          features=features, model={"embeddings": {}},
                          entities=[{"name": "payment", "key": "payment_type"}])
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", "r") == 0
    counts = manifest(tmp_path / "runs" / "r")["stages"]["preprocess"]["counts"]
    rows = invalid_rows(tmp_path / "runs" / "r")
    assert counts["rows_invalid"] == 1 and "corrupt TFRecord data at byte" in rows[0]["reason"]
    assert 30 < counts["rows_valid"] < 60


def test_invalid_fraction_threshold_fails_and_publishes_only_invalid(tmp_path, capsys):
    bad, _ = corrupted_csv(tmp_path / "dirty.csv")
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "dirty.csv")})
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "x") == 1
    err = capsys.readouterr().err
    assert f"{len(bad)} of {GOOD_ROWS + len(bad) + 5} rows invalid" in err and "max_invalid_fraction" in err
    assert "invalid" in err.split("see ")[-1]
    run = tmp_path / "runs" / "x"
    assert (run / "invalid").is_dir() and not (run / "data").exists() and not (run / "transform").exists()
    assert manifest(run)["stages"]["preprocess"]["status"] == "failed"
    assert not (tmp_path / "runs" / "LATEST").exists()


def test_empty_input_is_an_error(tmp_path, capsys):
    (tmp_path / "empty.csv").write_bytes(TAXI_SAMPLE.read_bytes().splitlines()[0] + b"\n")
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "empty.csv")})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs") == 1
    assert "the input has no rows" in capsys.readouterr().err
    (tmp_path / "blank.csv").write_bytes(b"")
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "blank.csv")})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs") == 2
    assert "needs a header row" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ kills

def small_config(directory: pathlib.Path, epochs: int = 25) -> pathlib.Path:
    return write_config(directory, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)},
                        model={"epochs": epochs, "early_stopping_patience": 0, "batch_size": 64})


def start_run(config: pathlib.Path, output: pathlib.Path, run_id: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config), "--output", str(output),
                             "--run-id", run_id], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kill_during(stage: str, config: pathlib.Path, output: pathlib.Path, run_id: str, ready) -> None:
    """Starts `embedpipe run` and SIGKILLs it once `stage` is running and `ready(run)` holds."""
    process = start_run(config, output, run_id)
    run = output / run_id
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            assert process.poll() is None, f"the run ended before {stage} could be interrupted"
            try:
                status = manifest(run)["stages"].get(stage, {}).get("status")
            except (FileNotFoundError, json.JSONDecodeError):
                status = None
            if status == "running" and ready(run):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
            time.sleep(0.02)
        pytest.fail(f"{stage} never started")
    finally:
        if process.poll() is None:
            process.kill()


def published_vectors(run: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
    return {entity.name: {k: np.asarray(v) for k, v in pd.read_parquet(entity)[["key", "embedding"]].values}
            for entity in sorted((run / "embeddings").iterdir())}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("reference")
    assert run_cli("run", small_config(directory), "--output", directory / "runs", "--run-id", "ref") == 0
    return directory / "runs" / "ref"


@pytest.mark.parametrize("stage, ready", [
    ("preprocess", lambda run: (run / ".staging" / "preprocess").exists()),
    ("train", lambda run: (run / ".staging" / "train" / "history.jsonl").exists()),
    ("embed", lambda run: (run / ".staging" / "embed").exists()),
])
def test_killed_run_publishes_nothing_and_resumes(tmp_path, reference_run, stage, ready):
    config = small_config(tmp_path)
    kill_during(stage, config, tmp_path / "runs", "k", ready)
    run = tmp_path / "runs" / "k"
    assert not (tmp_path / "runs" / "LATEST").exists()
    assert not (run / "embeddings").exists()
    assert manifest(run)["stages"][stage]["status"] == "running"
    if stage == "preprocess":
        assert not (run / "data").exists() and not (run / "transform").exists()
    if stage != "embed":
        assert not (run / "model").exists()
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "k") == 0
    assert (tmp_path / "runs" / "LATEST").read_text().strip() == "k"
    assert not (run / ".staging").exists()
    vectors, expected = published_vectors(run), published_vectors(reference_run)
    assert {n: sorted(v) for n, v in vectors.items()} == {n: sorted(v) for n, v in expected.items()}
    for name in expected:   # a resumed training too: each epoch's data and draws depend on the epoch only
        for key in expected[name]:
            np.testing.assert_array_equal(vectors[name][key], expected[name][key])
    if stage == "train":    # the whole history, not only the epochs after the interruption
        metrics = json.loads((run / "metrics.json").read_text())
        reference = json.loads((reference_run / "metrics.json").read_text())
        assert metrics["epochs_run"] == reference["epochs_run"] == 25
        assert metrics["history"] == reference["history"]
        assert not [p for p in (run / "model" / "export").rglob("*") if ".tmp" in p.name]


def test_complete_run_is_not_overwritten_without_the_flag(tmp_path, reference_run, capsys):
    output = reference_run.parent
    config = small_config(reference_run.parent.parent)
    before = manifest(reference_run)["stages"]["embed"]["started_at"]
    assert run_cli("run", config, "--output", output, "--run-id", "ref") == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert manifest(reference_run)["stages"]["embed"]["started_at"] == before
    other = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)}, model={"epochs": 1})
    assert run_cli("run", other, "--output", output, "--run-id", "ref") == 2
    assert "different config" in capsys.readouterr().err
