"""Stage 2: fit the configured model on a run's TFRecords, evaluate it, export it.

Outputs, published into the run when training succeeded:
    model/export/       SavedModel serving raw features (see trainer/export.py)
    model/checkpoints/  weights after every epoch
    model/logs/         TensorBoard logs
    metrics.json        eval metrics and same-run baselines
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from pipelines.config import Config, config_from_dict
from pipelines.rundir import STAGE_OUTPUTS, RunDir
from trainer import evaluate
from trainer.export import export_model
from trainer.inputs import feature_inputs, make_dataset, split_pattern
from trainer.interactions import collect_interactions
from trainer.layers import CategoricalEmbedding
from trainer.models import build_supervised, build_two_tower, compile_model
from trainer.skipgram import (DOCUMENTS_PER_READ, SkipGramModel, keep_probabilities, steps_per_epoch, token_batches,
                              token_counts)
from trainer.warm_start import apply_warm_start
from transforms.preprocessing import LABEL_VOCABULARY

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in the training cluster `TF_CONFIG` describes (one chief without it)."""
    workers: int = 1
    type: str = "chief"
    index: int = 0
    has_chief: bool = False
    parameter_servers: int = 0

    @property
    def strategy(self) -> str:
        """`parameter_server` when the cluster has `ps` tasks, `multi_worker_mirrored` with more than one
        worker, else `default` (one device)."""
        if self.parameter_servers:
            return "parameter_server"
        return "multi_worker_mirrored" if self.workers > 1 else "default"

    @property
    def is_chief(self) -> bool:
        """The chief publishes; without a `chief` task in the cluster, worker 0 is the chief."""
        return self.type == "chief" or (self.type == "worker" and self.index == 0 and not self.has_chief)


def cluster_task() -> ClusterTask:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return ClusterTask(max(workers, 1), task.get("type", "chief"), int(task.get("index", 0)), "chief" in cluster,
                       len(cluster.get("ps", [])))


