"""Warm start: copy embedding rows from an earlier run (or a vector file) into a new model.

What is copied, and why some features are not, was decided before any work by
`pipelines.core.warm_start.plan_warm_start` (the rule is written there). This module carries the
plan out: rows matched by raw key land on the new table's row of that key, wherever the new
vocabulary put it; buckets are copied whole; keys new to this run keep the initializer's values.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from pipelines.core.config import Config, FeatureConfig
from pipelines.core.config_parse import config_from_dict
from pipelines.core.rundir import RunDir
from pipelines.core.vectors import load_vector_file
from pipelines.core.warm_start import WarmStartPlan
from trainer.layers import CategoricalEmbedding

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SourceTable:
    """An earlier embedding table: its rows [rows, dim] and each row's key (None: copy by bucket)."""
    table: np.ndarray
    keys: list[str] | None


def row_keys(feature: FeatureConfig, tft_output: tft.TFTransformOutput) -> list[str] | None:
    """The raw key of each table row that has one (vocabulary rows, list values, identity ids), or
    None for hash and cross features, whose rows are buckets."""
    if feature.uses_vocabulary_file:
        return [v.decode("utf-8") for v in tft_output.vocabulary_by_name(feature.name)]
    if feature.type == "vocabulary_list":
        return list(feature.values)
    if feature.type == "identity":
        return [str(i) for i in range(feature.num_buckets)]
    return None


def tables_from_run(path: str, features: list[str]) -> dict[str, SourceTable]:
    """Embedding tables of an earlier run's exported model, with that run's own vocabularies."""
    run = RunDir(path)
    old: Config = config_from_dict(run.read_manifest()["config"])
    tft_output = tft.TFTransformOutput(run.transform_dir)
    variables = tf.saved_model.load(run.export_dir).embedding_tables
    return {name: SourceTable(variables[name].numpy(), row_keys(old.features[name], tft_output))
            for name in features if name in variables}


def copy_rows(target: np.ndarray, target_keys: list[str] | None, source: SourceTable) -> tuple[np.ndarray, int]:
    """`target` with every row whose key (or bucket) the source has replaced by the source's row.

    Args:
        target: the new table [rows, dim] (initialised).
        target_keys: raw key of the new table's first len(target_keys) rows, or None (buckets).
        source: the earlier table and its keys.

    Returns:
        A new [rows, dim] array and the number of rows copied.
    """
    if source.table.shape[1] != target.shape[1]:
        raise ValueError(f"dimension {source.table.shape[1]} of the source differs from {target.shape[1]}")
    if target_keys is None or source.keys is None:
        if source.table.shape[0] != target.shape[0]:
            raise ValueError(f"{source.table.shape[0]} source buckets, {target.shape[0]} here: nothing to copy")
        return source.table.astype(target.dtype), target.shape[0]
    result = target.copy()
    index = {key: row for row, key in enumerate(source.keys)}
    copied = 0
    for row, key in enumerate(target_keys):
        if key in index:
            result[row] = source.table[index[key]]
            copied += 1
    return result, copied


def apply_warm_start(config: Config, plan: WarmStartPlan, layers: dict[str, CategoricalEmbedding],
                     tft_output: tft.TFTransformOutput) -> dict[str, dict]:
    """Copies earlier rows into the model's embedding layers and freezes them as the plan says.

    Returns:
        Per feature of the plan: rows copied and in all, whether frozen, or why it was not copied
        (recorded in metrics.json).
    """
    copied = [p for p in plan.copied() if p.feature in layers]
    if plan.is_run:
        sources = tables_from_run(plan.source, [p.feature for p in copied])
    else:
        vectors = load_vector_file(plan.source)
        sources = {p.feature: SourceTable(vectors.vectors, vectors.keys) for p in copied}
    report: dict[str, dict] = {}
    for feature_plan in plan.features:
        name = feature_plan.feature
        if feature_plan.how == "skip" or name not in sources:
            report[name] = {"copied": False, "reason": feature_plan.reason or "the source has no table of it"}
            continue
        layer = layers[name]
        keys = None if feature_plan.how == "bucket" else row_keys(config.features[name], tft_output)
        table, count = copy_rows(layer.embeddings.numpy(), keys, sources[name])
        layer.embeddings.assign(table)
        layer.trainable = not feature_plan.frozen
        report[name] = {"copied": True, "by": feature_plan.how, "rows_copied": count, "rows": int(table.shape[0]),
                        "frozen": feature_plan.frozen}
    logger.info("warm start from %s: %s", plan.source, report)
    return report
