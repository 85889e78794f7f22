"""Stage 2: fit the configured model on a run's TFRecords, evaluate it, export it.

Outputs, published into the run when training succeeded:
    model/export/       SavedModel serving raw features (see trainer/export.py)
    model/checkpoints/  weights after every epoch
    model/logs/         TensorBoard logs (gradient training)
    metrics.json        eval metrics and same-run baselines
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from pipelines.core import fs
from pipelines.core.config import Config
from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import UsageError
from pipelines.core.names import LABEL_VOCABULARY
from pipelines.core.rundir import STAGE_OUTPUTS, RunDir
from pipelines.core.warm_start import plan_warm_start
from trainer import evaluate
from trainer.als import fit_als
from trainer.cluster import ClusterTask, choose_strategy, cluster_task, serve_parameter_server_task, shard_by_data
from trainer.day_hour import day_hour_purity
from trainer.epochs import EpochState, fit_epochs, progress
from trainer.export import export_model
from trainer.inputs import SHUFFLE_BUFFER, epoch_seed, feature_inputs, make_dataset, row_shuffle_buffer
from trainer.interactions import collect_interactions
from trainer.layers import CategoricalEmbedding
from trainer.models import (build_supervised, build_two_tower, class_counts, class_log_shares, compile_model,
                            label_mean)
from trainer.skipgram import (DOCUMENTS_PER_READ, SkipGramModel, keep_probabilities, steps_per_epoch, token_batches,
                              token_counts)
from trainer.warm_start import apply_warm_start

logger = logging.getLogger(__name__)

OOV_WARNING_SHARE = 0.2
SCAN_BATCH = 4096  # rows a batch when a split is read for a few columns only (labels, ids)


@contextlib.contextmanager
def op_determinism() -> Iterator[None]:
    """Deterministic TensorFlow ops for the body only (same seed, same data -> the same weights).

    TensorFlow exports only the switch's `enable`; its `disable` is internal, so the stage that
    needs determinism turns it off again for whatever runs next in the process (the embed stage).
    """
    from tensorflow.python.framework import config as framework_config
    was_enabled = framework_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            framework_config.disable_op_determinism()


@dataclasses.dataclass
class Fitted:
    """A trained model and what its training said."""
    net: keras.Model
    extra: Any
    history: list[dict]
    best: int | None
    seconds: float
    strategy: tf.distribute.Strategy
    warm_start: dict | None


class Trainer:
    """Trains one run's model; `job_dir` holds work files (saved epochs for resuming, staging).

    Raises:
        UsageError: preprocess has not succeeded.
    """

    def __init__(self, run: RunDir, job_dir: str | None = None, config: Config | None = None,
                 verbose: bool = True):
        self.run = run
        self.verbose = verbose
        run.require_stage("preprocess", f"preprocess CONFIG --run-id {run.run_id}")
        manifest = run.read_manifest()
        self.config: Config = config or config_from_dict(manifest["config"])
        self.counts: dict[str, int] = manifest["stages"]["preprocess"].get("counts", {})
        self.tft_output = tft.TFTransformOutput(run.transform_dir)
        self.inputs = feature_inputs(self.config, self.tft_output)
        # Not cleared: a rerun after an interruption resumes from the epochs saved here.
        self.staging = job_dir or run.staging("train")
        fs.makedirs(self.staging)
        self.model_dir = fs.join(self.staging, "model")

    @property
    def has_eval(self) -> bool:
        """Whether the eval split has examples (sessions or walks for sequences and graphs)."""
        return self.counts.get("documents_eval", self.counts.get("rows_eval", 1)) > 0

    def dataset(self, split: str, epoch: int | None = None, with_label: bool = True,
                batch_size: int | None = None) -> tf.data.Dataset:
        """Batches of one split; a training epoch (`epoch` given) is shuffled by its own seed."""
        model = self.config.model
        spec = self.tft_output.transformed_feature_spec()
        label = self.config.label_column if with_label else None
        keep = set(self.inputs) | ({label} if label else set())
        seed = None if epoch is None else epoch_seed(model.seed, epoch)
        # Example rows are shuffled whole; a skip-gram's documents, each of many tokens, keep the small buffer.
        buffer = SHUFFLE_BUFFER if model.kind == "skipgram" else row_shuffle_buffer(self.counts.get("rows_train", 0))
        return make_dataset(self.run.examples_pattern(split), {k: v for k, v in spec.items() if k in keep},
                            batch_size or model.batch_size, label=label, shuffle_seed=seed, shuffle_buffer=buffer)

    def labels(self, split: str) -> tf.data.Dataset:
        """Batches of one split's labels alone [batch] (nothing else is parsed)."""
        label = self.config.label_column
        spec = {label: self.tft_output.transformed_feature_spec()[label]}
        return make_dataset(self.run.examples_pattern(split), spec, SCAN_BATCH).map(lambda features: features[label])

    def build(self) -> tuple[keras.Model, Any]:
        """The (uncompiled) model and what training and evaluation need from a pass over the training
        split: interactions (two-tower), token counts (skip-gram), class counts (classification)."""
        model = self.config.model
        if model.kind == "two_tower":
            interactions = collect_interactions(
                self.dataset("train", with_label=False), model.query[0], model.candidate[0], list(model.candidate),
                self.inputs[model.candidate[0]].num_rows, model.history_order)
            return build_two_tower(model, self.inputs, interactions), interactions
        if model.kind == "skipgram":
            feature = self.inputs[self.config.token_feature]
            counts = token_counts(self.dataset("train", with_label=False), feature.name,
                                  self.tft_output.vocabulary_size_by_name(feature.name))
            return SkipGramModel(feature, counts, model, name="skipgram"), counts
        inputs = list(self.inputs.values())
        if model.task == "classification":
            # The class counts also give evaluation its majority-class baseline.
            counts = class_counts(self.labels("train"), self.tft_output.vocabulary_size_by_name(LABEL_VOCABULARY))
            return build_supervised(model, inputs, len(counts), class_log_shares(counts)), counts
        return build_supervised(model, inputs, 0, label_mean(self.labels("train"))), None

    def _tokens(self, split: str, epoch: int, extra: np.ndarray) -> tf.data.Dataset:
        model = self.config.model
        documents = self.dataset(split, epoch=epoch if split == "train" else None, with_label=False,
                                 batch_size=DOCUMENTS_PER_READ)
        return token_batches(documents, self.config.token_feature, len(extra),
                             keep_probabilities(extra, model.subsample), model.batch_size,
                             repeat=split == "train", seed=epoch_seed(model.seed, epoch))

    def epoch_data(self, epoch: int, extra: Any) -> tf.data.Dataset:
        """The training data of one epoch, in the form the model kind trains on."""
        if self.config.model.kind == "skipgram":
            return self._tokens("train", epoch, extra)
        return self.dataset("train", epoch=epoch, with_label=self.config.model.kind == "supervised")

    def steps(self, extra: Any) -> int | None:
        """Steps per epoch: skip-gram cuts its repeated token stream into epochs of the expected
        kept tokens; the others make one pass (None)."""
        model = self.config.model
        if model.kind == "skipgram":
            return steps_per_epoch(extra, keep_probabilities(extra, model.subsample), model.batch_size)
        return None

    def validation_data(self, extra: Any) -> tf.data.Dataset | None:
        """Validation batches (None without eval rows)."""
        model = self.config.model
        if not self.has_eval:
            return None
        if model.kind == "skipgram":
            # The same (at most eval_max_examples) subsampled eval tokens every epoch: comparable from
            # epoch to epoch, and kept in memory instead of re-read from disk.
            return self._tokens("eval", 0, extra).take(-(-model.eval_max_examples // model.batch_size)).cache()
        if model.kind == "two_tower":
            # Ranked against the whole catalogue every epoch: capped, and kept in memory.
            validation = self.dataset("eval", with_label=False).take(-(-model.eval_max_examples // model.batch_size))
            return validation.cache()
        if model.task == "classification":
            # A class the train split never had has id -1 (the label vocabulary is the train split's):
            # no logit to aim at, so such rows weigh nothing in the validation loss and accuracy.
            return self.dataset("eval", with_label=True).map(
                lambda features, label: (features, tf.maximum(label, 0), tf.cast(label >= 0, tf.float32)))
        return self.dataset("eval", with_label=True)

    def evaluate(self, net: keras.Model, extra: Any) -> dict[str, Any]:
        """Eval metrics beside their baselines (`extra`: what `build` returned beside the model)."""
        model = self.config.model
        if model.kind == "skipgram":
            return {"train_tokens": int(extra.sum()), "vocabulary": int(len(extra))}
        if not self.has_eval:
            logger.warning("the eval split is empty: no eval metrics")
            return {"eval_examples": 0}
        if model.kind == "two_tower":
            return evaluate.ranking_metrics(net, self.dataset("eval", with_label=False), extra,
                                            model.eval_max_examples)
        if model.task == "classification":
            metrics = evaluate.classification_metrics(net, extra, self.dataset("eval"))
            if metrics["eval_unknown_class_rows"]:
                progress.warning("eval rows whose class the train split does not have: %d (counted as misses, "
                                 "left out of the log loss)", metrics["eval_unknown_class_rows"])
            return metrics
        numeric = [f.name for f in self.inputs.values() if f.kind == "numeric"]
        return evaluate.regression_metrics(net, self.dataset("train"), self.dataset("eval"), numeric)

    def checkpoint_path(self) -> str:
        """Where each epoch's weights are saved, `{epoch:03d}` its number."""
        return fs.join(self.model_dir, "checkpoints", "epoch-{epoch:03d}")

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return [keras.callbacks.ModelCheckpoint(self.checkpoint_path(), save_weights_only=True),
                keras.callbacks.TensorBoard(fs.join(self.model_dir, "logs"), embeddings_freq=0)]

    def fit(self, task: ClusterTask) -> Fitted:
        """Builds, warm-starts and trains the model; the best epoch's weights when early stopping kept one."""
        model = self.config.model
        keras.utils.set_random_seed(model.seed)
        strategy = choose_strategy(task)
        with strategy.scope():
            net, extra = self.build()
            if model.kind != "supervised":  # a subclassed model makes its weights in a first call
                net(next(iter(self.epoch_data(0, extra).take(1))))
            plan = plan_warm_start(self.config)
            warm_start = apply_warm_start(self.config, plan, embedding_layers(net), self.tft_output) if plan else None
            compile_model(net, model)
        started = time.time()
        if task.strategy == "parameter_server":
            history, best = self._fit_with_parameter_servers(net, extra)
        else:
            state = EpochState(self.staging, net, task.is_chief)
            validation = self.validation_data(extra)
            patience = model.early_stopping_patience if validation is not None else 0
            if model.solver == "als":   # one process (`check_solver`)
                history, best = fit_als(net, state, extra, validation, model, patience, self.checkpoint_path(),
                                        self.verbose)
            else:
                history, best = fit_epochs(
                    net, state, lambda epoch: shard_by_data(self.epoch_data(epoch, extra)),
                    None if validation is None else shard_by_data(validation), model.epochs, self.steps(extra),
                    self.callbacks(), patience, model.kind, self.verbose)
        if best is not None and best != history[-1]["epoch"]:
            net.load_weights(self.checkpoint_path().format(epoch=best + 1))
        warm = None if warm_start is None else {"from": plan.source, "features": warm_start}
        return Fitted(net, extra, history, best, time.time() - started, strategy, warm)

    def train(self, task: ClusterTask) -> dict[str, Any]:
        """Fits, evaluates and exports the model; returns its metrics (only the chief evaluates)."""
        fitted = self.fit(task)
        net = fitted.net
        if not task.is_chief:
            # Every worker saves (saving may need all of them), a non-chief into a local scratch
            # directory: the chief publishes (and removes) the shared staging directory meanwhile.
            with tempfile.TemporaryDirectory(prefix=f"embedpipe-{task.type}-{task.index}-") as scratch:
                export_model(scratch, self.config, net, self.tft_output, embedding_layers(net))
            return {"fit_seconds": round(fitted.seconds, 2)}
        metrics = self.evaluate(net, fitted.extra)
        if self.config.model.label_transform != "none":
            metrics["label_transform"] = self.config.model.label_transform   # the errors are of log(1 + label)
        metrics.update(self._training_facts(fitted, task))
        if self.config.model.kind == "two_tower":
            metrics["solver"] = self.config.model.solver
        if self.config.model.kind == "skipgram":
            metrics["words_per_second"] = metrics["train_tokens"] * metrics["epochs_run"] / max(fitted.seconds, 1e-9)
        if fitted.warm_start is not None:
            metrics["warm_start"] = fitted.warm_start
        metrics["eval_oov_share"] = self.oov_shares()
        metrics.update(day_hour_purity(self.config, embedding_layers(net), self.tft_output))
        for feature in self.config.model.ablation:
            progress.info("ablation: training the same model without %s", feature)
            metrics.setdefault("ablation", {})[feature] = self.without(feature).fit_and_evaluate(task)
        export = fs.join(self.model_dir, "export")
        fs.remove(export)  # a save an interruption cut short leaves files that would be published with it
        export_model(export, self.config, net, self.tft_output, embedding_layers(net))
        fs.write_text_atomic(fs.join(self.staging, "metrics.json"), json.dumps(metrics, indent=2))
        return metrics

    def without(self, feature: str) -> "Trainer":
        """The same training without one feature (an ablation), in a scratch work directory."""
        config = self.config
        model = dataclasses.replace(config.model, ablation=(),
                                    embeddings={k: v for k, v in config.model.embeddings.items() if k != feature})
        ablated = dataclasses.replace(config, features={k: v for k, v in config.features.items() if k != feature},
                                      entities=tuple(e for e in config.entities if e.key != feature), model=model,
                                      warm_start=None)
        return Trainer(self.run, tempfile.mkdtemp(prefix=f"embedpipe-without-{feature}-"), ablated, verbose=False)

    def fit_and_evaluate(self, task: ClusterTask) -> dict[str, Any]:
        """Eval metrics of this trainer's model (an ablation: nothing is exported)."""
        try:
            fitted = self.fit(task)
            return {**self.evaluate(fitted.net, fitted.extra), "epochs_run": len(fitted.history)}
        finally:
            fs.remove(self.staging)

    def _fit_with_parameter_servers(self, net: keras.Model, extra: Any) -> tuple[list[dict], None]:
        """Parameter-server training: a repeated stream cut into epochs, no saved epochs (the strategy
        cannot restore them) and no validation, so no early stopping."""
        model = self.config.model
        steps = self.steps(extra) or -(-self.counts["rows_train"] // model.batch_size)
        data = self.epoch_data(0, extra).repeat()
        logs = net.fit(data, epochs=model.epochs, steps_per_epoch=steps, callbacks=self.callbacks(), verbose=0).history
        return [{"epoch": e, **{k: float(v[e]) for k, v in logs.items()}} for e in range(len(logs["loss"]))], None

    @staticmethod
    def _training_facts(fitted: Fitted, task: ClusterTask) -> dict[str, Any]:
        history = fitted.history
        names = [name for name in history[0] if name != "epoch"] if history else []
        return {"epochs_run": len(history), "best_epoch": None if fitted.best is None else fitted.best + 1,
                "fit_seconds": round(fitted.seconds, 2), "workers": fitted.strategy.num_replicas_in_sync,
                "strategy": task.strategy, "history": {name: [row[name] for row in history] for name in names}}

    def oov_shares(self) -> dict[str, float]:
        """Per vocabulary feature, the share of eval values that fall outside its vocabulary."""
        names = [n for n, f in self.config.features.items() if f.uses_vocabulary_file]
        if not names or not self.has_eval:
            return {}
        sizes = {n: self.tft_output.vocabulary_size_by_name(n) for n in names}
        outside = dict.fromkeys(names, 0)
        total = dict.fromkeys(names, 0)
        for batch in self.dataset("eval", with_label=False, batch_size=SCAN_BATCH):
            for name in names:
                ids = batch[name].values if isinstance(batch[name], tf.SparseTensor) else batch[name]
                ids = ids.numpy()
                outside[name] += int(np.sum(ids >= sizes[name]))
                total[name] += len(ids)
        shares = {n: outside[n] / total[n] for n in names if total[n]}
        for name, share in shares.items():
            if share > OOV_WARNING_SHARE:
                progress.warning("%s: %.0f%% of eval values are outside its vocabulary (below frequency_threshold, "
                                 "beyond top_k, or new in eval)", name, 100 * share)
        return shares


def embedding_layers(model: keras.Model) -> dict[str, CategoricalEmbedding]:
    """Feature name -> its embedding layer, wherever it sits in the model (towers included)."""
    prefix = "embedding_"
    return {layer.name[len(prefix):]: layer for layer in model.submodules
            if isinstance(layer, CategoricalEmbedding) and layer.name.startswith(prefix)}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics worth a line in the manifest (no histories)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}


def check_solver(config: Config, task: ClusterTask) -> None:
    """ALS trains in one process: checked in `train_run`, before a cluster task starts serving.

    Raises:
        UsageError: `solver: als` in a training cluster.
    """
    if config.model.solver == "als" and task.strategy != "default":
        raise UsageError(f"model.solver als trains in one process, and TF_CONFIG names a {task.strategy} cluster: "
                         "set model.solver: gradient to train on several")


def train_run(run: RunDir, job_dir: str | None = None) -> dict[str, Any]:
    """Trains, evaluates and exports the model of `run` (its lock held by the caller); returns its metrics.

    On a worker of a training cluster it trains its share and returns; the chief records and publishes.
    """
    task = cluster_task()
    # Before a parameter server or worker starts serving, so that no task waits for a chief that stopped.
    config = config_from_dict(run.read_manifest()["config"])
    check_solver(config, task)
    if task.serves_only:
        serve_parameter_server_task()
    trainer = Trainer(run, job_dir, config)
    if not task.is_chief:
        with op_determinism():
            return trainer.train(task)
    with run.stage("train") as info, op_determinism():
        metrics = trainer.train(task)
        info["metrics"] = headline(metrics)
        if job_dir:
            for name in STAGE_OUTPUTS["train"]:  # a cloud job's work dir is copied, the run's own staging renamed
                fs.copy_tree(fs.join(job_dir, name), fs.join(run.staging("train"), name))
    return metrics
