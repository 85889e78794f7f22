"""The model kinds: supervised (embeddings inside a regression/classification net) and two-tower."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.config import ModelConfig
from trainer.inputs import FeatureInput
from trainer.layers import encode_features, model_input
from trainer.losses import in_batch_softmax_loss


def make_optimizer(model: ModelConfig) -> keras.optimizers.Optimizer:
    kinds = {"adam": keras.optimizers.Adam, "adagrad": keras.optimizers.Adagrad, "sgd": keras.optimizers.SGD}
    return kinds[model.optimizer](learning_rate=model.learning_rate)


def build_supervised(model: ModelConfig, features: list[FeatureInput], num_classes: int = 0) -> keras.Model:
    """Embeddings of every categorical feature + numeric columns -> hidden layers -> the label.

    Returns:
        A compiled model: dict of transformed features -> predictions [batch] (regression) or
        logits [batch, num_classes] (classification, num_classes > 0).
    """
    inputs = {f.name: model_input(f) for f in features}
    x, _ = encode_features(features, inputs)
    for index, units in enumerate(model.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")(x)
    if num_classes:
        output = keras.layers.Dense(num_classes, name="logits")(x)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        output = keras.layers.Reshape((), name="prediction")(keras.layers.Dense(1, name="output")(x))
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.RootMeanSquaredError(name="rmse")]
    net = keras.Model(inputs, output, name="supervised")
    net.compile(optimizer=make_optimizer(model), loss=loss, metrics=metrics)
    return net


def build_tower(name: str, features: list[FeatureInput], output_dim: int, hidden_units: tuple[int, ...]) -> keras.Model:
    """Features -> one vector [batch, output_dim].

    With one embedded feature of `output_dim` and no hidden layers the tower is that embedding
    (plain matrix factorisation); otherwise hidden layers and a linear projection follow the concat.
    """
    inputs = {f.name: model_input(f) for f in features}
    x, _ = encode_features(features, inputs)
    for index, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{name}_hidden_{index}")(x)
    if hidden_units or x.shape[-1] != output_dim:
        x = keras.layers.Dense(output_dim, use_bias=False, name=f"{name}_projection")(x)
    return keras.Model(inputs, x, name=f"{name}_tower")


class TwoTowerModel(keras.Model):
    """Query and candidate towers trained so that dot(query, candidate) ranks candidates.

    Args:
        query_tower: features -> [batch, dim].
        candidate_tower: features -> [batch, dim].
        candidate_id: name of the candidate id feature (for accidental-hit masking).
        temperature: softmax temperature.
        candidate_log_prob: log frequency of each candidate id in training [num_candidates], or None.
    """

    def __init__(self, query_tower: keras.Model, candidate_tower: keras.Model, candidate_id: str,
                 temperature: float, candidate_log_prob: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.candidate_id = candidate_id
        self.temperature = temperature
        self.candidate_log_prob = (None if candidate_log_prob is None else
                                   tf.constant(candidate_log_prob, tf.float32, name="candidate_log_prob"))
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self) -> list:
        return [self.loss_tracker]

    def call(self, features: dict, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        query = self.query_tower({k: features[k] for k in self.query_tower.input_names}, training=training)
        candidate = self.candidate_tower({k: features[k] for k in self.candidate_tower.input_names},
                                         training=training)
        return query, candidate

    def compute_batch_loss(self, features: dict, training: bool) -> tf.Tensor:
        query, candidate = self(features, training=training)
        ids = features[self.candidate_id]
        log_prob = None if self.candidate_log_prob is None else tf.gather(self.candidate_log_prob, ids)
        return in_batch_softmax_loss(query, candidate, ids, self.temperature, log_prob)

    def train_step(self, features: dict) -> dict:
        with tf.GradientTape() as tape:
            loss = self.compute_batch_loss(features, training=True)
            # Replicas' gradients are summed, so each replica contributes its share of the mean.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, features: dict) -> dict:
        self.loss_tracker.update_state(self.compute_batch_loss(features, training=False))
        return {"loss": self.loss_tracker.result()}


def build_two_tower(model: ModelConfig, features: dict[str, FeatureInput],
                    candidate_log_prob: np.ndarray | None) -> TwoTowerModel:
    towers = {name: build_tower(name, [features[f] for f in getattr(model, name)], model.embedding_dim,
                                model.hidden_units) for name in ("query", "candidate")}
    net = TwoTowerModel(towers["query"], towers["candidate"], model.candidate[0], model.temperature,
                        candidate_log_prob if model.sampling_correction else None, name="two_tower")
    net.compile(optimizer=make_optimizer(model))
    return net
