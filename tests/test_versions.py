"""Retraining: warm start across vocabulary changes, frozen rows, alignment, drift reports, run lists."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from pipelines.core.config_parse import config_from_dict
from pipelines.core.rundir import RunDir, list_runs
from pipelines.core.vectors import procrustes
from pipelines.core.warm_start import plan_warm_start
from pipelines.tools.align import Aligner
from pipelines.tools.drift import compare_runs
from pipelines.tools.runs import prune_runs
from tests.conftest import run_cli, write_genres_config
from tests.test_explore import publish
from tests.test_report import read_page
from trainer.train import Trainer, embedding_layers
from trainer.warm_start import SourceTable, apply_warm_start, copy_rows


def test_copy_rows_by_key_and_by_bucket():
    source = SourceTable(np.array([[1.0, 1], [2, 2], [3, 3]]), ["a", "b", "c"])
    target = np.zeros((4, 2))   # rows: c, a, d, OOV
    table, copied = copy_rows(target, ["c", "a", "d"], source)
    np.testing.assert_array_equal(table, [[3, 3], [1, 1], [0, 0], [0, 0]])
    assert copied == 2
    buckets = SourceTable(np.arange(6.0).reshape(3, 2), None)
    np.testing.assert_array_equal(copy_rows(np.zeros((3, 2)), None, buckets)[0], buckets.table)
    with pytest.raises(ValueError, match="3 source buckets, 4 here"):
        copy_rows(np.zeros((4, 2)), None, buckets)
    with pytest.raises(ValueError, match="dimension 2 of the source differs from 3"):
        copy_rows(np.zeros((4, 3)), ["a"], source)


def test_procrustes_recovers_a_rotation_and_alignment_rotates_published_vectors(tmp_path):
    rng = np.random.default_rng(0)
    old = rng.normal(size=(200, 8))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    np.testing.assert_allclose(procrustes(old @ rotation, old), rotation.T, atol=1e-5)
    keys = [f"k{i}" for i in range(200)]
    previous = publish(tmp_path / "old", "thing", keys, old)
    staged = publish(tmp_path / "new", "thing", keys[50:] + ["fresh"], np.vstack([old[50:] @ rotation, np.ones((1, 8))]))
    report = Aligner(previous)(staged, {"thing": "thing"})["spaces"]
    assert report["thing"]["shared_keys"] == 150 and report["thing"]["mean_cosine_after"] > 0.9999
    aligned = pd.read_parquet(staged.join("embeddings", "thing")).set_index("key")
    np.testing.assert_allclose(np.stack(aligned.loc[keys[60:70]].embedding), old[60:70], atol=1e-4)


def test_compare_identical_runs(tmp_path, capsys):
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(300, 16))
    keys = [f"k{i}" for i in range(300)]
    first, second = publish(tmp_path / "a" / "r1", "thing", keys, vectors), publish(tmp_path / "a" / "r2", "thing", keys, vectors)
    report = compare_runs(first, second, "thing")
    assert report["neighbor_overlap@10"] == 1.0 and report["mean_cosine_aligned"] == pytest.approx(1.0)
    assert report["added_keys"] == report["removed_keys"] == 0 and report["shared_keys"] == 300
    assert json.loads(pathlib.Path(report["path"]).read_text())["shared_keys"] == 300
    third = publish(tmp_path / "a" / "r3", "thing", keys[:200] + ["x", "y"], rng.normal(size=(202, 16)))
    report = compare_runs(first, third, "thing")
    assert (report["added_keys"], report["removed_keys"], report["shared_keys"]) == (2, 100, 200)
    assert report["neighbor_overlap@10"] < 0.5
    assert run_cli("compare", first.path, second.path, "--entity", "thing") == 0
    assert "neighbor_overlap@10" in capsys.readouterr().out


def test_runs_listing_and_pruning(tmp_path, capsys):
    for run_id in ("20260101T000000Z", "20260102T000000Z", "20260103T000000Z"):
        RunDir(str(tmp_path / run_id)).create("x", {"name": "x"})
    (tmp_path / "LATEST").write_text("20260101T000000Z\n")
    assert run_cli("runs", tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("* 20260101T000000Z") and "preprocess: not run" in lines[0]
    assert prune_runs(str(tmp_path), keep=1) == (["20260102T000000Z"], [])
    assert [r.run_id for r in list_runs(str(tmp_path))] == ["20260101T000000Z", "20260103T000000Z"]


def shifted_sample(sample: pathlib.Path, path: pathlib.Path) -> pd.DataFrame:
    """The next run's data: some users and movies leave, new ones arrive, frequencies reorder."""
    frame = pd.read_csv(sample)
    frame = frame[(frame.userId > 10) & (frame.movieId % 7 != 0)]
    extra = frame[frame.userId <= 20].copy()
    extra["userId"] += 1000                       # new users
    popular = frame.movieId.value_counts().index[:3]
    boost = frame[frame.movieId.isin(popular[::-1])].copy()
    boost["userId"] = 2000                          # reorders movie frequencies
    fresh = frame.head(60).assign(movieId=frame.head(60).movieId + 10_000_000)   # new movies
    result = pd.concat([frame, extra, fresh, boost, boost.assign(userId=2001)])
    result.to_csv(path, index=False)
    return result


