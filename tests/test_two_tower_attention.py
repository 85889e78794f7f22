"""The attention query encoder and the validation ranking of the two-tower model, on hand-made data."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from pipelines.core.config import ModelConfig
from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import ConfigError
from trainer.inputs import FeatureInput
from trainer.interactions import Interactions
from trainer.models import build_two_tower
from trainer.sequence import PADDING, SequenceEncoder, attention_mask

FEATURES = {"user": FeatureInput("user", "ids", 3, 4), "item": FeatureInput("item", "ids", 9, 4)}


def interactions(later: tuple[int, int] = (4, 5)) -> Interactions:
    """User 0 rated items 1, 2, 3 at times 1, 2, 3 and `later` at times 4, 5; user 1 rated item 5 at time 7."""
    items = (1, 2, 3, *later)
    last_seen = {(0, item): float(time) for time, item in enumerate(items, start=1)}
    counts = np.zeros(9, np.int64)
    counts[list(items)] += 1
    counts[5] += 1
    return Interactions(seen={0: set(items), 1: {5}}, counts=counts,
                        features={i: {"item": i} for i in sorted({*items, 5})}, last_seen={**last_seen, (1, 5): 7.0})


def attention_model(**changes) -> ModelConfig:
    return ModelConfig(**{"kind": "two_tower", "query": ("user",), "candidate": ("item",), "embedding_dim": 4,
                          "hidden_units": (), "query_history": 3, "history_order": "t", "query_encoder": "attention",
                          "attention_blocks": 2, "attention_dropout": 0.0, **changes})


def build(config: ModelConfig, data: Interactions):
    keras.utils.set_random_seed(7)          # the same weights for every model built with the same config
    return build_two_tower(config, FEATURES, data)


def test_attention_mask_is_causal_and_hides_padding():
    ids = tf.constant([[PADDING, 4, 6], [7, 8, 9]], tf.int64)
    expected = np.array([[[0, 0, 0], [0, 1, 0], [0, 1, 1]],      # padding is never attended to
                         [[1, 0, 0], [1, 1, 0], [1, 1, 1]]], bool)  # position p sees positions <= p
    np.testing.assert_array_equal(attention_mask(ids).numpy(), expected)


def test_history_sequence_is_right_aligned_latest_last():
    net = build(attention_model(), interactions())
    rows = net.history_sequence(net._history({"user": tf.constant([0, 0, 0, 1, 2], tf.int64),
                                              "t": tf.constant([3.5, 1.0, 10.0, 8.0, 1.0])}, exclude=None))
    assert rows.shape == (5, 3)
    np.testing.assert_array_equal(rows.numpy(), [[1, 2, 3], [-1, -1, -1], [3, 4, 5], [-1, -1, 5], [-1, -1, -1]])


def test_a_row_never_sees_items_at_or_after_its_time():
    # Two histories that agree before time 4 and differ from time 4 on; the same weights in both.
    first, second = build(attention_model(), interactions()), build(attention_model(), interactions(later=(6, 7)))
    rows = {"user": tf.constant([0, 0, 0], tf.int64), "t": tf.constant([2.0, 4.0, 4.5])}
    a, b = first.query(rows).numpy(), second.query(rows).numpy()
    assert a.shape == (3, 4)
    np.testing.assert_allclose(a[:2], b[:2], rtol=1e-6)     # times 2 and 4: only items 1, 2, 3 are before them
    assert np.abs(a[2] - b[2]).max() > 1e-3                  # time 4.5: item 4 vs item 6 at time 4


def test_serving_uses_the_latest_items():
    net = build(attention_model(), interactions())
    serving = net.query({"user": tf.constant([0, 1], tf.int64)}).numpy()    # no time: the latest 3 items
    as_of_the_end = net.query({"user": tf.constant([0, 1], tf.int64), "t": tf.constant([99.0, 99.0])}).numpy()
    np.testing.assert_allclose(serving, as_of_the_end, rtol=1e-6)
    sequence = net.history_sequence(net._history({"user": tf.constant([0, 1], tf.int64)}, exclude=None))
    np.testing.assert_array_equal(sequence.numpy(), [[3, 4, 5], [-1, -1, 5]])


def test_padding_is_masked_and_an_empty_history_encodes_to_zeros():
    encoder = SequenceEncoder(num_items=6, dim=4, length=3, blocks=2, heads=2, dropout=0.0)
    ids = tf.constant([[PADDING, PADDING, 5], [PADDING, 0, 5], [PADDING, PADDING, PADDING]], tf.int64)
    before = encoder(ids).numpy()
    assert before.shape == (3, 4)
    table = encoder.items.embeddings
    table.assign(tf.tensor_scatter_nd_update(table, [[0]], [[9.0, -9.0, 3.0, 1.0]]))   # padding looks up row 0
    after = encoder(ids).numpy()
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6)    # padded positions do not count
    assert np.abs(after[1] - before[1]).max() > 1e-3              # a real item 0 does
    np.testing.assert_array_equal(after[2], np.zeros(4))


def ranking_model() -> tuple:
    """Two users, items 1..4 in the catalogue; vectors set by hand (dim 2, plain matrix factorisation)."""
    features = {"user": FeatureInput("user", "ids", 2, 2), "item": FeatureInput("item", "ids", 6, 2)}
    data = Interactions(seen={0: {1, 2}, 1: {3}}, counts=np.array([0, 1, 1, 1, 1, 0]),
                        features={i: {"item": i} for i in (1, 2, 3, 4)})
    config = ModelConfig(kind="two_tower", query=("user",), candidate=("item",), embedding_dim=2, hidden_units=(),
                         temperature=1.0, sampling_correction=False)
    net = build_two_tower(config, features, data)
    net(({"user": tf.constant([0], tf.int64), "item": tf.constant([1], tf.int64)}))
    net.query_tower.get_layer("embedding_user").embeddings.assign([[1.0, 0.0], [0.0, 1.0]])
    # scores of user 0: items 1..4 -> 4, 3, 2, 1; of user 1: 1, 2, 3, 4
    net.candidate_tower.get_layer("embedding_item").embeddings.assign(
        [[0, 0], [4, 1], [3, 2], [2, 3], [1, 4], [9, 9]])
    net.compile(optimizer="adam")
    return net


def test_validation_ranks_the_catalogue_without_the_users_training_items():
    net = ranking_model()
    batch = {"user": tf.constant([0, 0, 1, 1], tf.int64), "item": tf.constant([3, 1, 1, 5], tf.int64)}
    ranks = net.ranks(net.batch_query(batch, training=False), batch).numpy()
    # user 0 / item 3: items 1, 2 (scores 4, 3) are training items -> rank 0;
    # user 0 / item 1: its own training item is the target, 2 is excluded -> rank 0;
    # user 1 / item 1: item 4 (4) and item 2 (2) score higher, item 3 (3) is excluded -> rank 2;
    # user 1 / item 5: not in the catalogue (item 5's row scores 9 but was never trained) -> a miss.
    np.testing.assert_array_equal(ranks, [0, 0, 2, np.inf])
    logs = net.test_step(batch)
    assert float(logs["hr@10"]) == pytest.approx(0.75)
    assert float(logs["ndcg@10"]) == pytest.approx((1 + 1 + 1 / math.log2(4)) / 4)


def movielens_config(**model) -> dict:
    return {"name": "ml", "input": {"path": "ratings.csv", "format": "csv"}, "split": {"column": "is_last"},
            "features": {"userId": {"type": "vocabulary"}, "movieId": {"type": "vocabulary"},
                         "timestamp": {"type": "numeric", "normalize": "none"}},
            "model": {"kind": "two_tower", "query": ["userId"], "candidate": ["movieId"], **model},
            "entities": [{"name": "user", "key": "userId"}]}


def test_attention_keys_are_validated_and_defaults_depend_on_the_kind():
    config = config_from_dict(movielens_config(query_history=50, history_order="timestamp",
                                               query_encoder="attention"))
    model = config.model
    assert (model.query_encoder, model.attention_blocks, model.attention_heads, model.attention_dropout) == (
        "attention", 1, 1, 0.2)
    assert (model.embedding_dim, model.hidden_units, model.learning_rate, model.temperature, model.l2,
            model.early_stopping_patience, model.epochs, model.batch_size) == (64, (), 0.005, 0.2, 0.1, 3, 30, 512)
    supervised = config_from_dict({**movielens_config(), "model": {"kind": "supervised", "label": "rating"}}).model
    assert (supervised.embedding_dim, supervised.hidden_units, supervised.l2, supervised.early_stopping_patience) == (
        32, (64, 32), 0.0, 0)
    errors = {"query_encoder": {"query_encoder": "attention"},
              "attention_heads": {"query_history": 5, "attention_heads": 3},
              "attention_dropout": {"query_history": 5, "attention_dropout": 1.0}}
    for key, model_keys in errors.items():
        with pytest.raises(ConfigError, match=rf"^model\.{key}: "):
            config_from_dict(movielens_config(**model_keys))
