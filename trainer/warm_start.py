"""Warm start: copy embedding rows by key from an earlier run (or a vector file) into a new model.

Vocabularies change between runs: new keys arrive, old ones leave, frequency order shifts, so row i
of the old table is rarely row i of the new one. Rows are matched by the raw key (vocabulary,
vocabulary_list, text tokens, identity ids); hash and cross features are copied by bucket, and only
when the bucket count is unchanged (a bucket means nothing across different hash spaces). Keys new
to this run keep the initializer's values; keys no longer in the vocabulary are dropped.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Iterable

import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_transform as tft

from pipelines.config import Config, FeatureConfig, WarmStartConfig, config_from_dict
from pipelines.rundir import resolve_run
from pipelines.vector_columns import vectors_of
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


def tables_from_run(path: str, features: Iterable[str]) -> dict[str, SourceTable]:
    """Embedding tables of an earlier run's exported model, with that run's own vocabularies."""
    run = resolve_run(path)
    old: Config = config_from_dict(run.read_manifest()["config"])
    tft_output = tft.TFTransformOutput(run.transform_dir)
    variables = tf.saved_model.load(run.export_dir).embedding_tables
    tables = {}
    for name in features:
        variable = variables.get(name)
        if variable is None or name not in old.features:
            logger.warning("warm start: %s has no embedding of %r; it starts fresh", run.path, name)
            continue
        tables[name] = SourceTable(variable.numpy(), row_keys(old.features[name], tft_output))
    return tables


def tables_from_vectors(path: str, feature: str) -> dict[str, SourceTable]:
    """Pre-trained vectors: Parquet in embedpipe's schema, or word2vec/GloVe text (`key v1 v2 ...`)."""
    if path.endswith(".parquet") or os.path.isdir(path):
        table = pq.read_table(path, columns=["key", "embedding"])
        return {feature: SourceTable(vectors_of(table), table.column("key").to_pylist())}
    keys, rows = [], []
    with tf.io.gfile.GFile(path) as handle:
        for number, line in enumerate(handle):
            parts = line.rstrip().split(" ")
            if number == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: count and dimension
            keys.append(parts[0])
            rows.append(np.asarray(parts[1:], np.float32))
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"{path}: rows of different lengths")
    return {feature: SourceTable(np.stack(rows), keys)}


def copy_rows(target: np.ndarray, target_keys: list[str] | None, source: SourceTable) -> np.ndarray:
    """`target` with every row whose key (or bucket) the source has replaced by the source's row.

    Args:
        target: the new table [rows, dim] (initialised).
        target_keys: raw key of the new table's first len(target_keys) rows, or None (buckets).
        source: the earlier table and its keys.

    Returns:
        A new [rows, dim] array.
    """
    if source.table.shape[1] != target.shape[1]:
        raise ValueError(f"dimension {source.table.shape[1]} of the source differs from {target.shape[1]}")
    result = target.copy()
    if target_keys is None or source.keys is None:
        if source.table.shape[0] != target.shape[0]:
            raise ValueError(f"{source.table.shape[0]} source buckets, {target.shape[0]} here: nothing to copy")
        return source.table.astype(target.dtype)
    index = {key: row for row, key in enumerate(source.keys)}
    for row, key in enumerate(target_keys):
        if key in index:
            result[row] = source.table[index[key]]
    return result


def apply_warm_start(config: Config, layers: dict[str, CategoricalEmbedding],
                     tft_output: tft.TFTransformOutput) -> dict[str, dict]:
    """Copies earlier rows into the model's embedding layers and freezes them if asked.

    Returns:
        Per feature: rows copied, rows new, whether frozen (recorded in the manifest).
    """
    warm: WarmStartConfig = config.warm_start
    names = [n for n in (warm.features or layers) if n in layers]
    if not resolve_run(warm.source).exists():
        if len(names) != 1:
            raise ValueError("warm_start from a vector file needs exactly one feature in warm_start.features")
        sources = tables_from_vectors(warm.source, names[0])
    else:
        sources = tables_from_run(warm.source, names)
    report = {}
    for name in names:
        layer = layers[name]
        if name in sources:
            keys = row_keys(config.features[name], tft_output)
            try:
                table = copy_rows(layer.embeddings.numpy(), keys, sources[name])
            except ValueError as error:
                raise ValueError(f"warm start of {name!r}: {error}") from None
            layer.embeddings.assign(table)
            copied = (len(set(keys) & set(sources[name].keys)) if keys is not None and sources[name].keys is not None
                      else table.shape[0])
            report[name] = {"rows_copied": copied, "rows": int(table.shape[0])}
        if name in warm.freeze and name in report:
            layer.trainable = False
            report[name]["frozen"] = True
    logger.info("warm start from %s: %s", warm.source, report)
    return report
