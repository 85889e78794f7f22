"""Alternating least squares for a two-tower model that is a plain factorisation (`solver: als`).

With one id feature a tower and no hidden layers, the towers are two embedding tables, U (queries)
and V (candidates), and dot(U[q], V[c]) scores a pair. ALS fits them to the binary matrix X of
training pairs (1 where query q has candidate c in training, 0 elsewhere) by minimising

    ||X - U V^T||^2 + als_l2 * (||U||^2 + ||V||^2)

over all pairs, seen or not, one table at a time: with V fixed the best U is
X V (V^T V + als_l2 I)^-1, then V likewise from U. That is implicit ALS (Hu, Koren and Volinsky)
with every confidence 1, whose optimum is the truncated SVD of X with each singular value shrunk by
als_l2 (Cremonesi et al.'s PureSVD, regularised); each sweep costs two sparse-dense products and
two [dim, dim] solves. An epoch is one sweep (users, then items), validated and saved as a
gradient epoch is, so early stopping, resuming and the best epoch work the same way.

With an ordered `query_history` of N, the published query vector is solved the same way from the
query's latest N candidates weighted by age, `history_decay` ** age (the latest 1): a row H of
`history_matrix` in place of the binary row of X. The sweeps still fit V to X; only the vectors
that serve (and are validated) read the recency-weighted rows, so they rank what follows a query's
latest items rather than what resembles its whole past. With decay 1 and a history at least as long
as every query's, they are the query step of plain ALS, solved from the sweep's new V.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.core.config import ModelConfig
from trainer.epochs import EpochState, run_epochs
from trainer.interactions import Interactions
from trainer.layers import recency_weights


def pair_matrix(interactions: Interactions, num_queries: int, num_candidates: int) -> tf.sparse.SparseTensor:
    """X: 1 for each (query id, candidate id) seen in training [num_queries, num_candidates] (float32)."""
    queries = np.fromiter((q for q, items in interactions.seen.items() for _ in items), np.int64)
    items = np.fromiter((i for items in interactions.seen.values() for i in items), np.int64)
    pairs = tf.sparse.SparseTensor(np.stack([queries, items], axis=1), tf.ones(len(items), tf.float32),
                                   [num_queries, num_candidates])
    return tf.sparse.reorder(pairs)


def history_matrix(interactions: Interactions, num_queries: int, num_candidates: int, length: int,
                   decay: float) -> tf.sparse.SparseTensor:
    """H: decay ** age at (query id, candidate id) for each query's latest `length` training
    candidates, age 0 the latest [num_queries, num_candidates] (float32). Candidates of one order
    value are aged in id order (a float32 time stamp ties ratings a minute apart; on MovieLens's
    validation split giving a tie one age lost 0.014 HR@10, as a single latest group weighs alike)."""
    if not interactions.last_seen:
        raise ValueError("an ALS history needs the order of the training pairs (model.history_order)")
    items, _ = interactions.history(num_queries, length, seed=0)   # ordered: oldest first, no sampling
    latest = items[:, -length:].to_sparse()                          # [num_queries, length], as the mean encoder reads
    weights = recency_weights(latest, decay)
    history = tf.sparse.SparseTensor(tf.stack([latest.indices[:, 0], latest.values], axis=1), weights.values,
                                     [num_queries, num_candidates])
    return tf.sparse.reorder(history)


def solve_side(pairs: tf.sparse.SparseTensor, other: tf.Tensor, l2: float) -> tf.Tensor:
    """The best rows of one table given the other: X O (O^T O + l2 I)^-1.

    Args:
        pairs: X, or its transpose for the candidate side [rows, other_rows].
        other: the fixed table O [other_rows, dim], its rows without training pairs zero (`active`).
        l2: the regularisation weight (> 0).

    Returns:
        The table [rows, dim]; a row without training pairs comes out zero (`keep_unseen` keeps its old value).
    """
    gram = tf.matmul(other, other, transpose_a=True) + l2 * tf.eye(tf.shape(other)[1], dtype=other.dtype)
    targets = tf.sparse.sparse_dense_matmul(pairs, other)                                  # [rows, dim]
    return tf.transpose(tf.linalg.cholesky_solve(tf.linalg.cholesky(gram), tf.transpose(targets)))


def has_pairs(pairs: tf.sparse.SparseTensor) -> tf.Tensor:
    """Whether each row of `pairs` [rows, other] has a training pair [rows, 1] (bool)."""
    return tf.expand_dims(tf.sparse.reduce_sum(pairs, axis=1, output_is_sparse=False) > 0, 1)


def active(table: tf.Tensor, seen: tf.Tensor) -> tf.Tensor:
    """`table` [rows, dim] with the rows without training pairs (`seen` [rows, 1], `has_pairs`) zeroed:
    an id never seen in training (an OOV row, a key only a warm start knows) is no candidate and no
    query, so it stays out of the sums over all pairs."""
    return table * tf.cast(seen, table.dtype)


def keep_unseen(solved: tf.Tensor, table: tf.Tensor, seen: tf.Tensor) -> tf.Tensor:
    """`solved` [rows, dim] where a row has training pairs (`seen` [rows, 1], `has_pairs`), `table`'s
    row elsewhere: an unseen id keeps its start (random, or a warm start's row), as under gradient
    training, rather than a zero vector whose scores would all tie."""
    return tf.where(seen, solved, table)


def objective(pairs: tf.sparse.SparseTensor, query: tf.Tensor, candidate: tf.Tensor, l2: float) -> tf.Tensor:
    """||X - U V^T||^2 + l2 (||U||^2 + ||V||^2) over all pairs, divided by the training pairs
    (a scalar), computed without the dense [queries, candidates] matrix."""
    seen = tf.cast(tf.size(pairs.values), tf.float32)
    fit = seen - 2.0 * tf.reduce_sum(query * tf.sparse.sparse_dense_matmul(pairs, candidate)) + tf.reduce_sum(
        tf.matmul(query, query, transpose_a=True) * tf.matmul(candidate, candidate, transpose_a=True))
    return (fit + l2 * (tf.reduce_sum(tf.square(query)) + tf.reduce_sum(tf.square(candidate)))) / seen


def fit_als(net: keras.Model, state: EpochState, interactions: Interactions, validation: tf.data.Dataset | None,
            model: ModelConfig, patience: int, checkpoint: str, verbose: bool = True) -> tuple[list[dict], int | None]:
    """Fits the two embedding tables of `net` (a TwoTowerModel) by ALS, one sweep an epoch.

    Args:
        net: the compiled two-tower model. The first sweep solves the query table from the candidate
            table's start (random or warm-started), so a warm start of the query table matters only
            when it is frozen (non-trainable: kept, and no history is read) or for ids without
            training pairs (kept).
        state: saved epochs (restored first).
        interactions: the training pairs (and their order, for a history).
        validation: validation batches (`val_hr@10`, `val_ndcg@10` after every sweep), or None.
        model: `epochs` (sweeps in all), `als_l2`, and `query_history`, `history_decay` (the
            published query vectors read each query's latest items).
        patience: early-stopping patience (0: off).
        checkpoint: path of each epoch's weights, with `{epoch:03d}` (as Keras' ModelCheckpoint).
        verbose: one line per sweep in the terminal.

    Returns:
        The history and the best epoch (None when early stopping is off), as `fit_epochs`. Its
        `loss` is the objective of the tables as fitted to X (with a history, the published query
        vectors are solved from H instead, and validation scores those).
    """
    query = net.query_tower.get_layer(f"embedding_{net.query_id}")
    candidate = net.candidate_tower.get_layer(f"embedding_{net.candidate_id}")
    l2 = model.als_l2
    pairs = pair_matrix(interactions, query.num_rows, candidate.num_rows)
    transposed = tf.sparse.reorder(tf.sparse.transpose(pairs))
    query_seen, candidate_seen = has_pairs(pairs), has_pairs(transposed)
    history = None
    if model.query_history and query.trainable:
        history = history_matrix(interactions, query.num_rows, candidate.num_rows, model.query_history,
                                 model.history_decay)

    def sweep(epoch: int) -> dict[str, float]:
        # U: fitted to X, the table V is solved from (a frozen table as it is)
        if query.trainable:
            queries = active(solve_side(pairs, active(candidate.embeddings, candidate_seen), l2), query_seen)
        else:
            queries = active(query.embeddings, query_seen)
        if candidate.trainable:
            solved = solve_side(transposed, queries, l2)
            candidate.embeddings.assign(keep_unseen(solved, candidate.embeddings, candidate_seen))
        candidates = active(candidate.embeddings, candidate_seen)
        if query.trainable:
            published = queries if history is None else solve_side(history, candidates, l2)
            query.embeddings.assign(keep_unseen(published, query.embeddings, query_seen))
        loss = objective(pairs, queries, candidates, l2)
        logs = {"loss": float(loss)}
        if validation is not None:
            scores = net.evaluate(validation, verbose=0, return_dict=True)
            # The validation loss is the softmax's, which ALS does not minimise.
            logs.update({f"val_{name}": float(value) for name, value in scores.items() if name != "loss"})
        net.save_weights(checkpoint.format(epoch=epoch + 1))
        return logs

    return run_epochs(state, sweep, model.epochs, patience, "two_tower", verbose)
