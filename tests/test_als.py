"""Alternating least squares (`model.solver: als`): the solve against numbers worked out by hand,
its optimum against the shrunk SVD, the config's choice of solver, and a real run."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml

from tests.conftest import run_cli
from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import ConfigError, UsageError
from pipelines.core.rundir import RunDir
from trainer.als import has_pairs, history_matrix, keep_unseen, objective, solve_side
from trainer.interactions import Interactions
from trainer.train import train_run


def sparse(matrix: np.ndarray) -> tf.sparse.SparseTensor:
    return tf.sparse.from_dense(tf.constant(matrix, tf.float32))


def test_one_side_is_solved_by_hand():
    # X = [[1, 0], [1, 1]], V = [[1], [2]], l2 = 1: V^T V + l2 = 1 + 4 + 1 = 6, X V = [[1], [3]].
    query = solve_side(sparse(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])), tf.constant([[1.0], [2.0]]), 1.0)
    np.testing.assert_allclose(query.numpy(), [[1 / 6], [3 / 6], [0.0]], rtol=1e-6)   # no pairs: a zero row


def test_an_id_without_training_pairs_keeps_its_row():
    # Row 1 has no pairs: a zero row would tie every score at 0 (a cold user ranked first everywhere).
    pairs = sparse(np.array([[1.0, 0.0], [0.0, 0.0]]))
    kept = keep_unseen(tf.constant([[5.0], [0.0]]), tf.constant([[1.0], [2.0]]), has_pairs(pairs))
    np.testing.assert_array_equal(kept.numpy(), [[5.0], [2.0]])


def test_objective_is_the_dense_sum_over_all_pairs():
    rng = np.random.default_rng(0)
    x = (rng.random((6, 5)) < 0.4).astype(np.float32)
    u, v = rng.normal(size=(6, 2)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    dense = (np.sum((x - u @ v.T) ** 2) + 0.3 * (np.sum(u ** 2) + np.sum(v ** 2))) / x.sum()
    np.testing.assert_allclose(objective(sparse(x), tf.constant(u), tf.constant(v), 0.3).numpy(), dense, rtol=1e-5)


def test_sweeps_reach_the_shrunk_svd_and_never_raise_the_objective():
    rng = np.random.default_rng(1)
    x = (rng.random((30, 20)) < 0.3).astype(np.float32)
    l2, dim = 0.5, 3
    pairs, transposed = sparse(x), sparse(x.T)
    candidate = tf.constant(rng.normal(0, 0.3, (20, dim)), tf.float32)
    losses = []
    for _ in range(300):
        query = solve_side(pairs, candidate, l2)
        candidate = solve_side(transposed, query, l2)
        losses.append(float(objective(pairs, query, candidate, l2)))
    assert all(later <= earlier + 1e-5 for earlier, later in zip(losses, losses[1:]))
    # The optimum of ||X - U V^T||^2 + l2 (||U||^2 + ||V||^2) at rank 3: X's top 3 singular values, each less l2.
    left, values, right = np.linalg.svd(x.astype(np.float64))
    best = (left[:, :dim] * np.maximum(values[:dim] - l2, 0)) @ right[:dim]
    np.testing.assert_allclose(query.numpy() @ candidate.numpy().T, best, atol=2e-3)


def model_of(**model) -> dict:
    config = {"name": "m", "input": {"path": "x.csv", "format": "csv"},
              "features": {"user": {"type": "vocabulary"}, "item": {"type": "vocabulary"},
                           "t": {"type": "numeric", "normalize": "none"}},
              "model": {"kind": "two_tower", "query": ["user"], "candidate": ["item"], **model},
              "entities": [{"name": "user", "key": "user"}]}
    return config


@pytest.mark.parametrize("model, solver", [
    ({}, "als"),                                               # a plain factorisation, nothing else named
    ({"solver": "gradient"}, "gradient"),
    ({"temperature": 0.5}, "gradient"),                        # a gradient setting asks for gradient training
    ({"hidden_units": [32]}, "gradient"),
    ({"query_history": 20, "history_order": "t"}, "als"),          # an ordered history: solved from it
    ({"query_history": 20}, "gradient"),                                # a sample without an order
    ({"query_history": 20, "history_order": "t", "query_encoder": "attention"}, "gradient"),
    ({"solver": "als", "als_l2": 3}, "als"),
    ({"batch_size": None}, "als"),                             # null is unset, as everywhere in the config
    ({"embeddings": {"user": 32}}, "gradient"),                # an id of its own dimension needs a projection
    ({"embeddings": {"t": 8}}, "als"),                         # a feature outside the towers does not matter
])
def test_auto_solver_is_als_for_a_plain_factorisation(model, solver):
    parsed = config_from_dict(model_of(**model)).model
    assert parsed.solver == solver
    if solver == "als":   # sweeps converge slowly and one sweep's HR is noisy: a fixed number, no early stopping
        assert (parsed.epochs, parsed.early_stopping_patience) == (40, 0)


@pytest.mark.parametrize("model, message", [
    ({"solver": "als", "query_history": 20}, "model.solver: als solves .* query_history needs a model.history_order"),
    ({"solver": "als", "hidden_units": [8]}, "model.solver: als factorises the query x candidate matrix"),
    ({"solver": "als", "learning_rate": 0.1}, "model.solver: als does not read learning_rate"),
    ({"solver": "als", "als_l2": 0}, "model.als_l2: must be a positive number"),
    ({"solver": "newton"}, "model.solver: 'newton' is not one of auto, gradient, als"),
    ({"als_l2": 3, "temperature": 0.5}, "model.als_l2: only for solver als, and this model trains by gradient "
                                        r"\(it names temperature\)"),
    ({"kind": "supervised", "label": "y", "solver": "gradient"}, "model.solver: only two_tower models choose"),
])
def test_als_misconfigured_gets_one_line(model, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(model_of(**model))


@pytest.mark.parametrize("model, decay", [
    ({"query_history": 20, "history_order": "t"}, 0.9),            # ordered: newer items weigh more
    ({"query_history": 20, "history_order": "t", "history_decay": 1}, 1.0),
    ({"query_history": 20}, 1.0),                                   # no order, no ages
    ({"query_history": 20, "history_order": "t", "query_encoder": "attention"}, 1.0),   # positions are learned
])
def test_history_decay_defaults_to_recency_only_with_an_order(model, decay):
    assert config_from_dict(model_of(**model)).model.history_decay == decay


@pytest.mark.parametrize("model, message", [
    ({"query_history": 20, "history_decay": 0.5}, "model.history_decay: weighs a two-tower mean encoder's history items by age"),
    ({"query_history": 20, "history_order": "t", "query_encoder": "attention", "history_decay": 0.5},
     "needs model.history_order and query_encoder: mean"),
    ({"query_history": 20, "history_order": "t", "history_decay": 0}, r"model.history_decay: must be in \(0, 1\]"),
    ({"kind": "supervised", "label": "y", "history_decay": 0.5}, "needs model.history_order and query_encoder: mean"),
    ({"query_history": 20, "history_order": "t", "history_decay": 1.5}, r"model.history_decay: must be in \(0, 1\]"),
])
def test_history_decay_misconfigured_gets_one_line(model, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(model_of(**model))


def test_history_matrix_weighs_the_latest_items_by_age():
    # Query 0 saw items 3, 1, 2 (in that order), query 1 item 0; the history keeps the latest two.
    interactions = Interactions(seen={0: {1, 2, 3}, 1: {0}}, counts=np.ones(4), features={},
                                last_seen={(0, 3): 10.0, (0, 1): 20.0, (0, 2): 30.0, (1, 0): 5.0})
    history = tf.sparse.to_dense(history_matrix(interactions, 3, 4, length=2, decay=0.5)).numpy()
    np.testing.assert_allclose(history, [[0, 0.5, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


@pytest.fixture(scope="module")
def ratings(tmp_path_factory) -> pathlib.Path:
    """The first 300 users of MovieLens (a 60-user holdout moves HR@10 by 0.017 a user)."""
    from pipelines.tools.datasets import movielens
    frame = movielens()
    path = tmp_path_factory.mktemp("als-data") / "ratings.csv"
    frame[frame.userId <= 300].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def als_run(tmp_path_factory, ratings):
    """`embedpipe run` of the config that names only its features."""
    directory = tmp_path_factory.mktemp("als")
    config = {"name": "minimal", "input": {"path": str(ratings), "format": "csv"},
              "split": {"column": "is_last"},
              "features": {"userId": {"type": "vocabulary"}, "movieId": {"type": "vocabulary"}},
              "model": {"kind": "two_tower", "query": ["userId"], "candidate": ["movieId"]},
              "entities": [{"name": "user", "key": "userId"}, {"name": "movie", "key": "movieId"}]}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    assert run_cli("run", directory / "config.yaml", "--output", directory / "runs", "--run-id", "a1") == 0
    return directory / "runs" / "a1"


def test_a_plain_factorisation_is_fitted_by_als_and_published(als_run, ratings):
    metrics = json.loads((als_run / "metrics.json").read_text())
    assert metrics["solver"] == "als" and metrics["epochs_run"] == 40 and metrics["best_epoch"] is None
    losses = metrics["history"]["loss"]
    assert all(later <= earlier + 1e-4 for earlier, later in zip(losses, losses[1:]))   # each sweep an exact solve
    assert len(metrics["history"]["val_hr@10"]) == 40 and "val_loss" not in metrics["history"]
    assert metrics["hr@10"] > metrics["baseline_popularity_hr@10"]
    # The published vectors rank as the run's own evaluation did: dot products of the Parquet rows.
    users = pd.read_parquet(als_run / "embeddings" / "user").set_index("key")
    movies = pd.read_parquet(als_run / "embeddings" / "movie").set_index("key")
    frame = pd.read_csv(ratings)
    train, held_out = frame[frame.is_last == 0], frame[frame.is_last == 1]
    trained = movies[movies["count"] > 0]
    vectors = np.stack(trained.embedding.to_numpy())
    hits = 0
    for user, movie in zip(held_out.userId.astype(str), held_out.movieId.astype(str)):
        scores = pd.Series(vectors @ users.embedding[user], index=trained.index)
        scores = scores.drop(train.movieId[train.userId == int(user)].astype(str).unique())
        hits += int(movie in scores.nlargest(10).index)
    assert hits / len(held_out) == pytest.approx(metrics["hr@10"], abs=1e-9)


@pytest.mark.parametrize("task", ["worker", "ps"])
def test_als_refuses_a_training_cluster_before_any_task_serves(als_run, monkeypatch, task):
    cluster = {"chief": ["localhost:1"], "worker": ["localhost:2"], "ps": ["localhost:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task, "index": 0}}))
    with pytest.raises(UsageError, match="model.solver als trains in one process, and TF_CONFIG names a "
                                         "parameter_server cluster"):
        train_run(RunDir(str(als_run)))


def test_a_frozen_warm_started_table_stays_and_the_other_is_solved_for_it(als_run, ratings, tmp_path):
    config = json.loads((als_run / "manifest.json").read_text())["config"]
    config["model"]["epochs"] = 2
    config["warm_start"] = {"from": str(als_run), "freeze": ["movieId"]}
    (tmp_path / "warm.yaml").write_text(yaml.safe_dump(config))
    assert run_cli("run", tmp_path / "warm.yaml", "--output", tmp_path / "runs", "--run-id", "w1") == 0
    before = pd.read_parquet(als_run / "embeddings" / "movie").set_index("key")
    after = pd.read_parquet(tmp_path / "runs" / "w1" / "embeddings" / "movie").set_index("key")
    movies = np.stack(after.embedding.to_numpy())
    np.testing.assert_array_equal(movies, np.stack(before.embedding[after.index].to_numpy()))
    # Each user's vector is the least-squares fit to the frozen movies: (V^T V + l2 I)^-1 V^T x_u.
    users = pd.read_parquet(tmp_path / "runs" / "w1" / "embeddings" / "user").set_index("key")
    train = pd.read_csv(ratings).query("is_last == 0")
    row = {key: i for i, key in enumerate(after.index)}
    gram = movies.T.astype(np.float64) @ movies + 5.0 * np.eye(movies.shape[1])
    for user in ("1", "150", "300"):
        seen = [row[m] for m in train.movieId[train.userId == int(user)].astype(str).unique()]
        expected = np.linalg.solve(gram, movies[seen].sum(axis=0))
        np.testing.assert_allclose(users.embedding[user], expected, rtol=1e-3, atol=1e-4)


def test_an_ordered_history_gives_each_user_the_solve_of_its_latest_items(ratings, tmp_path):
    # Distinct times (each user's rank by time, then movie) make every history item's age exact.
    frame = pd.read_csv(ratings).sort_values(["userId", "timestamp", "movieId"], kind="stable")
    frame["timestamp"] = frame.groupby("userId").cumcount()
    frame.to_csv(tmp_path / "ordered.csv", index=False)
    config = {"name": "history", "input": {"path": str(tmp_path / "ordered.csv"), "format": "csv"},
              "split": {"column": "is_last"},
              "features": {"userId": {"type": "vocabulary"}, "movieId": {"type": "vocabulary"},
                           "timestamp": {"type": "numeric", "normalize": "none"}},
              "model": {"kind": "two_tower", "query": ["userId"], "candidate": ["movieId"], "query_history": 5,
                        "history_order": "timestamp", "epochs": 3},
              "entities": [{"name": "user", "key": "userId"}, {"name": "movie", "key": "movieId"}]}
    (tmp_path / "history.yaml").write_text(yaml.safe_dump(config))
    assert run_cli("run", tmp_path / "history.yaml", "--output", tmp_path / "runs", "--run-id", "h1") == 0
    run = tmp_path / "runs" / "h1"
    assert json.loads((run / "metrics.json").read_text())["solver"] == "als"
    movies = pd.read_parquet(run / "embeddings" / "movie").set_index("key")
    movies = movies[movies["count"] > 0]           # a movie without training pairs is in no sum
    vectors = np.stack(movies.embedding.to_numpy()).astype(np.float64)
    gram = vectors.T @ vectors + 5.0 * np.eye(vectors.shape[1])
    users = pd.read_parquet(run / "embeddings" / "user").set_index("key")
    train = frame[frame.is_last == 0]
    row = {key: i for i, key in enumerate(movies.index)}
    for user in ("1", "150", "300"):
        latest = train[train.userId == int(user)].movieId.astype(str).to_numpy()[-5:]    # oldest first
        weighted = sum(0.9 ** age * vectors[row[movie]] for age, movie in enumerate(latest[::-1]))
        np.testing.assert_allclose(users.embedding[user], np.linalg.solve(gram, weighted), rtol=1e-3, atol=1e-4)
