"""Retrieval loss of the two-tower model."""
from __future__ import annotations

import tensorflow as tf

_MASKED_LOGIT = -1e9


def in_batch_softmax_loss(query: tf.Tensor, candidate: tf.Tensor, candidate_ids: tf.Tensor,
                          temperature: float, candidate_log_prob: tf.Tensor | None = None,
                          positives: tf.Tensor | None = None) -> tf.Tensor:
    """Sampled softmax over the batch's candidates (each query's own candidate is its positive).

    logits[i, j] = dot(query_i, candidate_j) / temperature - log p(candidate_j), where p is the
    probability that candidate j shows up in a batch (the logQ correction for in-batch sampling,
    which would otherwise punish popular items for being popular). Other columns holding the
    same candidate as row i's positive are not negatives of row i (accidental hits are masked).

    Args:
        query: query tower output [queries, dim].
        candidate: candidate tower output [candidates, dim]; with several replicas, every replica's
            candidates (queries <= candidates).
        candidate_ids: candidate id of each column [candidates] (int64).
        temperature: softmax temperature (> 0).
        candidate_log_prob: log p(candidate_j) [candidates], or None for no correction.
        positives: column of each query's own candidate [queries] (int32); None: column i for row i.

    Returns:
        Mean cross-entropy over the queries, a scalar.
    """
    logits = tf.matmul(query, candidate, transpose_b=True) / temperature
    if candidate_log_prob is not None:
        logits -= tf.expand_dims(tf.cast(candidate_log_prob, logits.dtype), 0)
    if positives is None:
        positives = tf.range(tf.shape(query)[0])
    own = tf.gather(candidate_ids, positives)
    same = tf.equal(tf.expand_dims(own, 1), tf.expand_dims(candidate_ids, 0))
    accidental = tf.logical_and(same, tf.logical_not(tf.one_hot(positives, tf.shape(candidate)[0], True, False)))
    logits = tf.where(accidental, tf.constant(_MASKED_LOGIT, logits.dtype), logits)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positives, logits=logits))


def full_softmax_loss(query: tf.Tensor, catalog: tf.Tensor, positions: tf.Tensor, temperature: float) -> tf.Tensor:
    """Exact softmax over every candidate of the catalogue (no sampling, so no correction).

    Args:
        query: query tower output [batch, dim].
        catalog: candidate tower output for the whole catalogue [candidates, dim].
        positions: row of each example's candidate in `catalog` [batch] (int).
        temperature: softmax temperature (> 0).

    Returns:
        Mean cross-entropy over the batch, a scalar.
    """
    logits = tf.matmul(query, catalog, transpose_b=True) / temperature
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positions, logits=logits))
