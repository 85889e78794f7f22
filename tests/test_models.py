"""Two-tower internals on hand-made data: the causal query history and its recency weights, the exact-softmax catalogue."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipelines.core.config import ModelConfig
from trainer.inputs import FeatureInput
from trainer.interactions import Interactions
from trainer.layers import CategoricalEmbedding
from trainer.models import build_two_tower

FEATURES = {"user": FeatureInput("user", "ids", 3, 4), "item": FeatureInput("item", "ids", 6, 4)}


def interactions() -> Interactions:
    # user 0 saw items 1, 2, 3 at times 1, 2, 3; user 1 saw item 5 at time 7; user 2 nothing
    return Interactions(seen={0: {1, 2, 3}, 1: {5}}, counts=np.array([0, 1, 1, 1, 0, 1]),
                        features={i: {"item": i} for i in (1, 2, 3, 5)},
                        last_seen={(0, 1): 1.0, (0, 2): 2.0, (0, 3): 3.0, (1, 5): 7.0})


def model(**changes) -> ModelConfig:
    return ModelConfig(**{"kind": "two_tower", "query": ("user",), "candidate": ("item",), "embedding_dim": 4,
                          "hidden_units": (), **changes})


def test_history_holds_the_latest_items_before_each_row():
    net = build_two_tower(model(query_history=2, history_order="t"), FEATURES, interactions())
    rows = net._history({"user": tf.constant([0, 0, 0, 1, 2], tf.int64),
                         "t": tf.constant([2.5, 1.5, 10.0, 7.0, 1.0])}, exclude=None)
    assert rows.to_list() == [[1, 2], [1], [2, 3], [], []]
    serving = net._history({"user": tf.constant([0, 1], tf.int64)}, exclude=None)   # no time: the latest
    assert serving.to_list() == [[2, 3], [5]]
    assert net.query({"user": tf.constant([0, 2], tf.int64)}).shape == (2, 4)


def test_history_without_order_excludes_the_rows_own_item():
    net = build_two_tower(model(query_history=5), FEATURES, interactions())
    rows = net._history({"user": tf.constant([0, 0], tf.int64)}, exclude=tf.constant([2, 9], tf.int64))
    assert rows.to_list() == [[1, 3], [1, 2, 3]]


def test_exact_softmax_aims_at_catalogue_rows():
    net = build_two_tower(model(softmax="full", temperature=1.0), FEATURES, interactions())
    features = {"user": tf.constant([0, 1], tf.int64), "item": tf.constant([3, 5], tf.int64)}
    query = net.query(features).numpy()
    catalog = net.candidate(net.catalog).numpy()              # rows for items 1, 2, 3, 5
    logits = query @ catalog.T
    expected = np.mean([np.log(np.exp(logits[0]).sum()) - logits[0, 2], np.log(np.exp(logits[1]).sum()) - logits[1, 3]])
    assert np.isclose(float(net.compute_batch_loss(features, training=False)), expected, rtol=1e-5)


def test_the_mean_encoder_weighs_history_items_by_age():
    layer = CategoricalEmbedding(6, 2, decay=0.5)
    layer.build(None)
    table = np.arange(12, dtype=np.float32).reshape(6, 2)
    layer.embeddings.assign(table)
    # user 0's history is items 1, 2, 3 (oldest first): ages 2, 1, 0; user 1's is item 5 alone
    history = tf.ragged.constant([[1, 2, 3], [5]], dtype=tf.int64).to_sparse()
    expected = [(0.25 * table[1] + 0.5 * table[2] + table[3]) / 1.75, table[5]]
    np.testing.assert_allclose(layer(history).numpy(), expected, rtol=1e-6)
    net = build_two_tower(model(query_history=3, history_order="t", history_decay=0.5), FEATURES, interactions())
    assert net.query_tower.get_layer("embedding__history").decay == 0.5
