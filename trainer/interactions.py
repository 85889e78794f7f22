"""What one pass over the training split says about queries and candidates (two-tower models).

The two-tower model uses it for the logQ correction (candidate frequencies), the exact softmax
(every candidate's features), the query history and the ranking evaluation.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class Interactions:
    """Attributes:
        seen: query id -> candidate ids it has in training.
        counts: training count per candidate id [num_candidates].
        features: candidate id -> its candidate features (ids, or token id lists).
    """
    seen: dict[int, set[int]]
    counts: np.ndarray
    features: dict[int, dict]

    def log_frequency(self) -> np.ndarray:
        """log of each candidate's share of training rows [num_candidates] (unseen ones as if seen once)."""
        return np.log(np.maximum(self.counts, 1) / max(self.counts.sum(), 1))

    def catalog_ids(self) -> np.ndarray:
        """Ids of the candidates seen in training, ascending [candidates]."""
        return np.array(sorted(self.features), np.int64)

    def history(self, num_queries: int, max_length: int, seed: int) -> tf.RaggedTensor:
        """Each query id's training candidates, at most `max_length` (a seeded sample) [num_queries, (items)]."""
        rng = np.random.default_rng(seed)
        rows = []
        for query in range(num_queries):
            items = sorted(self.seen.get(query, ()))
            if len(items) > max_length:
                items = sorted(rng.choice(items, max_length, replace=False).tolist())
            rows.append(items)
        return tf.ragged.constant(rows, dtype=tf.int64, ragged_rank=1)


def collect_interactions(train: tf.data.Dataset, query_id: str, candidate_id: str,
                         candidate_features: list[str], num_candidates: int) -> Interactions:
    """One streaming pass over the (unshuffled) training split."""
    seen: dict[int, set[int]] = collections.defaultdict(set)
    counts = np.zeros(num_candidates, np.int64)
    features: dict[int, dict] = {}
    for batch in train:
        users, items = batch[query_id].numpy(), batch[candidate_id].numpy()
        counts += np.bincount(items, minlength=num_candidates)
        values = {name: _rows(batch[name]) for name in candidate_features}
        for row, (user, item) in enumerate(zip(users.tolist(), items.tolist())):
            seen[user].add(item)
            if item not in features:
                features[item] = {name: values[name][row] for name in candidate_features}
    return Interactions(dict(seen), counts, features)


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
