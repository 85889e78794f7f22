"""Skip-gram: exact pairs, the negative-sampling distribution, and what training learns."""
from __future__ import annotations

import json

import numpy as np
import pytest
import pandas as pd
import tensorflow as tf

from pipelines.config import ModelConfig
from pipelines.neighbors import load_entity
from pipelines.rundir import RunDir
from pipelines.word_eval import word_similarity
from tests.conftest import run_cli, write_config
from trainer.inputs import FeatureInput
from trainer.skipgram import SkipGramModel, document_pairs, keep_probabilities


def test_pairs_of_a_tiny_document_are_exact():
    targets, contexts = document_pairs(tf.constant([1, 2, 3, 4], tf.int64), keep=None, window=2, dynamic=False)
    pairs = sorted(zip(targets.numpy().tolist(), contexts.numpy().tolist()))
    assert pairs == sorted([(1, 2), (1, 3), (2, 1), (2, 3), (2, 4), (3, 1), (3, 2), (3, 4), (4, 2), (4, 3)])
    targets, _ = document_pairs(tf.constant([7], tf.int64), keep=None, window=3, dynamic=False)
    assert targets.shape == (0,)


def test_subsampling_keeps_rare_words_and_thins_frequent_ones():
    keep = keep_probabilities(np.array([1_000_000, 1000, 10]), subsample=1e-3)
    assert keep[2] == 1.0 and keep[1] == 1.0 and keep[0] < 0.05


def test_negatives_follow_unigram_to_the_three_quarters():
    counts = np.array([1000, 100, 10, 1])
    net = SkipGramModel(FeatureInput("words", "token_ids", 5, 4), counts,
                        ModelConfig(kind="skipgram", negatives=50, batch_size=2000))
    sampled, _, _ = tf.random.fixed_unigram_candidate_sampler(
        true_classes=tf.zeros([1, 1], tf.int64), num_true=1, num_sampled=200_000, unique=False,
        range_max=len(net.unigrams), distortion=0.75, unigrams=net.unigrams, seed=1)
    observed = np.bincount(sampled.numpy(), minlength=4) / 200_000
    expected = counts ** 0.75 / np.sum(counts ** 0.75)
    np.testing.assert_allclose(observed, expected, atol=0.005)
    loss = net((tf.constant([0, 1] * 1000, tf.int64), tf.constant([1, 0] * 1000, tf.int64)))
    assert np.isfinite(float(loss)) and float(loss) > 0


def test_words_sharing_contexts_end_up_closer(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(1500):   # animals are fed and petted, vehicles are driven and parked
        animal, vehicle = rng.choice(["cat", "dog", "horse"]), rng.choice(["car", "truck", "bus"])
        lines.append(f"i {rng.choice(['fed', 'petted'])} the {animal} and then {rng.choice(['drove', 'parked'])} the {vehicle}")
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path, "words", input={"path": str(tmp_path / "corpus.txt")},
                          model={"embedding_dim": 16, "window": 2, "epochs": 4, "batch_size": 256,
                                 "learning_rate": 0.02, "subsample": 1.0})
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "w") == 0
    run = RunDir(str(tmp_path / "runs" / "w"))
    entity = load_entity(run, "word")
    vocabulary = set(pd.read_parquet(tmp_path / "runs" / "w" / "embeddings" / "word").key)
    assert vocabulary == {"i", "fed", "petted", "the", "cat", "dog", "horse", "and", "then", "drove", "parked",
                          "car", "truck", "bus"}
    unit = {k: v for k, v in zip(entity.keys, entity.unit_vectors)}
    same = np.mean([unit["cat"] @ unit["dog"], unit["car"] @ unit["truck"], unit["horse"] @ unit["cat"]])
    across = np.mean([unit["cat"] @ unit["car"], unit["dog"] @ unit["truck"], unit["horse"] @ unit["bus"]])
    assert same > across + 0.2, (same, across)
    pairs = [("cat", "dog", 9.0), ("car", "bus", 8.0), ("cat", "car", 1.0), ("dog", "truck", 0.5), ("x", "y", 3.0)]
    result = word_similarity(entity, pairs)
    assert result["pairs_evaluated"] == 4 and result["oov_share"] == pytest.approx(0.2) and result["spearman"] > 0.5
    metrics = json.loads((tmp_path / "runs" / "w" / "metrics.json").read_text())
    assert metrics["words_per_second"] > 0 and metrics["vocabulary"] == 14


def test_skipgram_warm_start_frozen(tmp_path):
    lines = [f"the {a} chased the {b}" for a in ("cat", "dog", "fox") for b in ("mouse", "hen", "rabbit")] * 40
    (tmp_path / "one.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "two.txt").write_text("\n".join(lines + ["the owl chased the mouse"] * 20) + "\n")
    settings = {"embedding_dim": 8, "window": 2, "epochs": 2, "batch_size": 64, "subsample": 1.0}
    first = write_config(tmp_path, "words", input={"path": str(tmp_path / "one.txt")}, model=settings)
    assert run_cli("run", first, "--output", tmp_path / "runs", "--run-id", "one") == 0
    (tmp_path / "c").mkdir()
    second = write_config(tmp_path / "c", "words", input={"path": str(tmp_path / "two.txt")}, model=settings)
    assert run_cli("run", second, "--output", tmp_path / "runs", "--run-id", "two",
                   "--warm-start", tmp_path / "runs" / "one", "--freeze", "words") == 0
    old = pd.read_parquet(tmp_path / "runs" / "one" / "embeddings" / "word").set_index("key")
    new = pd.read_parquet(tmp_path / "runs" / "two" / "embeddings" / "word").set_index("key")
    assert "owl" in new.index and "owl" not in old.index
    for word in old.index:
        np.testing.assert_array_equal(new.loc[word].embedding, old.loc[word].embedding)
