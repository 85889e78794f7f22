"""Skip-gram with negative sampling over a text feature's token ids (word2vec's objective).

A training batch is a run of tokens, not a list of (target, context) pairs: `batch_size` kept
tokens [batch] with the document each came from [batch]. The model looks up every token's target
and context vector once and scores each block of `BLOCK` targets against the contexts of its own
and its two neighbouring blocks with one batched matrix product, masked to the pairs inside each
target's window and document; a token's vectors are read once instead of once per pair (about
2 x window times), and no pair is ever materialised, neither on disk nor in `tf.data`. Every epoch draws new subsampling and new
dynamic windows, as word2vec does. Reading, parsing and subsampling are `tf.data` stages streaming
from the token-id TFRecords, so the corpus need not fit in memory.

Negatives are shared: each group of `NEGATIVE_GROUP` targets in a batch is scored against the same
`SHARED_NEGATIVES` draws from unigram^0.75, each weighted negatives / SHARED_NEGATIVES, which keeps
word2vec's expected loss (negatives per pair) while turning per-pair gathers into one matrix product.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.core.config import ModelConfig
from trainer.inputs import AUTOTUNE, FeatureInput
from trainer.layers import CategoricalEmbedding, embedding_layer

BLOCK = 8
NEGATIVE_GROUP = 128
SHARED_NEGATIVES = 32
DOCUMENTS_PER_READ = 256
# Keeps the document ids of consecutive read batches apart after they are cut into token batches.
DOCUMENT_ID_STRIDE = 1 << 20


def token_counts(documents: tf.data.Dataset, feature: str, vocabulary_size: int) -> np.ndarray:
    """Training occurrences of each vocabulary id [vocabulary_size] (OOV ids are not counted)."""
    counts = np.zeros(vocabulary_size, np.int64)
    for batch in documents:
        ids = batch[feature].values.numpy()
        counts += np.bincount(ids[ids < vocabulary_size], minlength=vocabulary_size)
    return counts


def keep_probabilities(counts: np.ndarray, subsample: float) -> np.ndarray:
    """word2vec's subsampling: keep a token of frequency f with probability (sqrt(f/t) + 1) * t/f, capped at 1."""
    frequency = counts / max(counts.sum(), 1)
    ratio = subsample / np.maximum(frequency, 1e-12)
    return np.minimum(1.0, np.sqrt(ratio) + ratio).astype(np.float32)


