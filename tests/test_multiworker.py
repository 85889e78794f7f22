"""Multi-worker training: two local processes with TF_CONFIG on loopback (MultiWorkerMirroredStrategy)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

from tests.conftest import ROOT, TAXI_SAMPLE, run_cli, write_config

EPOCHS = 8


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
