"""Skip-gram: exact pairs, the negative-sampling distribution, and what training learns."""
from __future__ import annotations

import json

import numpy as np
import pytest
import pandas as pd
import tensorflow as tf

from pipelines.core.config import ModelConfig
from pipelines.core.rundir import RunDir
from pipelines.tools.neighbors import load_entity
from pipelines.tools.word_eval import word_similarity
from tests.conftest import run_cli, write_config
from trainer.inputs import FeatureInput
from trainer.skipgram import SkipGramModel, keep_probabilities, token_batches, unigram_sampler, window_pairs


def pairs_of(documents: list[int], spans: list[int], block: int) -> set[tuple[int, int]]:
    """(target position, context position) pairs that window_pairs marks."""
    mask, contexts = window_pairs(tf.constant(documents, tf.int64), tf.constant(spans, tf.int32), block)
    blocks, targets, columns = np.nonzero(mask.numpy())
    return {(int(b * block + t), int(contexts.numpy()[b, 0, c])) for b, t, c in zip(blocks, targets, columns)}


def test_window_pairs_are_exact_within_documents_and_spans():
    # positions 0-4 one document, 5-6 another, 7 padding; every span 2 except position 2 (span 1)
    documents = [0, 0, 0, 0, 0, 1, 1, -1]
    spans = [2, 2, 1, 2, 2, 2, 2, 0]
    expected = {(0, 1), (0, 2), (1, 0), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2), (3, 4), (4, 2), (4, 3),
                (5, 6), (6, 5)}
    for block in (2, 4, 8):   # pairs across block edges are found, none wrap around
        assert pairs_of(documents, spans, block) == expected
    assert pairs_of([3], [5], 1) == set()


def test_token_batches_drop_oov_and_cut_documents_into_full_batches():
    words = tf.SparseTensor([[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1]], tf.constant([1, 9, 2, 3, 4, 0], tf.int64), [2, 4])
    documents = tf.data.Dataset.from_tensors({"words": words})
    keep = np.ones(5, np.float32)   # vocabulary 0..4, 9 is an OOV bucket
    batches = list(token_batches(documents, "words", 5, keep, batch_size=3).as_numpy_iterator())
    tokens = np.concatenate([b["tokens"] for b in batches])
    np.testing.assert_array_equal(tokens, [1, 2, 3, 4, 0])
    assert [len(b["tokens"]) for b in batches] == [3, 2]
    documents_of = np.concatenate([b["documents"] for b in batches])
    assert len(set(documents_of[:3])) == 1 and len(set(documents_of[3:])) == 1 and documents_of[0] != documents_of[3]
    repeated = token_batches(documents, "words", 5, keep, batch_size=3, repeat=True).take(5)
    assert all(len(b["tokens"]) == 3 for b in repeated.as_numpy_iterator())


def test_subsampling_keeps_rare_words_and_thins_frequent_ones():
    keep = keep_probabilities(np.array([1_000_000, 1000, 10]), subsample=1e-3)
    assert keep[2] == 1.0 and keep[1] == 1.0 and keep[0] < 0.05


def test_negatives_follow_unigram_to_the_three_quarters():
    counts = np.array([1000, 100, 10, 1, 0])
    sampled = unigram_sampler(counts)(tf.constant([400, 500]), tf.constant([1, 2], tf.int64)).numpy()
    assert sampled.shape == (400, 500)
    observed = np.bincount(sampled.ravel(), minlength=5) / sampled.size
    weights = np.maximum(counts, 1) ** 0.75
    np.testing.assert_allclose(observed, weights / weights.sum(), atol=0.004)


def test_loss_matches_hand_computed_value():
    # window 1 -> every span is 1. Document 0 is tokens [0, 1, 2], document 1 the lone token [1]:
    # pairs (target, context) = (0,1) (1,0) (1,2) (2,1); the lone token has none.
    net = SkipGramModel(FeatureInput("words", "token_ids", 3, 2), np.array([5, 3, 2]),
                        ModelConfig(kind="skipgram", window=1, negatives=2, batch_size=4))
    batch = {"tokens": tf.constant([0, 1, 2, 1], tf.int64), "documents": tf.constant([0, 0, 0, 1], tf.int64),
             "seed": tf.constant([0, 0], tf.int64)}
    net(batch)
    net.target.embeddings.assign([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    net.context.embeddings.assign([[0.5, 0.5]] * 3)   # every context and every negative is c = (0.5, 0.5)
    # target.c: x0 = 0.5, x1 = 0.5, x2 = 1.0. Per pair: -log s(x) - negatives * log s(-x).
    def per_pair(x):
        return np.log1p(np.exp(-x)) + 2 * np.log1p(np.exp(x))
    expected = (per_pair(0.5) + 2 * per_pair(0.5) + per_pair(1.0)) / 4
    assert float(net(batch)) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(2.5516, abs=1e-4)


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
