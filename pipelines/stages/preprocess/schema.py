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
from pipelines.core.errors import ConfigError
from pipelines.core.vectors import metadata_type

STRING, FLOAT, INT = "string", "float", "int"
ARROW_TYPES = {STRING: pa.string(), FLOAT: pa.float32(), INT: pa.int64()}


@dataclasses.dataclass(frozen=True)
class RawSchema:
    """How each raw column the job reads is typed.

    Attributes:
        files: input files matched by `input.path`.
        headers: CSV file -> its column names in file order (files may order columns differently).
        types: column -> STRING | FLOAT | INT, for columns fed to tf.Transform.
        numeric: columns that must parse as numbers (a superset of FLOAT columns: a column
            read both as a number and as a category is fed as a string but still checked).
        metadata_types: entity metadata column -> Arrow type in the published Parquet.
        quoted_newlines: a sampled CSV record spans lines (a quoted field holds a newline); such
            files are then read unsplit, so no split boundary can fall inside a record.
        timestamps: columns features read date parts of; their values must be timestamps.
    """
    files: tuple[str, ...]
    headers: Mapping[str, tuple[str, ...]]
    types: Mapping[str, str]
    numeric: frozenset[str]
    metadata_types: Mapping[str, pa.DataType]
    quoted_newlines: bool = False
    timestamps: frozenset[str] = frozenset()

    def header_of(self, path: str) -> tuple[str, ...]:
        """The CSV header of an input file."""
        return self.headers[path]

    def arrow_type(self, column: str) -> pa.DataType:
        """Arrow type of a raw column as carried into entity tables."""
        if column in self.types:
            return ARROW_TYPES[self.types[column]]
        return self.metadata_types.get(column, pa.string())


def transform_column_types(config: Config) -> dict[str, str]:
    """Column -> raw type of every column tf.Transform reads (features and label)."""
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
        timestamps=frozenset(c for f in config.features.values() for c in f.timestamp_columns))


def _check_scalar_columns(config: Config, arrow_schema: pa.Schema, path: str) -> None:
    for feature in config.features.values():
        for column in feature.raw_columns:
            kind = arrow_schema.field(column).type
            if pa.types.is_nested(kind):
                raise ConfigError(f"features.{feature.name}: column {column!r} of {path} is {kind}; a feature "
                                  "reads one value per row")


def _check_columns(config: Config, available: set[str], path: str) -> None:
    shown = ", ".join(sorted(available)[:30])

    def missing(key: str, column: str) -> ConfigError:
        close = difflib.get_close_matches(column, sorted(available), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"{key}: column {column!r} is not in {path}{hint} (columns: {shown})")
    for feature in config.features.values():
        for column in feature.raw_columns:
            if column not in available:
                raise missing(f"features.{feature.name}.{'columns' if feature.type == 'cross' else 'column'}", column)
    named = [("model.label", config.label_column), ("split.column", config.split.column)]
    named += [("split.key", k) for k in config.split.key]
    named += [(f"entities[{i}].metadata", m) for i, e in enumerate(config.entities) for m in e.metadata]
    named += [(f"input.filters[{i}].column", f.column) for i, f in enumerate(config.input.filters)]
    for key, column in named:
        if column and column not in available:
            raise missing(key, column)

