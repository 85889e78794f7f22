"""Entity tables written by preprocess: every key seen, its training count and raw values.

The embed job needs, for each entity key, the raw feature values to feed the model (a movie's
genres for the candidate tower, the (day, hour) of a cross) and the metadata to publish. Those come
from the same pass over the input as the TFRecords, so the embed job never re-reads raw data.
Table: `data/entities/<entity>/part-*.parquet` with columns key, count, then the raw columns.
For each key the values kept are the smallest seen, so every runner and rerun agrees.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipelines.config import Config, EntityConfig, FeatureConfig
from pipelines.schema import RawSchema
from transforms.preprocessing import CROSS_SEPARATOR

ENTITY_TABLES = os.path.join("data", "entities")
_NONE_FIRST = (0,)


def entity_value_columns(config: Config, entity: EntityConfig) -> tuple[str, ...]:
    """Raw columns stored beside each key: the model's inputs for it, then its metadata."""
    columns = list(config.entity_feature_columns(entity))
    columns += [m for m in entity.metadata if m not in columns]
    return tuple(columns)


def entity_table_schema(config: Config, schema: RawSchema, entity: EntityConfig) -> pa.Schema:
    fields = [("key", pa.string()), ("count", pa.int64())]
    fields += [(c, schema.arrow_type(c)) for c in entity_value_columns(config, entity)]
    return pa.schema(fields)


def keys_of_row(feature: FeatureConfig, row: dict[str, Any]) -> list[str]:
    """The entity keys one raw row holds for `feature` (text: its tokens; missing: none)."""
    if feature.type == "cross":
        return [CROSS_SEPARATOR.join(str(row[c]) for c in feature.columns)]
    value = row[feature.column]
    if feature.type == "identity":
        return [str(value)] if value is not None and value >= 0 else []
    if feature.type == "text":
        text = (value or "").lower()
        tokens = text.split(feature.delimiter) if feature.delimiter else text.split()
        return [t for t in (token.strip() for token in tokens) if t]
    return [value] if value else []


def _sort_key(values: tuple) -> tuple:
    return tuple(_NONE_FIRST if v is None else (1, v) for v in values)


class ExtractEntityKeys(beam.DoFn):
    """(is_train, raw record batch) -> ((entity, key), (train count, values)), pre-aggregated per batch."""

    def __init__(self, config: Config):
        self._entities = [(e.name, config.features[e.key], entity_value_columns(config, e))
                          for e in config.entities]

    def process(self, element: tuple[bool, pa.RecordBatch]) -> Iterator[tuple[tuple[str, str], tuple]]:
        is_train, batch = element
        rows = batch.to_pylist()
        for name, feature, columns in self._entities:
            seen: dict[str, list] = {}
            for row in rows:
                for key in keys_of_row(feature, row):
                    values = tuple(row[c] for c in columns)
                    slot = seen.get(key)
                    if slot is None:
                        seen[key] = [int(is_train), values]
                    else:
                        slot[0] += int(is_train)
                        if _sort_key(values) < _sort_key(slot[1]):
                            slot[1] = values
            for key, (count, values) in seen.items():
                yield (name, key), (count, values)


class MergeEntityKeys(beam.CombineFn):
    """Sums training counts and keeps the smallest values tuple."""

    def create_accumulator(self) -> tuple[int, Any]:
        return 0, None

    def add_input(self, accumulator: tuple[int, Any], element: tuple[int, tuple]) -> tuple[int, Any]:
        return self.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators: Iterable[tuple[int, Any]]) -> tuple[int, Any]:
        count, best = 0, None
        for partial, values in accumulators:
            count += partial
            if values is not None and (best is None or _sort_key(values) < _sort_key(best)):
                best = values
        return count, best

    def extract_output(self, accumulator: tuple[int, Any]) -> tuple[int, Any]:
        return accumulator


class WriteEntityTables(beam.PTransform):
    """Writes one Parquet entity table per configured entity under `<root>/data/entities/`."""

    def __init__(self, config: Config, schema: RawSchema, root: str):
        super().__init__()
        self._config = config
        self._schema = schema
        self._root = root

    def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
        merged = (batches
                  | "ExtractEntityKeys" >> beam.ParDo(ExtractEntityKeys(self._config))
                  | "MergeEntityKeys" >> beam.CombinePerKey(MergeEntityKeys()))
        entities = self._config.entities
        parts = merged | "PartitionByEntity" >> beam.Partition(
            lambda item, _, names: names.index(item[0][0]), len(entities), [e.name for e in entities])
        written = {}
        for entity, part in zip(entities, parts):
            columns = entity_value_columns(self._config, entity)
            written[entity.name] = (
                part
                | f"ToRow[{entity.name}]" >> beam.Map(_to_row, columns, entity.name)
                | f"WriteTable[{entity.name}]" >> beam.io.WriteToParquet(
                    os.path.join(self._root, ENTITY_TABLES, entity.name, "part"),
                    entity_table_schema(self._config, self._schema, entity), file_name_suffix=".parquet"))
        return written


def _to_row(item: tuple[tuple[str, str], tuple[int, tuple]], columns: tuple[str, ...], entity: str) -> dict:
    (_, key), (count, values) = item
    Metrics.counter("embedpipe", f"entity_keys_{entity}").inc()
    return {"key": key, "count": count, **dict(zip(columns, values))}
