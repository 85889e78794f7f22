"""Readable columns for published vectors from a side table (`entities[].metadata_from`).

Raw data often holds codes (an airport "ORD", a movie id) whose names live in another table. The
embed job reads that table, keys it by its key column (as a string, as entity keys are), and adds
its columns to each published row; keys the side table lacks get nulls and are counted. Parquet
columns keep their type; CSV and JSON-lines columns are strings.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipelines.core import fs
from pipelines.core.beam_runner import COUNTER_NAMESPACE
from pipelines.core.config import Config, SideTableConfig
from pipelines.core.errors import ConfigError
from pipelines.core.vectors import metadata_type



def side_table_types(side: SideTableConfig, where: str) -> dict[str, pa.DataType]:
    """The published type of each side column, read from the table's first file.

    Raises:
        ConfigError: naming `where` (the config key): no file, or a column it lacks.
    """
    files = fs.glob(side.path)
    if not files:
        raise ConfigError(f"{where}.path: no file matches {side.path!r}")
    if side.format == "parquet":
        schema = fs.read_parquet_schema(files[0])
        available = {field.name: metadata_type(field.type) for field in schema}
    else:
        with fs.open(files[0], "r") as handle:
            first = handle.readline()
        names = next(csv.reader([first])) if side.format == "csv" else list(json.loads(first or "{}"))
        available = {name: pa.string() for name in names}
    for column in (side.key,) + side.columns:
        if column not in available:
            raise ConfigError(f"{where}: column {column!r} is not in {files[0]} (columns: "
                              f"{', '.join(sorted(available)[:30])})")
    return {column: available[column] for column in side.columns}


def check_side_tables(config: Config) -> None:
    """Every `metadata_from` table exists and has its columns (before any work)."""
    for index, entity in enumerate(config.entities):
        if entity.metadata_from is not None:
            side_table_types(entity.metadata_from, f"entities[{index}].metadata_from")


def _key(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _csv_rows(line: str, header: list[str]) -> Iterator[dict[str, str]]:
    for fields in csv.reader(io.StringIO(line)):
        if fields != header:
            yield dict(zip(header, fields))


class ReadSideTable(beam.PTransform):
    """A side table -> (key string, tuple of its published columns), one per key (the first wins)."""

    def __init__(self, side: SideTableConfig):
        super().__init__()
        self._side = side

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        side = self._side
        if side.format == "parquet":
            rows = pipeline | "ReadParquet" >> beam.io.ReadFromParquet(side.path, columns=[side.key, *side.columns])
        elif side.format == "jsonl":
            rows = pipeline | "ReadLines" >> beam.io.ReadFromText(side.path) | "ParseJson" >> beam.Map(json.loads)
        else:
            with fs.open(fs.glob(side.path)[0], "r") as handle:
                header = next(csv.reader([handle.readline()]))
            rows = (pipeline | "ReadLines" >> beam.io.ReadFromText(side.path, skip_header_lines=1)
                    | "ParseCsv" >> beam.FlatMap(_csv_rows, header))
        return (rows
                | "KeyRows" >> beam.Map(lambda row: (_key(row.get(side.key)), tuple(row.get(c) for c in side.columns)))
                | "DropMissingKeys" >> beam.Filter(lambda item: item[0] is not None)
                | "OneRowPerKey" >> beam.CombinePerKey(lambda values: min(values, key=repr)))


class AddSideColumns(beam.DoFn):
    """Output tables -> the same with the side table's columns added; keys it lacks get nulls."""

    def __init__(self, entity: str, columns: tuple[str, ...], types: dict[str, pa.DataType]):
        self._columns = columns
        self._types = types
        self._missing = Metrics.counter(COUNTER_NAMESPACE, f"metadata_missing_{entity}")

    def process(self, table: pa.Table, side: dict[str, tuple]) -> Iterator[pa.Table]:
        found = [side.get(key) for key in table.column("key").to_pylist()]
        self._missing.inc(sum(values is None for values in found))
        for index, column in enumerate(self._columns):
            values = [None if row is None else row[index] for row in found]
            table = table.set_column(table.schema.get_field_index(column), pa.field(column, self._types[column]),
                                     pa.array(_typed(values, self._types[column]), self._types[column]))
        yield table


def _typed(values: list, arrow_type: pa.DataType) -> list:
    if pa.types.is_string(arrow_type):
        return [None if v is None else str(v) for v in values]
    return values
