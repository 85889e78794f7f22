"""Every tool on a run directory that is not on the local disk: TensorFlow's in-process ram://
filesystem stands for gs:// or hdfs:// (the same layer routes them), with a real run copied in."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from pipelines.core import fs
from pipelines.core.config_parse import config_from_dict
from pipelines.core.rundir import RunDir, latest_id, list_runs
from pipelines.core.vectors import EntityVectors
from pipelines.core.warm_start import plan_warm_start
from pipelines.tools.align import Aligner
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def remote_output(taxi_run) -> str:
    """Two copies of the taxi run on ram://, the second named by LATEST."""
    output = f"ram://runs-{uuid.uuid4().hex}"
    for run_id in ("r1", "r2"):
        fs.copy_tree(str(taxi_run), fs.join(output, run_id))
    fs.write_text_atomic(fs.join(output, "LATEST"), "r2\n")
    return output


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def test_neighbors_index_and_exact_agree_remotely(remote_output, capsys):
    run = fs.join(remote_output, "LATEST")
    assert run_cli("neighbors", run, "--entity", "company", "--key", "Taxi Affiliation Services", "-k", "5",
                   "--exact") == 0
    exact = lines(capsys)
    assert exact[0].startswith("5 nearest to 'Taxi Affiliation Services' in company by cosine (exact)")
    assert len(exact) == 7
    assert run_cli("index", run, "--entity", "company") == 0
    assert "recall@10" in lines(capsys)[0]
    assert fs.exists(fs.join(remote_output, "r2", "index", "company", "index.usearch"))
    assert run_cli("neighbors", run, "--entity", "company", "--key", "Taxi Affiliation Services", "-k", "5") == 0
    indexed = lines(capsys)
    assert "(index)" in indexed[0]   # HNSW on 27 vectors finds the exact neighbours (ties may swap places)
    scores = [[float(line.split("\t")[1]) for line in found[2:]] for found in (indexed, exact)]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-4)


def test_cluster_projector_plot_remotely(remote_output, capsys):
    run = fs.join(remote_output, "r1")
    assert run_cli("cluster", run, "--entity", "day_hour", "--k", "4") == 0
    table = fs.read_parquet(fs.join(run, "clusters", "day_hour"))
    assert table.num_rows == len(EntityVectors.load(fs.join(run, "embeddings", "day_hour")).keys)
    assert run_cli("projector", run, "--entity", "company", "--sample", "10") == 0
    assert len(fs.read_text(fs.join(run, "projector", "company", "vectors.tsv")).splitlines()) == 10
    out = fs.join(remote_output, "pictures", "day_hour.png")
    assert run_cli("plot", run, "--entity", "day_hour", "--out", out) == 0
    assert fs.read_bytes(out)[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()


def test_compare_and_alignment_remotely(remote_output, capsys):
    first, second = RunDir(fs.join(remote_output, "r1")), RunDir(fs.join(remote_output, "r2"))
    assert run_cli("compare", first.path, second.path, "--entity", "day_hour") == 0
    report = json.loads(fs.read_text(second.compare_path("day_hour", "r1")))
    assert report["mean_cosine_aligned"] == pytest.approx(1.0, abs=1e-5) and report["neighbor_overlap@10"] == 1.0
    staged = RunDir(fs.join(remote_output, "staged"))
    fs.copy_tree(second.join("embeddings"), staged.join("embeddings"))
    facts = Aligner(first)(staged, {"day_hour": "day_hour", "payment": "payment"})
    assert facts["spaces"]["day_hour"]["aligned"] and facts["spaces"]["day_hour"]["mean_cosine_after"] > 0.9999
    capsys.readouterr()


def test_runs_listing_and_pruning_remotely(remote_output, capsys):
    output = f"ram://prune-{uuid.uuid4().hex}"
    for run_id in ("a1", "a2", "a3"):
        fs.copy_tree(fs.join(remote_output, "r1"), fs.join(output, run_id))
    fs.write_text_atomic(fs.join(output, "LATEST"), "a1\n")
    assert run_cli("runs", output, "--keep", "1") == 0
    shown = lines(capsys)
    assert shown[0] == "deleted a2" and shown[1].startswith("* a1  complete") and shown[2].startswith("  a3")
    assert [r.run_id for r in list_runs(output)] == ["a1", "a3"] and latest_id(output) == "a1"


def test_warm_start_from_a_remote_vector_file(remote_output, taxi_run):
    vectors = EntityVectors.load(fs.join(remote_output, "r1", "embeddings", "pickup_area"))
    path = fs.join(remote_output, "pickup_area.txt")
    vectors.save_word2vec(path)
    again = EntityVectors.load_word2vec(path)
    assert again.keys == vectors.keys and np.allclose(again.vectors, vectors.vectors, atol=1e-6)
    raw = json.loads((taxi_run / "manifest.json").read_text())["config"]
    config = config_from_dict({**raw, "warm_start": {"from": path, "features": ["pickup_area"]}})
    plan = plan_warm_start(config)
    assert not plan.is_run and [(p.feature, p.how) for p in plan.features] == [("pickup_area", "key")]
