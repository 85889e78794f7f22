"""The model kinds: supervised (embeddings inside a regression/classification net) and two-tower."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.core.config import ModelConfig
from trainer.inputs import FeatureInput
from trainer.interactions import Interactions, candidate_batch
from trainer.layers import encode_features, model_input
from trainer.losses import full_softmax_loss, in_batch_softmax_loss

HISTORY = "_history"  # query tower input: the query's training candidates (token ids)


def make_optimizer(model: ModelConfig) -> keras.optimizers.Optimizer:
    kinds = {"adam": keras.optimizers.Adam, "adagrad": keras.optimizers.Adagrad, "sgd": keras.optimizers.SGD}
    return kinds[model.optimizer](learning_rate=model.learning_rate)


def build_supervised(model: ModelConfig, features: list[FeatureInput], num_classes: int = 0) -> keras.Model:
    """Embeddings of every categorical feature + numeric columns -> hidden layers -> the label.

    Returns:
        An uncompiled model: dict of transformed features -> predictions [batch] (regression) or
        logits [batch, num_classes] (classification, num_classes > 0).
    """
    inputs = {f.name: model_input(f) for f in features}
    x, _ = encode_features(features, inputs, model.l2)
    for index, units in enumerate(model.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")(x)
    if num_classes:
        output = keras.layers.Dense(num_classes, name="logits")(x)
    else:
        output = keras.layers.Reshape((), name="prediction")(keras.layers.Dense(1, name="output")(x))
    return keras.Model(inputs, output, name="supervised")


def compile_model(net: keras.Model, model: ModelConfig) -> None:
    """Compiles after any warm start, so layers frozen by it are left out of training."""
    if model.kind != "supervised":  # two-tower and skip-gram compute their own loss
        net.compile(optimizer=make_optimizer(model))
    elif len(net.output_shape) == 2:  # logits [batch, classes]
        net.compile(optimizer=make_optimizer(model), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    else:
        net.compile(optimizer=make_optimizer(model), loss=keras.losses.MeanSquaredError(),
                    metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])


def build_tower(name: str, features: list[FeatureInput], output_dim: int, hidden_units: tuple[int, ...],
                l2: float = 0.0) -> keras.Model:
    """Features -> one vector [batch, output_dim].

    With one embedded feature of `output_dim` and no hidden layers the tower is that embedding
    (plain matrix factorisation); otherwise hidden layers and a linear projection follow the concat.
    """
    inputs = {f.name: model_input(f) for f in features}
    x, _ = encode_features(features, inputs, l2)
    for index, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{name}_hidden_{index}")(x)
    if hidden_units or x.shape[-1] != output_dim:
        x = keras.layers.Dense(output_dim, use_bias=False, name=f"{name}_projection")(x)
    return keras.Model(inputs, x, name=f"{name}_tower")


class TwoTowerModel(keras.Model):
    """Query and candidate towers trained so that dot(query, candidate) ranks candidates.

    Args:
        query_tower: query features (and `HISTORY` when the config asks for it) -> [batch, dim].
        candidate_tower: candidate features -> [batch, dim].
        model: the model config (ids, temperature, softmax, correction, history length, seed).
        interactions: the training pass: candidate frequencies (logQ correction), every candidate's
            features (exact softmax) and each query's training candidates (history).
    """

    def __init__(self, query_tower: keras.Model, candidate_tower: keras.Model, model: ModelConfig,
                 interactions: Interactions, **kwargs):
        super().__init__(**kwargs)
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.query_id, self.candidate_id = model.query[0], model.candidate[0]
        self.temperature = model.temperature
        self.candidate_log_prob = (tf.constant(interactions.log_frequency(), tf.float32)
                                   if model.sampling_correction else None)
        self.catalog = None
        if model.softmax == "full":
            ids = interactions.catalog_ids()
            positions = np.full(len(interactions.counts), -1, np.int64)
            positions[ids] = np.arange(len(ids))
            self.catalog = candidate_batch(interactions.features, ids.tolist())
            self.catalog_positions = tf.constant(positions)
        self.history_length, self.history_order = model.query_history, model.history_order
        self.history_table = self.history_times = None
        if model.query_history:
            # Variables, not graph constants, so a large history does not bloat the exported graph.
            items, times = interactions.history(query_tower.get_layer(f"embedding_{self.query_id}").num_rows,
                                                model.query_history, model.seed)
            self.history_table = (tf.Variable(items.values, trainable=False, name="history_values"),
                                  tf.Variable(items.row_splits, trainable=False, name="history_row_splits"))
            if model.history_order:
                self.history_times = tf.Variable(times.values, trainable=False, name="history_times")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self) -> list:
        return [self.loss_tracker]

    def query(self, features: dict, training: bool = False, exclude: tf.Tensor | None = None) -> tf.Tensor:
        """Query vectors [batch, dim].

        With a history, each row sees its query's latest `query_history` training candidates:
        those before the row's own order value when the batch has one (a training or eval row),
        all of them otherwise (serving). Without an order feature, `exclude` [batch] removes each
        row's own candidate instead.
        """
        inputs = {k: features[k] for k in self.query_tower.input_names if k != HISTORY}
        if self.history_table is not None:
            inputs[HISTORY] = self._history(features, exclude).to_sparse()
        return self.query_tower(inputs, training=training)

    def _history(self, features: dict, exclude: tf.Tensor | None) -> tf.RaggedTensor:
        values, splits = self.history_table
        queries = features[self.query_id]
        items = tf.gather(tf.RaggedTensor.from_row_splits(values, splits), queries)
        if self.history_times is not None:
            if self.history_order in features:
                times = tf.gather(tf.RaggedTensor.from_row_splits(self.history_times, splits), queries)
                now = tf.expand_dims(tf.cast(features[self.history_order], tf.float32), 1)
                items = tf.ragged.boolean_mask(items, times < now)
        elif exclude is not None:
            items = tf.ragged.boolean_mask(items, tf.not_equal(items, tf.expand_dims(exclude, 1)))
        lengths = items.row_lengths()
        latest = tf.ragged.range(lengths) >= tf.expand_dims(lengths - self.history_length, 1)
        return tf.ragged.boolean_mask(items, latest)

    def candidate(self, features: dict, training: bool = False) -> tf.Tensor:
        """Candidate vectors [batch, dim]."""
        return self.candidate_tower({k: features[k] for k in self.candidate_tower.input_names}, training=training)

    def call(self, features: dict, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        return self.query(features, training), self.candidate(features, training)

    def compute_batch_loss(self, features: dict, training: bool) -> tf.Tensor:
        ids = features[self.candidate_id]
        # The row's own candidate is what the query must find; seeing it in the history would leak it.
        query = self.query(features, training, exclude=ids)
        if self.catalog is not None:
            # Eval rows whose candidate never appeared in training have no catalogue row to aim at.
            positions = tf.gather(self.catalog_positions, ids)
            known = positions >= 0
            return full_softmax_loss(tf.boolean_mask(query, known), self.candidate(self.catalog, training),
                                     tf.boolean_mask(positions, known), self.temperature)
        log_prob = None if self.candidate_log_prob is None else tf.gather(self.candidate_log_prob, ids)
        return in_batch_softmax_loss(query, self.candidate(features, training), ids, self.temperature, log_prob)

    def train_step(self, features: dict) -> dict:
        with tf.GradientTape() as tape:
            loss = self.compute_batch_loss(features, training=True)
            regularization = tf.add_n(self.losses) if self.losses else 0.0
            # Replicas' gradients are summed, so each replica contributes its share of the mean.
            scaled = (loss + regularization) / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, features: dict) -> dict:
        self.loss_tracker.update_state(self.compute_batch_loss(features, training=False))
        return {"loss": self.loss_tracker.result()}


def build_two_tower(model: ModelConfig, features: dict[str, FeatureInput], interactions: Interactions) -> TwoTowerModel:
    """Towers from the configured features (the query tower also reads the history when asked)."""
    query_features = [features[f] for f in model.query]
    if model.query_history:
        candidates = features[model.candidate[0]]
        query_features.append(FeatureInput(HISTORY, "token_ids", candidates.num_rows, model.embedding_dim))
    towers = {"query": build_tower("query", query_features, model.embedding_dim, model.hidden_units, model.l2),
              "candidate": build_tower("candidate", [features[f] for f in model.candidate], model.embedding_dim,
                                       model.hidden_units, model.l2)}
    return TwoTowerModel(towers["query"], towers["candidate"], model, interactions, name="two_tower")
