"""Embedding layers shared by every model kind.

Keras: the trainer uses `tf_keras` (Keras 2), the same Keras as tf.Transform's
`TransformFeaturesLayer`, so the transform layer, the towers and the exported signatures live in
one object graph and one SavedModel (see README, "Why Keras 2").
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from trainer.inputs import FeatureInput


class CategoricalEmbedding(keras.layers.Layer):
    """Embedding table of one categorical feature.

    Dense ids [batch] -> vectors [batch, dim]; token ids (SparseTensor [batch, tokens]) -> the mean
    of the token vectors [batch, dim] (zeros for an empty text), weighted by `decay` ** age with
    `decay` < 1, where a token's age counts back from its row's last token (a history, oldest first).
    The table is the weight `embeddings` [num_rows, dim], named after the feature so that a
    warm start can find it in another run's checkpoint. With `l2` > 0 the layer adds
    l2 * mean squared norm of the vectors it returns, so rows are shrunk in proportion to how often
    they are used (the usual regularisation of matrix factorisation).
    """

    def __init__(self, num_rows: int, dim: int, l2: float = 0.0, decay: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_rows = num_rows
        self.dim = dim
        self.l2 = l2
        self.decay = decay

    def build(self, input_shape) -> None:
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_rows, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / max(self.dim, 1) ** 0.5))
        super().build(input_shape)

    def call(self, ids: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
        if isinstance(ids, tf.SparseTensor):
            weights = recency_weights(ids, self.decay) if self.decay < 1 else None
            vectors = tf.nn.safe_embedding_lookup_sparse(self.embeddings, ids, weights, combiner="mean")
        else:
            vectors = tf.nn.embedding_lookup(self.embeddings, ids)
        if self.l2:
            self.add_loss(self.l2 * tf.reduce_mean(tf.reduce_sum(tf.square(vectors), axis=-1)))
        return vectors

    def get_config(self) -> dict:
        return {**super().get_config(), "num_rows": self.num_rows, "dim": self.dim, "l2": self.l2, "decay": self.decay}


def recency_weights(ids: tf.SparseTensor, decay: float) -> tf.SparseTensor:
    """decay ** age of each token of `ids` [batch, tokens] (same indices): 1 for a row's last token,
    `decay` for the one before it, and so on."""
    rows, columns = ids.indices[:, 0], ids.indices[:, 1]
    lengths = tf.math.unsorted_segment_max(columns + 1, rows, num_segments=ids.dense_shape[0])
    ages = tf.cast(tf.gather(lengths, rows) - 1 - columns, tf.float32)
    return tf.SparseTensor(ids.indices, tf.pow(tf.constant(decay, tf.float32), ages), ids.dense_shape)


def model_input(feature: FeatureInput) -> keras.Input:
    """The Keras input of one transformed feature."""
    if feature.kind == "token_ids":
        return keras.Input(shape=(None,), sparse=True, dtype=tf.int64, name=feature.name)
    dtype = tf.float32 if feature.kind == "numeric" else tf.int64
    return keras.Input(shape=(), dtype=dtype, name=feature.name)


def embedding_layer(feature: FeatureInput, l2: float = 0.0) -> CategoricalEmbedding:
    return CategoricalEmbedding(feature.num_rows, feature.dim, l2, feature.decay, name=f"embedding_{feature.name}")


def encode_features(features: list[FeatureInput], inputs: dict[str, keras.Input],
                    l2: float = 0.0) -> tuple[tf.Tensor, dict]:
    """Concatenates embeddings of categorical inputs (L2-regularised by `l2`) and the numeric inputs.

    Returns:
        (encoded [batch, sum of dims + numeric count], {feature name: its CategoricalEmbedding}).
    """
    parts, layers = [], {}
    for feature in features:
        if feature.embedded:
            layers[feature.name] = embedding_layer(feature, l2)
            parts.append(layers[feature.name](inputs[feature.name]))
        else:
            parts.append(keras.layers.Reshape((1,), name=f"column_{feature.name}")(inputs[feature.name]))
    encoded = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="concat_features")(parts)
    return encoded, layers
