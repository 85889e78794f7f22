"""Multi-worker training: two local processes with TF_CONFIG on loopback (MultiWorkerMirroredStrategy)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import yaml

from tests.conftest import ROOT, TAXI_SAMPLE, run_cli, write_config

EPOCHS = 8
TWO_TOWER_EPOCHS = 4


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("localhost", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def start_task(run_dir, cluster: dict | None, task_type: str = "worker", index: int = 0) -> subprocess.Popen:
    """`python -m trainer.task --run-dir RUN` as a cloud job starts it on one machine of `cluster`."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if cluster:
        environment["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
    return subprocess.Popen([sys.executable, "-m", "trainer.task", "--run-dir", str(run_dir)], env=environment,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    output, _ = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def train_in_processes(run_dir, workers: int) -> list[subprocess.CompletedProcess]:
    """One trainer process per worker (MultiWorkerMirroredStrategy when more than one)."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(workers)]} if workers > 1 else None
    return [finished(p) for p in [start_task(run_dir, cluster, "worker", index) for index in range(workers)]]


def preprocess_taxi_sample(tmp_path, run_id: str) -> None:
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)},
                          model={"epochs": EPOCHS, "early_stopping_patience": 0})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", run_id) == 0


def test_two_workers_train_as_well_as_one(tmp_path):
    preprocess_taxi_sample(tmp_path, "one")
    shutil.copytree(tmp_path / "runs" / "one", tmp_path / "runs" / "two")

    single = train_in_processes(tmp_path / "runs" / "one", 1)
    assert single[0].returncode == 0, single[0].stdout[-3000:]
    pair = train_in_processes(tmp_path / "runs" / "two", 2)
    for result in pair:
        assert result.returncode == 0, result.stdout[-3000:]

    one = json.loads((tmp_path / "runs" / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "runs" / "two" / "metrics.json").read_text())
    assert one["workers"] == 1 and two["workers"] == 2 and two["epochs_run"] == EPOCHS
    assert (one["strategy"], two["strategy"]) == ("default", "multi_worker_mirrored")
    # Same global batch, same epochs: the two-worker model is as good as the one-worker model.
    assert two["rmse"] < 1.1 * one["rmse"], (one["rmse"], two["rmse"])
    assert two["rmse"] < 0.7 * two["baseline_mean_rmse"]
    # The chief published the model and recorded the stage; nothing of the worker is left in the run.
    manifest = json.loads((tmp_path / "runs" / "two" / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "succeeded"
    assert (tmp_path / "runs" / "two" / "model" / "export" / "saved_model.pb").exists()
    assert not (tmp_path / "runs" / "two" / ".staging").exists()
    assert not [path for path in (tmp_path / "runs" / "two").rglob("*") if "workertemp" in path.name]


def test_two_workers_train_a_two_tower_model_as_well_as_one(tmp_path, movielens_sample):
    config = {"name": "ml", "input": {"path": str(movielens_sample), "format": "csv"}, "split": {"column": "is_last"},
              "features": {"userId": {"type": "vocabulary"}, "movieId": {"type": "vocabulary"}},
              "model": {"kind": "two_tower", "query": ["userId"], "candidate": ["movieId"], "batch_size": 256,
                        "epochs": TWO_TOWER_EPOCHS, "early_stopping_patience": 0},
              "entities": [{"name": "user", "key": "userId"}, {"name": "movie", "key": "movieId"}]}
    (tmp_path / "ml.yaml").write_text(yaml.safe_dump(config))
    assert run_cli("preprocess", tmp_path / "ml.yaml", "--output", tmp_path / "runs", "--run-id", "one") == 0
    shutil.copytree(tmp_path / "runs" / "one", tmp_path / "runs" / "two")

    for run, workers in (("one", 1), ("two", 2)):
        for result in train_in_processes(tmp_path / "runs" / run, workers):
            assert result.returncode == 0, result.stdout[-3000:]
    one = json.loads((tmp_path / "runs" / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "runs" / "two" / "metrics.json").read_text())
    assert (one["workers"], two["workers"], two["epochs_run"]) == (1, 2, TWO_TOWER_EPOCHS)
    # Each worker's queries are scored against both workers' candidates: the same global batch of
    # negatives, so the same training as one worker up to the order of floating-point sums.
    np.testing.assert_allclose(two["history"]["loss"], one["history"]["loss"], rtol=1e-3)
    assert two["history"]["loss"][-1] < 0.8 * two["history"]["loss"][0]
    np.testing.assert_allclose(two["history"]["val_hr@10"], one["history"]["val_hr@10"], atol=1 / 60 + 1e-6)
    assert abs(two["hr@10"] - one["hr@10"]) <= 1 / two["eval_examples"] + 1e-9, (one["hr@10"], two["hr@10"])


def test_parameter_server_training_shards_tables_and_publishes(tmp_path):
    preprocess_taxi_sample(tmp_path, "ps")
    chief, worker, ps = (f"localhost:{port}" for port in free_ports(3))
    cluster = {"chief": [chief], "worker": [worker], "ps": [ps]}
    servers = [start_task(tmp_path / "runs" / "ps", cluster, kind) for kind in ("worker", "ps")]
    try:
        result = finished(start_task(tmp_path / "runs" / "ps", cluster, "chief"))
    finally:
        for server in servers:   # workers and parameter servers serve until the job ends
            server.kill()
            server.communicate()
    assert result.returncode == 0, result.stdout[-3000:]
    metrics = json.loads((tmp_path / "runs" / "ps" / "metrics.json").read_text())
    assert metrics["strategy"] == "parameter_server" and metrics["epochs_run"] == EPOCHS
    assert metrics["rmse"] < 0.7 * metrics["baseline_mean_rmse"], metrics
    assert (tmp_path / "runs" / "ps" / "model" / "export" / "saved_model.pb").exists()