def steps_per_epoch(counts: np.ndarray, keep: np.ndarray, batch_size: int) -> int:
    """Expected batches per epoch: kept tokens / tokens per batch.

    The token stream is repeated and cut into epochs of this many steps, because its length changes
    from epoch to epoch (subsampling is random) and Keras stops at a short epoch.
    """
    return max(1, int(float(np.sum(counts * keep)) // batch_size))


def token_batches(documents: tf.data.Dataset, feature: str, vocabulary_size: int, keep: np.ndarray,
                  batch_size: int, repeat: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of {"tokens": [batch_size], "documents": [batch_size], "seed": [2]} (int64) from
    batches of documents.

    OOV tokens are dropped and the rest subsampled before batching, so words around a dropped token
    become neighbours, as in word2vec. Training batches (`repeat`) are all full; the last evaluation
    batch may be shorter. Every random draw (subsampling here, windows and negatives in the model
    from each batch's "seed") is stateless, keyed by `seed` and the position in the stream, so an
    epoch's draws are the same whenever it runs.
    """
    keep_tensor = tf.constant(keep)

    def kept_tokens(index: tf.Tensor, batch: dict) -> dict:
        rows = tf.RaggedTensor.from_sparse(batch[feature])
        in_vocabulary = rows < vocabulary_size
        rows = tf.ragged.boolean_mask(rows, in_vocabulary)
        # Stateless draws keyed by the read batch: the same tokens are kept whatever order the
        # parallel map runs in, and the batch counter keeps growing across epochs of a repeated stream.
        draws = tf.random.stateless_uniform(tf.shape(rows.flat_values), seed=tf.stack([tf.constant(seed, tf.int64), index]))
        kept = tf.ragged.boolean_mask(rows, rows.with_flat_values(draws < tf.gather(keep_tensor, rows.flat_values)))
        return {"tokens": kept.flat_values, "documents": kept.value_rowids() + index * DOCUMENT_ID_STRIDE}

    if repeat:
        documents = documents.repeat()
    return (documents.enumerate()
            .map(kept_tokens, num_parallel_calls=AUTOTUNE, deterministic=True)
            .rebatch(batch_size, drop_remainder=repeat)
            .enumerate()
            .map(lambda index, batch: {**batch, "seed": tf.stack([tf.constant(seed, tf.int64), index])})
            .prefetch(AUTOTUNE))


def window_pairs(documents: tf.Tensor, spans: tf.Tensor, block: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Which (target, context) position pairs of a token batch are skip-gram pairs, block by block.

    Tokens are cut into blocks of `block` positions (at least the window); a target in block j can
    only pair with a context in blocks j - 1, j or j + 1, so each block is scored against those
    3 x block positions.

    Args:
        documents: document id of each token [n], -1 for padding; n a multiple of `block`.
        spans: each token's window as a target [n] (word2vec draws it from 1..window; 0 for padding).
        block: positions per block, at least the largest span.

    Returns:
        pairs [blocks, block, 3 x block] (bool): target position j * block + a with context position
        contexts[j, 0, c]; and contexts [blocks, 1, 3 x block], the context positions (outside
        0..n-1 at the edges, where no pair is).
    """
    size = tf.size(documents)
    targets = tf.reshape(tf.range(size), [-1, block, 1])
    contexts = targets[:, :1, :] + tf.range(-block, 2 * block)[None, None, :]
    inside = (contexts >= 0) & (contexts < size)
    clipped = tf.clip_by_value(contexts, 0, size - 1)
    distance = tf.abs(contexts - targets)
    pairs = (inside & (distance >= 1) & (distance <= tf.gather(spans, targets))
             & (tf.gather(documents, clipped) == tf.gather(documents, targets)))
    return pairs, contexts


def neighbour_blocks(vectors: tf.Tensor, block: int) -> tf.Tensor:
    """Each block's vectors beside its two neighbours' [blocks, 3 x block, dim] from vectors [n, dim].

    Rolls instead of slices (their gradients are much cheaper on CPU); the wrapped-around edge
    blocks are excluded by `window_pairs`.
    """
    blocks = tf.reshape(vectors, [-1, block, vectors.shape[-1]])
    return tf.concat([tf.roll(blocks, 1, 0), blocks, tf.roll(blocks, -1, 0)], axis=1)


def unigram_sampler(counts: np.ndarray, distortion: float = 0.75) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """A function (shape, seed [2]) drawing ids [shape] from counts^distortion (unseen ids count as 1)."""
    weights = np.maximum(counts, 1).astype(np.float64) ** distortion
    cumulative = tf.constant(np.cumsum(weights) / weights.sum())

    def sample(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        draws = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float64)
        ids = tf.searchsorted(cumulative, tf.reshape(draws, [-1]), side="right")
        return tf.reshape(tf.minimum(ids, len(weights) - 1), shape)

    return sample


class SkipGramModel(keras.Model):
    """Target vectors (the published word embeddings) and context vectors, trained with negative
    sampling: per pair -log s(t.c) - sum_k log s(-t.n_k), negatives n_k ~ unigram^0.75.

    Args:
        feature: the text feature; its target table is `embedding_<feature>`.
        counts: training count per vocabulary id [vocabulary] (the sampling distribution).
        model: window, negatives, l2.
    """

    def __init__(self, feature: FeatureInput, counts: np.ndarray, model: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.target = embedding_layer(feature, model.l2)
        self.context = CategoricalEmbedding(feature.num_rows, feature.dim, name=f"context_{feature.name}")
        self.window = model.window
        self.block = BLOCK * -(-model.window // BLOCK)
        self.padded_multiple = int(np.lcm(self.block, NEGATIVE_GROUP))
        self.negatives = model.negatives
        self.sample_negatives = unigram_sampler(counts)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self) -> list:
        return [self.loss_tracker]

    def call(self, batch: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Mean loss per pair of a token batch {"tokens": [n], "documents": [n], "seed": [2]}."""
        tokens = batch["tokens"]
        size = tf.size(tokens)
        padding = -size % self.padded_multiple
        documents = tf.pad(batch["documents"], [[0, padding]], constant_values=-1)
        seed = batch["seed"]
        window_seed = tf.random.experimental.stateless_fold_in(seed, 2)
        spans = tf.pad(tf.random.stateless_uniform([size], seed=window_seed, minval=1, maxval=self.window + 1,
                                                   dtype=tf.int32), [[0, padding]])
        target = tf.pad(self.target(tokens), [[0, padding], [0, 0]])                    # [padded n, dim]
        context = tf.pad(self.context(tokens), [[0, padding], [0, 0]])
        pairs, _ = window_pairs(documents, spans, self.block)                            # [blocks, block, 3 block]
        logits = tf.matmul(tf.reshape(target, [-1, self.block, target.shape[-1]]),
                           neighbour_blocks(context, self.block), transpose_b=True)
        # Only about window / (3 x block) of the logits are pairs; the others are dropped first.
        positive_loss = -tf.reduce_sum(tf.math.log_sigmoid(tf.boolean_mask(logits, pairs)))
        contexts_per_target = tf.reshape(tf.reduce_sum(tf.cast(pairs, tf.float32), -1), [-1])   # [padded n]
        negative_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        negative_loss = self.shared_negative_loss(target, contexts_per_target, negative_seed)
        return (positive_loss + negative_loss) / tf.maximum(tf.reduce_sum(contexts_per_target), 1.0)

    def shared_negative_loss(self, target: tf.Tensor, contexts_per_target: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """sum over targets of (its pairs x negatives) x mean over its group's shared draws of -log s(-t.n).

        Args:
            target: target vectors [n, dim], n a multiple of NEGATIVE_GROUP.
            contexts_per_target: pairs each target is in [n].
            seed: the negatives' stateless seed [2].
        """
        grouped = tf.reshape(target, [-1, NEGATIVE_GROUP, target.shape[-1]])
        weights = tf.reshape(contexts_per_target, [-1, NEGATIVE_GROUP])
        draws = self.sample_negatives([tf.shape(grouped)[0], SHARED_NEGATIVES], seed)
        negatives = self.context(draws)                                                           # [groups, S, dim]
        logits = tf.matmul(grouped, negatives, transpose_b=True)                                 # [groups, G, S]
        per_target = tf.reduce_mean(-tf.math.log_sigmoid(-logits), -1)                            # [groups, G]
        return self.negatives * tf.reduce_sum(weights * per_target)

    def train_step(self, batch: dict[str, tf.Tensor]) -> dict:
        with tf.GradientTape() as tape:
            loss = self(batch, training=True)
            regularization = tf.add_n(self.losses) if self.losses else 0.0
            scaled = (loss + regularization) / tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(scaled, self.trainable_variables)
        if isinstance(self.optimizer, keras.optimizers.Adam):
            # tf_keras's Adam rewrites whole tables even for sparse gradients; given that, one dense
            # segment sum is cheaper than its de-duplication and scatters of every batch row.
            gradients = [tf.convert_to_tensor(g) for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, batch: dict[str, tf.Tensor]) -> dict:
        self.loss_tracker.update_state(self(batch))
        return {"loss": self.loss_tracker.result()}