def serve_parameter_server_task() -> None:
    """Workers and parameter servers of a parameter-server cluster only serve the chief; never returns."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
                                  protocol=resolver.rpc_layer or "grpc", start=True)
    server.join()


def choose_strategy(task: ClusterTask) -> tf.distribute.Strategy:
    """The strategy `task.strategy` names; parameter servers hold the tables, sharded across them."""
    if task.strategy == "parameter_server":
        return tf.distribute.experimental.ParameterServerStrategy(
            tf.distribute.cluster_resolver.TFConfigClusterResolver(),
            variable_partitioner=tf.distribute.experimental.partitioners.MinSizePartitioner(
                min_shard_bytes=256 << 10, max_shards=task.parameter_servers))
    if task.strategy == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shards examples, not files, across workers: a run may have fewer data files than workers."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


class Trainer:
    """Trains one run's model; `job_dir` holds work files (backup for resuming, staging)."""

    def __init__(self, run: RunDir, job_dir: str | None = None):
        self.run = run
        manifest = run.read_manifest()
        if manifest.get("stages", {}).get("preprocess", {}).get("status") != "succeeded":
            raise RuntimeError(f"{run.path}: preprocess has not succeeded; run `embedpipe preprocess` first")
        self.config: Config = config_from_dict(manifest["config"])
        self.tft_output = tft.TFTransformOutput(run.transform_dir)
        self.inputs = feature_inputs(self.config, self.tft_output)
        # Not cleared: a rerun after an interruption resumes from the backup kept here.
        self.staging = job_dir or run.staging("train")
        tf.io.gfile.makedirs(self.staging)
        self.model_dir = os.path.join(self.staging, "model")

    def dataset(self, split: str, shuffle: bool = False, with_label: bool = True,
                batch_size: int | None = None) -> tf.data.Dataset:
        model = self.config.model
        spec = self.tft_output.transformed_feature_spec()
        label = self.config.label_column if with_label else None
        keep = set(self.inputs) | ({label} if label else set())
        return make_dataset(split_pattern(self.run.path, split), {k: v for k, v in spec.items() if k in keep},
                            batch_size or model.batch_size, label=label, shuffle=shuffle, seed=model.seed)

    def callbacks(self, parameter_servers: bool) -> list[keras.callbacks.Callback]:
        model = self.config.model
        # Parameter-server training supports neither backups nor validation (hence no early stopping).
        callbacks = [] if parameter_servers else [keras.callbacks.BackupAndRestore(os.path.join(self.staging, "backup"))]
        callbacks += [
            keras.callbacks.ModelCheckpoint(os.path.join(self.model_dir, "checkpoints", "epoch-{epoch:03d}"),
                                            save_weights_only=True),
            keras.callbacks.TensorBoard(os.path.join(self.model_dir, "logs"), embeddings_freq=0),
        ]
        if model.early_stopping_patience and not parameter_servers:
            # A two-tower model is judged by what it retrieves: its loss can rise while HR@10 still improves.
            monitor, mode = ("val_hr@10", "max") if model.kind == "two_tower" else ("val_loss", "min")
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=model.early_stopping_patience, restore_best_weights=True))
        return callbacks

    def build(self) -> tuple[keras.Model, Any]:
        """The (uncompiled) model and what evaluation needs from the training pass (two-tower)."""
        model = self.config.model
        if model.kind == "two_tower":
            interactions = collect_interactions(
                self.dataset("train", with_label=False), model.query[0], model.candidate[0], list(model.candidate),
                self.inputs[model.candidate[0]].num_rows, model.history_order)
            return build_two_tower(model, self.inputs, interactions), interactions
        if model.kind == "skipgram":
            feature = self.inputs[self.text_feature]
            counts = token_counts(self.dataset("train", with_label=False), feature.name,
                                  self.tft_output.vocabulary_size_by_name(feature.name))
            return SkipGramModel(feature, counts, model, name="skipgram"), counts
        classes = (self.tft_output.vocabulary_size_by_name(LABEL_VOCABULARY)
                   if model.task == "classification" else 0)
        return build_supervised(model, list(self.inputs.values()), classes), None

    @property
    def text_feature(self) -> str:
        return next(n for n, f in self.config.features.items() if f.type == "text")

    def fit_data(self, net: keras.Model, extra: Any) -> tuple[tf.data.Dataset, tf.data.Dataset, int | None]:
        """Training and validation data in the form the model kind trains on, and steps per epoch
        (None: one pass over the training data)."""
        model = self.config.model
        if model.kind == "skipgram":
            keep = keep_probabilities(extra, model.subsample)
            train, evaluation = (
                token_batches(self.dataset(split, shuffle=split == "train", with_label=False, batch_size=DOCUMENTS_PER_READ),
                              self.text_feature, len(extra), keep, model.batch_size, repeat=split == "train",
                              seed=model.seed)
                for split in ("train", "eval"))
            # Validation loss on the same (at most eval_max_examples) subsampled eval tokens every epoch:
            # comparable from epoch to epoch, and kept in memory instead of re-read from disk.
            evaluation = evaluation.take(-(-model.eval_max_examples // model.batch_size)).cache()
            return train, evaluation, steps_per_epoch(extra, keep, model.batch_size)
        if model.kind == "two_tower":
            # Ranked against the whole catalogue every epoch: capped, and kept in memory.
            validation = self.dataset("eval", with_label=False).take(-(-model.eval_max_examples // model.batch_size))
            return self.dataset("train", shuffle=True, with_label=False), validation.cache(), None
        return self.dataset("train", shuffle=True), self.dataset("eval"), None

    def evaluate(self, net: keras.Model, interactions: Any) -> dict[str, Any]:
        model = self.config.model
        if model.kind == "skipgram":
            return {"train_tokens": int(interactions.sum()), "vocabulary": int(len(interactions))}
        if model.kind == "two_tower":
            return evaluate.ranking_metrics(net, self.dataset("eval", with_label=False), interactions,
                                            model.eval_max_examples)
        if model.task == "classification":
            return evaluate.classification_metrics(net, self.dataset("train"), self.dataset("eval"))
        numeric = [f.name for f in self.inputs.values() if f.kind == "numeric"]
        return evaluate.regression_metrics(net, self.dataset("train"), self.dataset("eval"), numeric)

    def train(self) -> dict[str, Any]:
        model = self.config.model
        keras.utils.set_random_seed(model.seed)
        # Same seed, same data -> the same weights, so a rerun republishes the same vectors.
        tf.config.experimental.enable_op_determinism()
        task = cluster_task()
        strategy = choose_strategy(task)
        with strategy.scope():
            net, interactions = self.build()
            train, validation, steps = self.fit_data(net, interactions)
            if model.kind != "supervised":  # a subclassed model makes its weights in a first call
                net(next(iter(train.take(1))))
            warm_start = (apply_warm_start(self.config, embedding_layers(net), self.tft_output)
                          if self.config.warm_start else None)
            compile_model(net, model)
        parameter_servers = task.strategy == "parameter_server"
        if parameter_servers and steps is None:  # workers read a repeated stream, cut into epochs here
            rows = self.run.read_manifest()["stages"]["preprocess"]["counts"]["rows_train"]
            train, steps, validation = train.repeat(), -(-rows // model.batch_size), None
        started = time.time()
        history = net.fit(shard_by_data(train),
                          validation_data=None if validation is None else shard_by_data(validation),
                          epochs=model.epochs, steps_per_epoch=steps, callbacks=self.callbacks(parameter_servers),
                          verbose=2)
        fit_seconds = time.time() - started
        if not task.is_chief:
            # Every worker saves (saving may need all of them), a non-chief into a local scratch
            # directory: the chief publishes (and removes) the shared staging directory meanwhile.
            with tempfile.TemporaryDirectory(prefix=f"embedpipe-{task.type}-{task.index}-") as scratch:
                export_model(scratch, self.config, net, self.tft_output, embedding_layers(net))
            return {"fit_seconds": round(fit_seconds, 2)}
        metrics = self.evaluate(net, interactions)
        metrics["epochs_run"] = len(history.history["loss"])
        metrics["fit_seconds"] = round(fit_seconds, 2)
        if model.kind == "skipgram":
            metrics["words_per_second"] = metrics["train_tokens"] * metrics["epochs_run"] / fit_seconds
        metrics["workers"] = strategy.num_replicas_in_sync
        metrics["strategy"] = task.strategy
        if warm_start is not None:
            metrics["warm_start"] = {"from": self.config.warm_start.source, "features": warm_start}
        metrics["history"] = {k: [float(v) for v in values] for k, values in history.history.items()}
        export_model(os.path.join(self.model_dir, "export"), self.config, net, self.tft_output,
                     embedding_layers(net))
        with tf.io.gfile.GFile(os.path.join(self.staging, "metrics.json"), "w") as handle:
            json.dump(metrics, handle, indent=2)
        return metrics


def embedding_layers(model: keras.Model) -> dict[str, CategoricalEmbedding]:
    """Feature name -> its embedding layer, wherever it sits in the model (towers included)."""
    prefix = "embedding_"
    return {layer.name[len(prefix):]: layer for layer in model.submodules
            if isinstance(layer, CategoricalEmbedding) and layer.name.startswith(prefix)}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics worth a line in the manifest (no histories)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}


def train_run(run_path: str, job_dir: str | None = None) -> dict[str, Any]:
    """Trains, evaluates and exports the model of the run at `run_path`; returns its metrics."""
    task = cluster_task()
    if task.parameter_servers and task.type in ("worker", "ps"):
        serve_parameter_server_task()
    run = RunDir(run_path)
    trainer = Trainer(run, job_dir)
    logger.info("train: %s model, %d features -> %s", trainer.config.model.kind, len(trainer.inputs), run.path)
    if not task.is_chief:  # a worker of a cluster: trains its share, the chief records and publishes
        return trainer.train()
    with run.stage("train") as info:
        metrics = trainer.train()
        info["metrics"] = headline(metrics)
        if job_dir:
            for name in STAGE_OUTPUTS["train"]:  # a cloud job's work dir is copied, the run's own staging renamed
                _copy_tree(os.path.join(job_dir, name), os.path.join(run.staging("train"), name))
    logger.info("train: %s", json.dumps(headline(metrics)))
    return metrics


def _copy_tree(source: str, target: str) -> None:
    if not tf.io.gfile.isdir(source):
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.copy(source, target, overwrite=True)
        return
    for directory, _, files in tf.io.gfile.walk(source):
        relative = os.path.relpath(directory, source)
        tf.io.gfile.makedirs(os.path.join(target, relative))
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, relative, name), overwrite=True)
