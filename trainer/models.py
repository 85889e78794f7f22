"""The model kinds: supervised (embeddings inside a regression/classification net) and two-tower."""
from __future__ import annotations

import contextlib
from typing import Iterable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.core.config import ModelConfig
from trainer.inputs import FeatureInput
from trainer.interactions import Interactions, candidate_batch
from trainer.layers import encode_features, model_input
from trainer.losses import full_softmax_loss, in_batch_softmax_loss
from trainer.sequence import PADDING, SequenceEncoder

HISTORY = "_history"  # query tower input: the query's training candidates (token ids, or a padded sequence)
TOP_K = 10  # the validation metrics are HR@TOP_K and NDCG@TOP_K


def make_optimizer(model: ModelConfig) -> keras.optimizers.Optimizer:
    kinds = {"adam": keras.optimizers.Adam, "adagrad": keras.optimizers.Adagrad, "sgd": keras.optimizers.SGD}
    return kinds[model.optimizer](learning_rate=model.learning_rate)


def class_counts(labels: Iterable[tf.Tensor], num_classes: int) -> np.ndarray:
    """Training rows of each class [num_classes] from batches of class ids [batch] (int64; ids
    outside [0, num_classes) are skipped)."""
    counts = np.zeros(num_classes, np.int64)
    for batch in labels:
        ids = batch.numpy()
        counts += np.bincount(ids[(ids >= 0) & (ids < num_classes)], minlength=num_classes)
    return counts


def label_mean(labels: Iterable[tf.Tensor]) -> np.ndarray:
    """Where a regression's output layer starts: the training labels' mean [1] (float32), from
    batches of targets [batch], so that the first steps are spent on how the label varies, not on
    its level. Starting at 0 with a label far from it (log seconds: about 6.5), every embedding
    first moves the same way at the full learning rate, and a rare row's vector keeps that shared
    offset, which hides what it learned later from cosine neighbours."""
    total, count = 0.0, 0
    for batch in labels:
        values = batch.numpy().astype(np.float64)
        total, count = total + values.sum(), count + len(values)
    return np.array([total / count if count else 0.0], np.float32)


def class_log_shares(counts: np.ndarray) -> np.ndarray:
    """Where a classifier's output layer starts, for the reason of `label_mean`: the log of each
    class's share of the training rows, add-one smoothed, [num_classes] (float32) from the rows
    per class [num_classes] (`class_counts`)."""
    return np.log((counts + 1) / (counts.sum() + len(counts))).astype(np.float32)


def build_supervised(model: ModelConfig, features: list[FeatureInput], num_classes: int = 0,
                     output_bias: np.ndarray | None = None) -> keras.Model:
    """Embeddings of every categorical feature + numeric columns -> hidden layers -> the label.

    Args:
        model: the model config (hidden units, L2).
        features: the inputs.
        num_classes: 0 for a regression.
        output_bias: the output layer's starting bias [1] or [num_classes] (`label_mean` or `class_log_shares`);
            None starts at 0.

    Returns:
        An uncompiled model: dict of transformed features -> predictions [batch] (regression) or
        logits [batch, num_classes] (classification, num_classes > 0).
    """
    inputs = {f.name: model_input(f) for f in features}
    x, _ = encode_features(features, inputs, model.l2)
    for index, units in enumerate(model.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")(x)
    start = "zeros" if output_bias is None else keras.initializers.Constant(output_bias)
    if num_classes:
        output = keras.layers.Dense(num_classes, bias_initializer=start, name="logits")(x)
    else:
        output = keras.layers.Reshape((), name="prediction")(
            keras.layers.Dense(1, bias_initializer=start, name="output")(x))
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
                l2: float = 0.0, sequence: SequenceEncoder | None = None) -> keras.Model:
    """Features (and the `HISTORY` sequence when `sequence` encodes it) -> one vector [batch, output_dim].

    With one embedded feature of `output_dim` and no hidden layers the tower is that embedding
    (plain matrix factorisation); otherwise hidden layers and a linear projection follow the concat.
    """
    inputs = {f.name: model_input(f) for f in features}
    x, _ = encode_features(features, inputs, l2)
    if sequence is not None:
        inputs[HISTORY] = keras.Input(shape=(sequence.length,), dtype=tf.int64, name=HISTORY)
        x = keras.layers.Concatenate(name=f"{name}_concat_history")([x, sequence(inputs[HISTORY])])
    for index, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{name}_hidden_{index}")(x)
    if hidden_units or x.shape[-1] != output_dim:
        x = keras.layers.Dense(output_dim, use_bias=False, name=f"{name}_projection")(x)
    return keras.Model(inputs, x, name=f"{name}_tower")