def table_by_key(run: pathlib.Path, feature: str, keys: list[str] | None = None) -> dict[str, np.ndarray]:
    table = tf.saved_model.load(str(run / "model" / "export")).embedding_tables[feature].numpy()
    vocabulary = [v.decode() for v in tft.TFTransformOutput(str(run / "transform")).vocabulary_by_name(feature)]
    return {key: table[row] for row, key in enumerate(vocabulary)}


def test_warm_start_across_vocabulary_changes(tmp_path, movielens_run, movielens_sample):
    old_movies = table_by_key(movielens_run, "movieId")
    old_users = table_by_key(movielens_run, "userId")
    shifted_sample(movielens_sample, tmp_path / "next.csv")
    config = write_genres_config(tmp_path, tmp_path / "next.csv", model={"epochs": 2, "embedding_dim": 16})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", "next") == 0
    run = tmp_path / "runs" / "next"
    new_movies = [v.decode() for v in tft.TFTransformOutput(str(run / "transform")).vocabulary_by_name("movieId")]
    shared = [k for k in new_movies if k in old_movies]
    assert 0 < len(shared) < len(new_movies) and len(shared) < len(old_movies)   # keys both added and removed
    # before training: shared rows are the old rows, wherever they moved to; new rows are untouched
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["warm_start"] = {"from": str(movielens_run)}
    (run / "manifest.json").write_text(json.dumps(manifest))
    trainer = Trainer(RunDir(str(run)), job_dir=str(tmp_path / "job"))
    net, _ = trainer.build()
    before = embedding_layers(net)["movieId"].embeddings.numpy()
    warm_config = config_from_dict(manifest["config"])
    report = apply_warm_start(warm_config, plan_warm_start(warm_config), embedding_layers(net), trainer.tft_output)
    after = embedding_layers(net)["movieId"].embeddings.numpy()
    assert report["movieId"]["rows_copied"] == len(shared)
    for row, key in enumerate(new_movies):
        np.testing.assert_array_equal(after[row], old_movies[key] if key in old_movies else before[row])
    moved = [k for k in shared if new_movies.index(k) != list(old_movies).index(k)]
    assert moved, "the vocabulary order should have changed"
    # pre-trained vectors in word2vec text format
    lines = ["2 16", "1 " + " ".join(["0.5"] * 16), "nope " + " ".join(["1"] * 16)]
    (tmp_path / "vectors.txt").write_text("\n".join(lines) + "\n")
    from_file = config_from_dict({**manifest["config"], "warm_start": {"from": str(tmp_path / "vectors.txt"),
                                                                        "features": ["movieId"]}})
    assert apply_warm_start(from_file, plan_warm_start(from_file), embedding_layers(net),
                            trainer.tft_output)["movieId"]["rows_copied"] == 1
    np.testing.assert_array_equal(embedding_layers(net)["movieId"].embeddings.numpy()[new_movies.index("1")],
                                  np.full(16, 0.5, np.float32))
    # frozen through training: bit-identical rows for every shared movie; users fine-tuned
    assert run_cli("run", config, "--output", tmp_path / "runs2", "--run-id", "frozen", "--warm-start",
                   str(movielens_run), "--freeze", "movieId") == 0
    frozen = tmp_path / "runs2" / "frozen"
    trained_movies, trained_users = table_by_key(frozen, "movieId"), table_by_key(frozen, "userId")
    assert all(np.array_equal(trained_movies[k], old_movies[k]) for k in shared)
    users_shared = [k for k in trained_users if k in old_users]
    assert users_shared and not all(np.array_equal(trained_users[k], old_users[k]) for k in users_shared)
    metrics = json.loads((frozen / "metrics.json").read_text())
    assert metrics["warm_start"]["features"]["movieId"]["frozen"] is True
    # the next scheduled run, aligned onto the previous one (LATEST)
    aligned_config = write_genres_config(tmp_path, tmp_path / "next.csv", model={"epochs": 1, "embedding_dim": 16},
                                         align_to="previous")
    assert run_cli("run", aligned_config, "--output", tmp_path / "runs2", "--run-id", "aligned") == 0
    aligned = json.loads((tmp_path / "runs2" / "aligned" / "manifest.json").read_text())["stages"]["embed"]["aligned_to"]
    assert aligned["run"].endswith("frozen") and aligned["spaces"]["towers"]["aligned"]
    assert aligned["spaces"]["towers"]["entities"] == ["user", "movie"]
    drift = compare_runs(RunDir(str(frozen)), RunDir(str(tmp_path / "runs2" / "aligned")), "movie")
    assert drift["shared_keys"] == len(new_movies) and drift["mean_cosine_aligned"] > 0
    # their run reports: the warm start with rows copied; drift against the run aligned to, as compare says
    warm_page = " ".join(read_page(frozen / "report.html").text)
    assert str(movielens_run) in warm_page and "frozen: movieId" in warm_page and "rows copied" in warm_page
    page = read_page(tmp_path / "runs2" / "aligned" / "report.html")
    assert "the run this one was aligned to" in " ".join(page.text)
    for field in ("shared_keys", "added_keys", "removed_keys", "mean_cosine_aligned", "neighbor_overlap@10"):
        assert page.value(f"drift:movie:{field}") == drift[field], field
