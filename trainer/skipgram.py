"""Skip-gram with negative sampling over a text feature's token ids (word2vec's objective).

Pairs are made in `tf.data` from the token-id TFRecords rather than in the Beam job: written out,
(target, context) pairs are about 2 x window times the tokens, while the token records stay compact
and every epoch draws new subsampling and new dynamic windows, as word2vec does. Parsing and pair
making run in parallel `tf.data` maps and stream from disk, so the corpus need not fit in memory.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.config import ModelConfig
from trainer.inputs import AUTOTUNE, FeatureInput
from trainer.layers import CategoricalEmbedding, embedding_layer

INTERLEAVED_DOCUMENTS = 8


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


def steps_per_epoch(counts: np.ndarray, keep: np.ndarray, model: ModelConfig) -> int:
    """Expected batches per epoch: kept tokens x 2 x mean dynamic window ((window + 1) / 2) / batch size.

    The pair stream is repeated and cut into epochs of this many steps, because its length changes
    from epoch to epoch (subsampling and windows are random) and Keras stops at a short epoch.
    """
    pairs = float(np.sum(counts * keep)) * (model.window + 1)
    return max(1, int(pairs // model.batch_size))


def document_pairs(tokens: tf.Tensor, keep: tf.Tensor | None, window: int, dynamic: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    """(target, context) pairs of one document.

    Args:
        tokens: token ids of the document [n], OOV ids already removed.
        keep: keep probability per vocabulary id [vocabulary], or None for no subsampling.
        window: largest distance between target and context.
        dynamic: draw each target's window uniformly from 1..window (word2vec), else always `window`.

    Returns:
        targets [pairs] and contexts [pairs], ordered by offset then position.
    """
    if keep is not None:
        tokens = tf.boolean_mask(tokens, tf.random.uniform(tf.shape(tokens)) < tf.gather(keep, tokens))
    size = tf.size(tokens)
    positions = tf.range(size)
    spans = (tf.random.uniform([size], 1, window + 1, dtype=tf.int32) if dynamic
             else tf.fill([size], window))
    targets, contexts = [], []
    for offset in [o for o in range(-window, window + 1) if o]:
        other = positions + offset
        valid = (other >= 0) & (other < size) & (abs(offset) <= spans)
        targets.append(tf.boolean_mask(tokens, valid))
        contexts.append(tf.gather(tokens, tf.boolean_mask(other, valid)))
    return tf.concat(targets, 0), tf.concat(contexts, 0)


def pair_dataset(documents: tf.data.Dataset, feature: str, vocabulary_size: int, keep: np.ndarray,
                 model: ModelConfig, repeat: bool = False) -> tf.data.Dataset:
    """Batches of (targets [batch], contexts [batch]) from batches of documents (SparseTensor token ids)."""
    keep_tensor = tf.constant(keep)

    def per_document(batch: dict) -> tf.data.Dataset:
        rows = tf.RaggedTensor.from_sparse(batch[feature])
        return tf.data.Dataset.from_tensor_slices(rows)

    def pairs(tokens: tf.Tensor) -> tf.data.Dataset:
        tokens = tf.boolean_mask(tokens, tokens < vocabulary_size)
        targets, contexts = document_pairs(tokens, keep_tensor, model.window)
        # Shuffled within the document and interleaved across a few, as word2vec streams its text:
        # a corpus-wide pair shuffle buffer costs more than it helps.
        order = tf.random.shuffle(tf.range(tf.size(targets)))
        return tf.data.Dataset.from_tensor_slices((tf.gather(targets, order), tf.gather(contexts, order)))

    if repeat:
        documents = documents.repeat()
    return (documents.flat_map(per_document)
            .interleave(pairs, cycle_length=INTERLEAVED_DOCUMENTS, num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(model.batch_size, drop_remainder=True)  # the sampler needs a static batch size
            .prefetch(AUTOTUNE))


class SkipGramModel(keras.Model):
    """Target vectors (the published word embeddings) and context vectors, trained with
    negative sampling: -log s(t.c) - sum_k log s(-t.n_k), negatives n_k ~ unigram^0.75.

    Args:
        feature: the text feature; its target table is `embedding_<feature>`.
        counts: training count per vocabulary id [vocabulary] (the sampling distribution).
        num_rows: rows of the target table (vocabulary + OOV buckets).
        model: negatives, batch_size (every batch has exactly this many pairs), l2.
    """

    def __init__(self, feature: FeatureInput, counts: np.ndarray, model: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.target = embedding_layer(feature, model.l2)
        self.context = CategoricalEmbedding(feature.num_rows, feature.dim, name=f"context_{feature.name}")
        self.negatives = model.negatives
        self.batch_size = model.batch_size
        self.unigrams = [float(max(c, 1)) for c in counts]
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self) -> list:
        return [self.loss_tracker]

    def call(self, pairs: tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Mean negative-sampling loss of a batch of (targets [batch], contexts [batch])."""
        targets, contexts = pairs
        size = self.batch_size
        sampled, _, _ = tf.random.fixed_unigram_candidate_sampler(
            true_classes=tf.reshape(contexts, [-1, 1]), num_true=1, num_sampled=self.negatives * size,
            unique=False, range_max=len(self.unigrams), distortion=0.75, unigrams=self.unigrams)
        target = self.target(targets)                                       # [batch, dim]
        positive = tf.reduce_sum(target * self.context(contexts), axis=-1)  # [batch]
        negative = tf.reshape(self.context(sampled), [size, self.negatives, -1])
        negative_logits = tf.einsum("bd,bkd->bk", target, negative)         # [batch, negatives]
        return -tf.reduce_mean(tf.math.log_sigmoid(positive)
                               + tf.reduce_sum(tf.math.log_sigmoid(-negative_logits), axis=-1))

    def train_step(self, pairs: tuple[tf.Tensor, tf.Tensor]) -> dict:
        with tf.GradientTape() as tape:
            loss = self(pairs, training=True)
            regularization = tf.add_n(self.losses) if self.losses else 0.0
            scaled = (loss + regularization) / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, pairs: tuple[tf.Tensor, tf.Tensor]) -> dict:
        self.loss_tracker.update_state(self(pairs))
        return {"loss": self.loss_tracker.result()}
