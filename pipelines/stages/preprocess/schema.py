"""Raw column types and input inspection, both decided once before any Beam work starts.

Inspection reads every input file's header (CSV) or footer (Parquet), so a missing column, a
duplicate column name or an unreadable file is a one-line error naming the file before any work.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Mapping

import pyarrow as pa

from pipelines.core import input_files
from pipelines.core.config import Config
from pipelines.core.dates import PARTS
from pipelines.core.errors import ConfigError
from pipelines.core.vectors import metadata_type

STRING, FLOAT, INT = "string", "float", "int"
# An event's order (Unix seconds, float64: float32 would round them to minutes) and an edge's weight.
TIME, WEIGHT = "time", "weight"
ARROW_TYPES = {STRING: pa.string(), FLOAT: pa.float32(), INT: pa.int64(), TIME: pa.float64(), WEIGHT: pa.float32()}


@dataclasses.dataclass(frozen=True)
class RawSchema:
    """How each raw column the job reads is typed.

    Attributes:
        files: input files matched by `input.path`.
        headers: CSV file -> its column names in file order (files may order columns differently).
        types: column -> STRING | FLOAT | INT | TIME | WEIGHT, for the columns rows are typed into:
            tf.Transform's inputs, or the columns a sequences or graph config builds its documents from.
        numeric: columns that must parse as numbers (a superset of FLOAT columns: a column
            read both as a number and as a category is fed as a string but still checked).
        metadata_types: entity metadata column -> Arrow type in the published Parquet.
        quoted_newlines: a sampled CSV record spans lines (a quoted field holds a newline); such
            files are then read unsplit, so no split boundary can fall inside a record.
        timestamps: columns features read date parts of; their values must be timestamps.
        required: column -> the config key naming it, for columns without which a row is invalid
            (a group, an order, an item, a node id, a weight).
    """
    files: tuple[str, ...]
    headers: Mapping[str, tuple[str, ...]]
    types: Mapping[str, str]
    numeric: frozenset[str]
    metadata_types: Mapping[str, pa.DataType]
    quoted_newlines: bool = False
    timestamps: frozenset[str] = frozenset()
    required: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def header_of(self, path: str) -> tuple[str, ...]:
        """The CSV header of an input file."""
        return self.headers[path]

    def arrow_type(self, column: str) -> pa.DataType:
        """Arrow type of a raw column as carried into entity tables."""
        if column in self.types:
            return ARROW_TYPES[self.types[column]]
        return self.metadata_types.get(column, pa.string())


def required_columns(config: Config) -> dict[str, str]:
    """Column -> config key, for the columns a sequences or graph config cannot do without."""
    shape = config.sequences or config.graph
    if shape is None:
        return {}
    section = "sequences" if config.sequences else "graph"
    names = ("group_by", "order_by", "item") if config.sequences else ("source", "target", "weight")
    return {column: f"{section}.{name}" for name, column in zip(names, shape.columns)}


def transform_column_types(config: Config) -> dict[str, str]:
    """Column -> raw type of every column rows are typed into: tf.Transform's inputs (features and
    label), or for sequences and graphs the columns their documents are built from."""
    if config.sequences:
        sequences = config.sequences
        return {sequences.group_by: STRING, sequences.order_by: TIME, sequences.item: STRING}
    if config.graph:
        graph = config.graph
        return {graph.source: STRING, graph.target: STRING, **({graph.weight: WEIGHT} if graph.weight else {})}
    uses: dict[str, set[str]] = {}
    for feature in config.features.values():
        kind = {"numeric": FLOAT, "identity": INT}.get(feature.type, STRING)
        for column in feature.raw_columns:
            uses.setdefault(column, set()).add(kind)
    if config.label_column:
        uses.setdefault(config.label_column, set()).add(FLOAT if config.model.task == "regression" else STRING)
    return {column: kinds.pop() if len(kinds) == 1 else STRING for column, kinds in uses.items()}


def inspect_input(config: Config) -> RawSchema:
    """Matches the input files and checks that every configured column exists in each of them.

    Raises:
        ConfigError: no file matches, a file cannot be read as its format, a column name repeats,
            a configured column is missing, or a feature reads a nested Parquet column.
    """
    files = input_files.match_files(config.input.path)
    headers: dict[str, tuple[str, ...]] = {}
    metadata_types: dict[str, pa.DataType] = {}
    quoted_newlines = False
    fmt = config.input.format
    if fmt == "csv":
        headers = dict(zip(files, input_files.each(files, lambda f: input_files.csv_header(f, config.input.delimiter))))
        for path, header in headers.items():
            _check_columns(config, set(header), path)
        quoted_newlines = input_files.has_quoted_newline(files[0], config.input.delimiter)
    elif fmt == "parquet":
        schemas = dict(zip(files, input_files.each(files, input_files.parquet_schema)))
        for path, arrow_schema in schemas.items():
            _check_columns(config, set(arrow_schema.names), path)
            _check_scalar_columns(config, arrow_schema, path)
        metadata_types = {f.name: metadata_type(f.type) for f in schemas[files[0]]}
    else:
        available = {"jsonl": input_files.jsonl_keys, "tfrecord": input_files.example_keys}.get(
            fmt, lambda _: {config.input.text_column})(files[0])
        _check_columns(config, available, files[0])
    types = transform_column_types(config)
    numeric = frozenset(c for f in config.features.values() if f.type == "numeric" for c in f.raw_columns)
    metadata = {m: metadata_types.get(m, pa.string()) for e in config.entities for m in e.metadata}
    for row_filter in config.input.filters:   # filter columns typed only for filtering
        if row_filter.column not in types and row_filter.column not in metadata:
            metadata[row_filter.column] = pa.float64() if row_filter.numeric else pa.string()
    return RawSchema(
        files=tuple(files), headers=headers, types=types, numeric=numeric,
        metadata_types=metadata, quoted_newlines=quoted_newlines,
        timestamps=frozenset(c for f in config.features.values() for c in f.timestamp_columns),
        required=required_columns(config))


def _check_scalar_columns(config: Config, arrow_schema: pa.Schema, path: str) -> None:
    for key, column in _feature_columns(config):
        kind = arrow_schema.field(column).type
        if pa.types.is_nested(kind):
            raise ConfigError(f"{key}: column {column!r} of {path} is {kind}; one value per row is expected")


def _feature_columns(config: Config) -> list[tuple[str, str]]:
    """(config key, column) of every column the features, or the sequences or graph section, read."""
    if config.discrete:
        return [(key, column) for column, key in required_columns(config).items()]
    return [(f"features.{f.name}.{'columns' if f.type == 'cross' else 'column'}", column)
            for f in config.features.values() for column in f.raw_columns]


def _check_columns(config: Config, available: set[str], path: str) -> None:
    shown = ", ".join(sorted(available)[:30])

    def missing(key: str, column: str) -> ConfigError:
        base, _, part = column.rpartition(".")
        if base in available and part not in PARTS:   # "time.day_of_wek": a column with a misspelt date part
            close = difflib.get_close_matches(part, PARTS, n=1)
            hint = f"did you mean {base}.{close[0]}? " if close else ""
            return ConfigError(f"{key}: {part!r} is not a date part of {base!r} ({hint}parts: {', '.join(PARTS)})")
        if base in available:
            return ConfigError(f"{key}: {column!r} is a date part; only features read date parts of a timestamp")
        close = difflib.get_close_matches(column, sorted(available), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"{key}: column {column!r} is not in {path}{hint} (columns: {shown})")
    for key, column in _feature_columns(config):
        if column not in available:
            raise missing(key, column)
    named = [("model.label", config.label_column), ("split.column", config.split.column)]
    named += [("split.key", k) for k in config.split.key]
    named += [(f"entities[{i}].metadata", m) for i, e in enumerate(config.entities) for m in e.metadata]
    named += [(f"input.filters[{i}].column", f.column) for i, f in enumerate(config.input.filters)]
    for key, column in named:
        if column and column not in available:
            raise missing(key, column)

