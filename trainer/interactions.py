"""What one pass over the training split says about queries and candidates (two-tower models).

The two-tower model uses it for the logQ correction (candidate frequencies), the exact softmax
(every candidate's features), the query history and the ranking evaluation.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np
import tensorflow as tf

HISTORY_KEPT_FACTOR = 10


@dataclasses.dataclass
class Interactions:
    """Attributes:
        seen: query id -> candidate ids it has in training.
        counts: training count per candidate id [num_candidates].
        features: candidate id -> its candidate features (ids, or token id lists).
        last_seen: (query id, candidate id) -> largest value of the history order feature, if any.
    """
    seen: dict[int, set[int]]
    counts: np.ndarray
    features: dict[int, dict]
    last_seen: dict[tuple[int, int], float] = dataclasses.field(default_factory=dict)

    def log_frequency(self) -> np.ndarray:
        """log of each candidate's share of training rows [num_candidates] (unseen ones as if seen once)."""
        return np.log(np.maximum(self.counts, 1) / max(self.counts.sum(), 1))

    def catalog_ids(self) -> np.ndarray:
        """Ids of the candidates seen in training, ascending [candidates]."""
        return np.array(sorted(self.features), np.int64)

    def history(self, num_queries: int, max_length: int, seed: int) -> tuple[tf.RaggedTensor, tf.RaggedTensor | None]:
        """Each query id's training candidates [num_queries, (items)] and, with an order feature,
        their order values [num_queries, (items)], oldest first. Without an order feature at most
        `max_length` (a seeded sample); with one, at most HISTORY_KEPT_FACTOR * max_length, the latest,
        so that earlier rows can still be given the items before them."""
        rng = np.random.default_rng(seed)
        rows, times = [], []
        for query in range(num_queries):
            items = list(self.seen.get(query, ()))
            if self.last_seen:
                items = sorted(items, key=lambda item: (self.last_seen[query, item], item))
                items = items[-HISTORY_KEPT_FACTOR * max_length:]
                times.append([self.last_seen[query, item] for item in items])
            elif len(items) > max_length:
                items = sorted(rng.choice(items, max_length, replace=False).tolist())
            rows.append(items)
        ragged = tf.ragged.constant(rows, dtype=tf.int64, ragged_rank=1)
        return ragged, (tf.ragged.constant(times, dtype=tf.float32, ragged_rank=1) if self.last_seen else None)


def collect_interactions(train: tf.data.Dataset, query_id: str, candidate_id: str,
                         candidate_features: list[str], num_candidates: int,
                         order_feature: str | None = None) -> Interactions:
    """One streaming pass over the (unshuffled) training split."""
    seen: dict[int, set[int]] = collections.defaultdict(set)
    counts = np.zeros(num_candidates, np.int64)
    features: dict[int, dict] = {}
    last_seen: dict[tuple[int, int], float] = {}
    for batch in train:
        users, items = batch[query_id].numpy().tolist(), batch[candidate_id].numpy()
        counts += np.bincount(items, minlength=num_candidates)
        values = {name: _rows(batch[name]) for name in candidate_features}
        order = batch[order_feature].numpy().tolist() if order_feature else None
        for row, (user, item) in enumerate(zip(users, items.tolist())):
            seen[user].add(item)
            if order is not None:
                last_seen[user, item] = max(order[row], last_seen.get((user, item), -np.inf))
            if item not in features:
                features[item] = {name: values[name][row] for name in candidate_features}
    return Interactions(dict(seen), counts, features, last_seen)


def _rows(tensor: tf.Tensor | tf.SparseTensor) -> list:
    if isinstance(tensor, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(tensor).to_list()
    return tensor.numpy().tolist()


def candidate_batch(features: dict[int, dict], ids: list[int]) -> dict:
    """Stored candidate features of `ids` as model inputs (token lists -> SparseTensor)."""
    batch = {}
    for name in features[ids[0]]:
        values = [features[i][name] for i in ids]
        if isinstance(values[0], list):
            batch[name] = tf.ragged.constant(values, dtype=tf.int64, ragged_rank=1).to_sparse()
        else:
            batch[name] = tf.constant(values, tf.int64)
    return batch
