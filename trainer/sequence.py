"""The attention query encoder of the two-tower model (`model.query_encoder: attention`).

SASRec's recipe (Kang & McAuley, 2018): item embeddings plus learned positional embeddings, causal
self-attention blocks (pre-layer-norm, a position-wise feed-forward layer, residual connections,
dropout), the output at the latest position as the summary of what the query did so far.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from trainer.layers import CategoricalEmbedding

PADDING = -1  # the id of an empty history position


def attention_mask(ids: tf.Tensor) -> tf.Tensor:
    """Which position each position may attend to: itself and earlier positions that hold an item.

    Args:
        ids: item ids [batch, length], `PADDING` where there is none.

    Returns:
        [batch, length (attending), length (attended)] bool.
    """
    length = tf.shape(ids)[1]
    causal = tf.linalg.band_part(tf.ones(tf.stack([length, length]), tf.bool), -1, 0)
    return tf.logical_and(causal[tf.newaxis], tf.not_equal(ids, PADDING)[:, tf.newaxis, :])


class TransformerBlock(keras.layers.Layer):
    """Pre-layer-norm self-attention and feed-forward sub-layers, each with a residual connection.

    Args:
        dim: model width (= embedding dimension).
        heads: attention heads (dim is split between them).
        dropout: dropout rate of the attention probabilities and of each sub-layer's output.
    """

    def __init__(self, dim: int, heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.rate = dim, heads, dropout
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(heads, max(dim // heads, 1), dropout=dropout,
                                                         name="attention")
        self.feed_forward_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="feed_forward_norm")
        self.hidden = keras.layers.Dense(dim, activation="relu", name="feed_forward_hidden")
        self.output_layer = keras.layers.Dense(dim, name="feed_forward_output")
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, queries: tf.Tensor, keys: tf.Tensor, mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Updates `queries` attending over `keys`.

        Args:
            queries: positions to update [batch, targets, dim].
            keys: positions attended to [batch, length, dim].
            mask: which key each target may see [batch, targets, length] (bool).

        Returns:
            The updated positions [batch, targets, dim].
        """
        attended = self.attention(self.attention_norm(queries), self.attention_norm(keys), attention_mask=mask,
                                  training=training)
        x = queries + self.dropout(attended, training=training)
        hidden = self.dropout(self.hidden(self.feed_forward_norm(x)), training=training)
        return x + self.dropout(self.output_layer(hidden), training=training)

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "dropout": self.rate}


class SequenceEncoder(keras.layers.Layer):
    """Causal self-attention over a query's latest items; the latest position's output.

    Input: item ids [batch, length] (int64), right-aligned: the latest item at position
    length - 1, `PADDING` (-1) in front when a query has fewer than `length` items.
    Output: [batch, dim]; zeros for a row without items.

    Position p attends only to positions <= p that hold an item (causal and padding masks), so a
    position never sees what came after it. Only the last position's output is returned, so the
    last block computes that position alone (the earlier blocks compute every position, which the
    last one attends to): with one block the cost grows with `length`, not its square.

    Args:
        num_items: rows of the item table (the candidate id vocabulary).
        dim: item and output dimension.
        length: positions (the configured `query_history`).
        blocks: transformer blocks (>= 1).
        heads: attention heads.
        dropout: dropout rate of the attention and of the sub-layers' outputs. Not of the input
            embeddings, SASRec's third place for it: its random draws over [batch, length, dim]
            took a third of the encoder's forward pass here (6 of 18 ms for 512 x 50 x 64).
        l2: L2 penalty on the item vectors the batch uses (as `CategoricalEmbedding`).
        table_name: name of the item table layer (`embedding_<name>`, found by `embedding_layers`).
    """

    def __init__(self, num_items: int, dim: int, length: int, blocks: int, heads: int, dropout: float,
                 l2: float = 0.0, table_name: str = "embedding__history", **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.dim, self.length, self.l2, self.table_name = num_items, dim, length, l2, table_name
        self.num_blocks, self.heads, self.rate = blocks, heads, dropout
        # The penalty is added here, over real items only: padded positions look up row 0.
        self.items = CategoricalEmbedding(num_items, dim, 0.0, name=table_name)
        self.blocks = [TransformerBlock(dim, heads, dropout, name=f"block_{index}") for index in range(blocks)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")

    def build(self, input_shape) -> None:
        self.positions = self.add_weight(name="positions", shape=(self.length, self.dim),
                                         initializer=keras.initializers.RandomNormal(stddev=self.dim ** -0.5))
        super().build(input_shape)

    def call(self, ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        valid = tf.not_equal(ids, PADDING)                                        # [batch, length]
        weights = tf.cast(valid, tf.float32)[..., tf.newaxis]                     # [batch, length, 1]
        vectors = self.items(tf.where(valid, ids, tf.zeros_like(ids)))            # [batch, length, dim]
        if self.l2:
            squares = tf.reduce_sum(tf.square(vectors), axis=-1, keepdims=True) * weights
            self.add_loss(self.l2 * tf.reduce_sum(squares) / tf.maximum(tf.reduce_sum(weights), 1.0))
        x = (vectors + self.positions) * weights
        mask = attention_mask(ids)
        for block in self.blocks[:-1]:
            x = block(x, x, mask, training=training) * weights
        latest = self.blocks[-1](x[:, -1:], x, mask[:, -1:], training=training)[:, 0]      # [batch, dim]
        return self.final_norm(latest) * weights[:, -1]

    def get_config(self) -> dict:
        return {**super().get_config(), "num_items": self.num_items, "dim": self.dim, "length": self.length,
                "blocks": self.num_blocks, "heads": self.heads, "dropout": self.rate, "l2": self.l2,
                "table_name": self.table_name}
