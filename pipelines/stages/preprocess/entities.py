"""Entity tables written by preprocess: every key seen, its training count and raw values.

The embed job needs, for each entity key, the raw feature values to feed the model (a movie's
genres for the candidate tower, the (day, hour) of a cross) and the metadata to publish. Those come
from the same pass over the input as the TFRecords, so the embed job never re-reads raw data.
Table: `data/entities/<entity>/part-*.parquet` with columns key, count, then the raw columns.
For each key and column the value kept is the smallest seen, so every runner and rerun agrees.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.core import fs
from pipelines.core.beam_runner import COUNTER_NAMESPACE
from pipelines.core.config import Config, EntityConfig, FeatureConfig
from pipelines.core.dates import part_values, split_reference
from pipelines.core.names import CROSS_SEPARATOR, ESCAPE
from pipelines.core.rundir import RunDir
from pipelines.stages.preprocess.schema import RawSchema


def entity_value_columns(config: Config, entity: EntityConfig) -> tuple[str, ...]:
    """Raw columns stored beside each key: the model's inputs for it (a cross's parts, a movie's
    genres), then its metadata. A single-column key feature's column is not stored: the key is its
    value (a token is its own text)."""
    feature = config.features[entity.key]
    derived = {feature.column} if feature.key_is_raw_value else set()
    columns = [c for c in config.entity_feature_columns(entity) if c not in derived]
    columns += [m for m in entity.metadata if m not in columns]
    return tuple(columns)


def entity_table_schema(config: Config, schema: RawSchema, entity: EntityConfig) -> pa.Schema:
    fields = [("key", pa.string()), ("count", pa.int64())]
    fields += [(c, schema.arrow_type(c)) for c in entity_value_columns(config, entity)]
    return pa.schema(fields)


def _values(table: pa.Table, reference: str, time_zone: str) -> pa.Array:
    """A raw column, or a date part of one ("time.hour"), of a batch of typed raw rows."""
    column, part = split_reference(reference)
    values = table.column(column).combine_chunks()
    return values if part is None else part_values(values, part, time_zone)[0]


def entity_keys(feature: FeatureConfig, table: pa.Table, time_zone: str = "UTC") -> tuple[pa.Array, pa.Array]:
    """The entity keys a batch of typed raw rows holds for `feature`, and the row of each key.

    Crosses join their escaped parts with "|" (`pipelines.core.names`); text gives its lower-cased
    tokens (as the transform does); date parts are computed as the transform computes them;
    identity ids outside their range, and missing values, give no key.
    """
    if feature.type == "cross":
        parts = [_escaped(_values(table, name, time_zone).cast(pa.string())) for name in feature.columns]
        keys = pc.binary_join_element_wise(*parts, CROSS_SEPARATOR)
        return keys, pa.array(np.arange(table.num_rows, dtype=np.int64))
    column = _values(table, feature.column, time_zone)
    if feature.type == "identity":
        rows = pc.indices_nonzero(pc.greater_equal(column, 0))
        return pc.take(column, rows).cast(pa.string()), rows
    if feature.type == "text":
        lower = pc.utf8_lower(column)
        tokens = pc.split_pattern(lower, feature.delimiter) if feature.delimiter else pc.utf8_split_whitespace(lower)
        parents = pc.list_parent_indices(tokens)
        keys = pc.utf8_trim_whitespace(pc.list_flatten(tokens))
    else:
        parents, keys = pa.array(np.arange(table.num_rows, dtype=np.int64)), column
    present = pc.indices_nonzero(pc.not_equal(keys, ""))
    return pc.take(keys, present), pc.take(parents, present)


def _escaped(part: pa.Array) -> pa.Array:
    escaped = pc.replace_substring(part, ESCAPE, ESCAPE * 2)
    return pc.replace_substring(escaped, CROSS_SEPARATOR, ESCAPE + CROSS_SEPARATOR)


@beam.typehints.with_input_types(pa.RecordBatch)
@beam.typehints.with_output_types(tuple[tuple[str, str], tuple[int, Any]])
class ExtractEntityKeys(beam.DoFn):
    """Raw record batch -> ((entity, key), (train count, values)), one per key per bundle.

    Keys are merged across the bundle's batches, as Arrow tables, before they leave the DoFn, so
    what crosses to the combine grows with the distinct keys, not with the rows.

    Args:
        config: the entities and their features.
        is_train: whether the batches are training rows (they count) or eval rows (keys only).
    """

    def __init__(self, config: Config, is_train: bool):
        self._entities = [(e.name, config.features[e.key], entity_value_columns(config, e))
                          for e in config.entities]
        self._is_train = is_train
        self._time_zone = config.input.time_zone

    def start_bundle(self) -> None:
        self._parts: dict[str, list[pa.Table]] = {name: [] for name, _, _ in self._entities}

    def process(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([batch])
        for name, feature, columns in self._entities:
            keys, rows = entity_keys(feature, table, self._time_zone)
            values = table.select(list(columns)).take(rows)
            parts = self._parts[name]
            parts.append(_merge_keys(pa.table({"key": keys, "count": pa.repeat(int(self._is_train), len(keys)),
                                               **{f"v{i}": values.column(i) for i in range(len(columns))}})))
            if len(parts) >= _PARTS_HELD:
                parts[:] = [_merge_keys(pa.concat_tables(parts))]

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for name, _, columns in self._entities:
            if not self._parts[name]:
                continue
            merged = _merge_keys(pa.concat_tables(self._parts[name]))
            value_lists = [merged.column(f"v{i}").to_pylist() for i in range(len(columns))]
            for index, (key, count) in enumerate(zip(merged.column("key").to_pylist(),
                                                     merged.column("count").to_pylist())):
                yield WindowedValue(((name, key), (count, tuple(v[index] for v in value_lists))),
                                    MIN_TIMESTAMP, [GlobalWindow()])
        self._parts = {}


# A bundle's key tables are merged into one whenever this many are held, which bounds its memory
# by its distinct keys.
_PARTS_HELD = 16


def _merge_keys(table: pa.Table) -> pa.Table:
    """Key, count, v0..vN rows -> one row per key: counts summed, each value column's smallest
    (nulls skipped)."""
    values = [name for name in table.column_names if name not in ("key", "count")]
    grouped = table.group_by("key", use_threads=False).aggregate([("count", "sum")] + [(v, "min") for v in values])
    return pa.table({"key": grouped.column("key"), "count": grouped.column("count_sum"),
                     **{v: grouped.column(f"{v}_min") for v in values}})


class MergeEntityKeys(beam.CombineFn):
    """Sums training counts and keeps the smallest value of each column (None when never present)."""

    def create_accumulator(self) -> tuple[int, Any]:
        return 0, None

    def add_input(self, accumulator: tuple[int, Any], element: tuple[int, tuple]) -> tuple[int, Any]:
        return self.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators: Iterable[tuple[int, Any]]) -> tuple[int, Any]:
        count, best = 0, None
        for partial, values in accumulators:
            count += partial
            if values is not None:
                best = values if best is None else tuple(_smaller(a, b) for a, b in zip(best, values))
        return count, best

    def extract_output(self, accumulator: tuple[int, Any]) -> tuple[int, Any]:
        return accumulator


def _smaller(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return b if a is None else a
    return min(a, b)


class SplitRows(NamedTuple):
    """Typed raw record batches of the training and the eval split."""
    train: beam.PCollection
    eval: beam.PCollection


class WriteEntityTables(beam.PTransform):
    """Writes one Parquet entity table per configured entity into the staged run's `data/entities/`."""

    def __init__(self, config: Config, schema: RawSchema, staged: RunDir):
        super().__init__()
        self._config = config
        self._schema = schema
        self._staged = staged

    def expand(self, splits: SplitRows) -> dict[str, beam.PCollection]:
        # Keys, not record batches, are flattened: a runner may hold a Flatten's inputs in full.
        merged = ((splits.train | "ExtractTrainEntityKeys" >> beam.ParDo(ExtractEntityKeys(self._config, True)),
                   splits.eval | "ExtractEvalEntityKeys" >> beam.ParDo(ExtractEntityKeys(self._config, False)))
                  | "FlattenEntityKeys" >> beam.Flatten()
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
                    fs.join(self._staged.entity_table_dir(entity.name), "part"),
                    entity_table_schema(self._config, self._schema, entity), file_name_suffix=".parquet"))
        return written


def _to_row(item: tuple[tuple[str, str], tuple[int, tuple]], columns: tuple[str, ...], entity: str) -> dict:
    (_, key), (count, values) = item
    Metrics.counter(COUNTER_NAMESPACE, f"entity_keys_{entity}").inc()
    return {"key": key, "count": count, **dict(zip(columns, values))}