class TwoTowerModel(keras.Model):
    """Query and candidate towers trained so that dot(query, candidate) ranks candidates.

    Validation (`test_step`) reports the loss and, as TensorFlow Recommenders' FactorizedTopK
    does, HR@10 and NDCG@10 of each eval row's candidate ranked against the whole training
    catalogue by dot product, the query's other training candidates excluded (Keras logs them as
    `val_hr@10`, `val_ndcg@10`). A candidate never seen in training counts as a miss.

    Args:
        query_tower: query features (and `HISTORY` when the config asks for it) -> [batch, dim].
        candidate_tower: candidate features -> [batch, dim].
        model: the model config (ids, temperature, softmax, correction, history, seed).
        interactions: the training pass: candidate frequencies (logQ correction), every candidate's
            features (catalogue), each query's training candidates (history, exclusions).
    """

    def __init__(self, query_tower: keras.Model, candidate_tower: keras.Model, model: ModelConfig,
                 interactions: Interactions, **kwargs):
        super().__init__(**kwargs)
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.query_id, self.candidate_id = model.query[0], model.candidate[0]
        self.temperature = model.temperature
        self.full_softmax = model.softmax == "full"
        self.candidate_log_prob = (tf.constant(interactions.log_frequency(), tf.float32)
                                   if model.sampling_correction else None)
        ids = interactions.catalog_ids()
        positions = np.full(len(interactions.counts), -1, np.int64)
        positions[ids] = np.arange(len(ids))
        self.catalog = candidate_batch(interactions.features, ids.tolist())
        self.catalog_positions = tf.constant(positions)
        num_queries = query_tower.get_layer(f"embedding_{self.query_id}").num_rows
        # Catalogue positions of each query's training candidates [queries, (items)]: constants, not
        # variables, so that they stay out of checkpoints and the export (only validation uses them).
        seen = [sorted(positions[list(interactions.seen.get(query, ()))].tolist()) for query in range(num_queries)]
        self.seen = tf.RaggedTensor.from_row_lengths(tf.constant([p for row in seen for p in row], tf.int64),
                                                     tf.constant([len(row) for row in seen], tf.int64))
        self.history_length, self.history_order = model.tower_history, model.history_order
        self.sequential = model.tower_history and model.query_encoder == "attention"
        self.history_table = self.history_times = None
        if model.tower_history:
            # Variables, not graph constants, so a large history does not bloat the exported graph.
            items, times = interactions.history(num_queries, model.tower_history, model.seed)
            self.history_table = (tf.Variable(items.values, trainable=False, name="history_values"),
                                  tf.Variable(items.row_splits, trainable=False, name="history_row_splits"))
            if model.history_order:
                self.history_times = tf.Variable(times.values, trainable=False, name="history_times")
                self.history_search_steps = int(max(items.row_lengths().numpy(), default=0)).bit_length()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # The metrics' results are already synchronised across replicas; tf_keras' default ("auto",
        # summing replicas' results) logged N times the value with N workers.
        self.distribute_reduction_method = "first"
        self.hit_rate = keras.metrics.Mean(name=f"hr@{TOP_K}")
        self.ndcg = keras.metrics.Mean(name=f"ndcg@{TOP_K}")

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.hit_rate, self.ndcg]

    def query(self, features: dict, training: bool = False, exclude: tf.Tensor | None = None) -> tf.Tensor:
        """Query vectors [batch, dim].

        With a history, each row sees its query's latest `query_history` training candidates:
        those before the row's own order value when the batch has one (a training or eval row),
        all of them otherwise (serving). Without an order feature, `exclude` [batch] removes each
        row's own candidate instead. The mean encoder reads them as token ids [batch, (items)],
        the attention encoder as a right-aligned sequence [batch, query_history] (`history_sequence`).
        """
        inputs = {k: features[k] for k in self.query_tower.input_names if k != HISTORY}
        if self.history_table is not None:
            items = self._history(features, exclude)
            inputs[HISTORY] = self.history_sequence(items) if self.sequential else items.to_sparse()
        return self.query_tower(inputs, training=training)

    def _history(self, features: dict, exclude: tf.Tensor | None) -> tf.RaggedTensor:
        values, splits = self.history_table
        queries = features[self.query_id]
        if self.history_times is None and exclude is not None:
            items = tf.gather(tf.RaggedTensor.from_row_splits(values, splits), queries)
            items = tf.ragged.boolean_mask(items, tf.not_equal(items, tf.expand_dims(exclude, 1)))
            lengths = items.row_lengths()
            latest = tf.ragged.range(lengths) >= tf.expand_dims(lengths - self.history_length, 1)
            return tf.ragged.boolean_mask(items, latest)
        starts, ends = tf.gather(splits, queries), tf.gather(splits, queries + 1)       # [batch]
        if self.history_times is not None and self.history_order in features:
            ends = self._first_at_or_after(starts, ends, tf.cast(features[self.history_order], tf.float32))
        positions = tf.ragged.range(tf.maximum(ends - self.history_length, starts), ends)
        return positions.with_flat_values(tf.gather(values, positions.flat_values))

    def _first_at_or_after(self, starts: tf.Tensor, ends: tf.Tensor, now: tf.Tensor) -> tf.Tensor:
        """Binary search of each row's query's stored times (oldest first) for the row's own time.

        Args:
            starts, ends: bounds of each row's query's items in the stored values [batch].
            now: each row's order value [batch].

        Returns:
            Index of the first stored item at or after `now` [batch]: the items before the row are
            [starts, result). Gathering every stored time of every row instead took 40% of a
            training step on MovieLens.
        """
        last = tf.size(self.history_times, out_type=starts.dtype) - 1
        for _ in range(self.history_search_steps):
            middle = (starts + ends) // 2
            before = tf.logical_and(middle < ends, tf.gather(self.history_times, tf.minimum(middle, last)) < now)
            starts = tf.where(before, middle + 1, starts)
            ends = tf.where(before, ends, middle)
        return starts

    def history_sequence(self, items: tf.RaggedTensor) -> tf.Tensor:
        """Items [batch, (<= query_history)], oldest first -> [batch, query_history], right-aligned
        (the latest item last) behind `PADDING`, so that positions count back from the latest."""
        rows = items.value_rowids()
        starts = tf.gather(self.history_length - items.row_lengths(), rows)
        columns = starts + tf.range(tf.size(items.values, tf.int64)) - tf.gather(items.row_starts(), rows)
        padded = tf.fill(tf.stack([items.nrows(), tf.constant(self.history_length, tf.int64)]),
                         tf.constant(PADDING, tf.int64))
        return tf.tensor_scatter_nd_update(padded, tf.stack([rows, columns], axis=1), items.values)

    def candidate(self, features: dict, training: bool = False) -> tf.Tensor:
        """Candidate vectors [batch, dim]."""
        return self.candidate_tower({k: features[k] for k in self.candidate_tower.input_names}, training=training)

    def call(self, features: dict, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        return self.query(features, training), self.candidate(features, training)

    def compute_batch_loss(self, features: dict, training: bool, query: tf.Tensor | None = None) -> tf.Tensor:
        """Mean softmax cross-entropy of the batch (`query` [batch, dim]: the batch's query vectors, if
        already computed)."""
        ids = features[self.candidate_id]
        if query is None:
            query = self.batch_query(features, training)
        if self.full_softmax:
            # Eval rows whose candidate never appeared in training have no catalogue row to aim at.
            positions = tf.gather(self.catalog_positions, ids)
            known = positions >= 0
            return full_softmax_loss(tf.boolean_mask(query, known), self.candidate(self.catalog, training),
                                     tf.boolean_mask(positions, known), self.temperature)
        log_prob = None if self.candidate_log_prob is None else tf.gather(self.candidate_log_prob, ids)
        candidate, ids, log_prob, positives = _gather_replicas(self.candidate(features, training), ids, log_prob)
        return in_batch_softmax_loss(query, candidate, ids, self.temperature, log_prob, positives)

    def batch_query(self, features: dict, training: bool) -> tf.Tensor:
        """Query vectors [batch, dim] of training or eval rows."""
        # The row's own candidate is what the query must find; seeing it in the history would leak it.
        return self.query(features, training, exclude=features[self.candidate_id])

    def ranks(self, query: tf.Tensor, features: dict) -> tf.Tensor:
        """0-based rank of each row's candidate among the catalogue by dot product, the query's other
        training candidates excluded; infinity for a candidate not in the catalogue.

        Args:
            query: query vectors [batch, dim].
            features: the batch (query and candidate ids [batch]).

        Returns:
            Ranks [batch] (float32).
        """
        scores = tf.matmul(query, self.candidate(self.catalog), transpose_b=True)         # [batch, catalogue]
        positions = tf.gather(self.catalog_positions, features[self.candidate_id])         # [batch]
        target = tf.gather(scores, tf.maximum(positions, 0), batch_dims=1)                 # [batch]
        seen = tf.gather(self.seen, features[self.query_id])                               # [batch, (items)]
        seen = tf.ragged.boolean_mask(seen, tf.not_equal(seen, tf.expand_dims(positions, 1)))
        scores = tf.tensor_scatter_nd_update(scores, tf.stack([seen.value_rowids(), seen.values], axis=1),
                                             tf.fill(tf.shape(seen.values), tf.constant(-np.inf, scores.dtype)))
        ranks = tf.reduce_sum(tf.cast(scores > tf.expand_dims(target, 1), tf.float32), axis=1)
        return tf.where(positions >= 0, ranks, np.inf)

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
        query = self.batch_query(features, training=False)
        self.loss_tracker.update_state(self.compute_batch_loss(features, training=False, query=query))
        ranks = self.ranks(query, features)
        hits = ranks < TOP_K
        self.hit_rate.update_state(tf.cast(hits, tf.float32))
        self.ndcg.update_state(tf.where(hits, 1.0 / (tf.math.log(ranks + 2.0) / np.log(2.0)), 0.0))
        return {m.name: m.result() for m in self.metrics}


def _gather_replicas(candidate: tf.Tensor, ids: tf.Tensor, log_prob: tf.Tensor | None
                     ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
    """Every replica's candidates as the negatives of this replica's queries, so N workers train on
    the negatives one worker would see with the same global batch.

    Args:
        candidate: this replica's candidate vectors [local, dim].
        ids: their ids [local].
        log_prob: their log sampling probabilities [local], or None.

    Returns:
        (candidates [global, dim], ids [global], log_prob [global] or None, the column of each local
        row's own candidate [local] or None when there is one replica). Gradients flow back to the
        replica that computed each candidate (`all_gather`'s gradient).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return candidate, ids, log_prob, None
    devices = context.strategy.extended.worker_devices
    # A collective gathers onto its input's device; a worker with one device leaves its tensors unplaced.
    with tf.device(devices[0]) if len(devices) == 1 else contextlib.nullcontext():
        local = tf.shape(candidate)[0]
        sizes = context.all_gather(tf.expand_dims(tf.identity(local), 0), axis=0)         # [replicas]
        offset = tf.reduce_sum(sizes[:context.replica_id_in_sync_group])
        candidate = context.all_gather(tf.identity(candidate), axis=0)
        ids = context.all_gather(tf.identity(ids), axis=0)
        if log_prob is not None:
            log_prob = context.all_gather(tf.identity(log_prob), axis=0)
    return candidate, ids, log_prob, offset + tf.range(local)


def build_two_tower(model: ModelConfig, features: dict[str, FeatureInput], interactions: Interactions) -> TwoTowerModel:
    """Towers from the configured features; the query tower also reads the history when asked (its
    own item table, the mean of the items or the attention encoder's summary of them)."""
    query_features = [features[f] for f in model.query]
    candidates = features[model.candidate[0]]
    sequence = None
    if model.tower_history and model.query_encoder == "attention":
        sequence = SequenceEncoder(candidates.num_rows, model.embedding_dim, model.tower_history,
                                   model.attention_blocks, model.attention_heads, model.attention_dropout, model.l2,
                                   table_name=f"embedding_{HISTORY}", name="history_encoder")
    elif model.tower_history:
        query_features.append(FeatureInput(HISTORY, "token_ids", candidates.num_rows, model.embedding_dim,
                                           model.history_decay))
    towers = {"query": build_tower("query", query_features, model.embedding_dim, model.hidden_units, model.l2, sequence),
              "candidate": build_tower("candidate", [features[f] for f in model.candidate], model.embedding_dim,
                                       model.hidden_units, model.l2)}
    return TwoTowerModel(towers["query"], towers["candidate"], model, interactions, name="two_tower")
