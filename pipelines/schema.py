"""Raw column types and input inspection, both decided once before any Beam work starts."""
from __future__ import annotations

import dataclasses
import io
import itertools
import json
from typing import Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.config import Config, ConfigError

STRING, FLOAT, INT = "string", "float", "int"
ARROW_TYPES = {STRING: pa.string(), FLOAT: pa.float32(), INT: pa.int64()}
_INSPECT_RECORDS = 1000


@dataclasses.dataclass(frozen=True)
class RawSchema:
    """How each raw column the job reads is typed.

    Attributes:
        files: input files matched by `input.path`.
        header: CSV column names in file order (empty for other formats).
        types: column -> STRING | FLOAT | INT, for columns fed to tf.Transform.
        numeric: columns that must parse as numbers (a superset of FLOAT columns: a column
            read both as a number and as a category is fed as a string but still checked).
        metadata_types: entity metadata column -> Arrow type in the published Parquet.
    """
    files: tuple[str, ...]
    header: tuple[str, ...]
    types: Mapping[str, str]
    numeric: frozenset[str]
    metadata_types: Mapping[str, pa.DataType]

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
    """Matches the input files and checks that every configured column exists.

    Raises:
        ConfigError: no file matches, or a configured column is not in the input.
    """
    files = _match(config.input.path)
    header: tuple[str, ...] = ()
    metadata_types: dict[str, pa.DataType] = {}
    fmt = config.input.format
    if fmt == "csv":
        header = _csv_header(files[0], config.input.delimiter)
        available = set(header)
    elif fmt == "parquet":
        with FileSystems.open(files[0]) as handle:
            arrow_schema = pq.read_schema(io.BytesIO(handle.read()))
        available = set(arrow_schema.names)
        metadata_types = {f.name: _published_type(f.type) for f in arrow_schema}
    elif fmt == "jsonl":
        available = _jsonl_keys(files[0])
    elif fmt == "tfrecord":
        available = _example_keys(files[0])
    else:
        available = {config.input.text_column}
    _check_columns(config, available)
    types = transform_column_types(config)
    numeric = frozenset(c for f in config.features.values() if f.type == "numeric" for c in f.raw_columns)
    metadata = {m for e in config.entities for m in e.metadata}
    return RawSchema(
        files=tuple(files), header=header, types=types, numeric=numeric,
        metadata_types={m: metadata_types.get(m, pa.string()) for m in metadata})


def _match(pattern: str) -> list[str]:
    try:
        results = FileSystems.match([pattern])[0].metadata_list
    except Exception as error:  # Beam raises BeamIOError for unknown schemes and unreadable dirs.
        raise ConfigError(f"input.path: cannot list {pattern!r} ({error})") from error
    files = sorted(m.path for m in results)
    if not files:
        raise ConfigError(f"input.path: no file matches {pattern!r}")
    return files


def _csv_header(path: str, delimiter: str) -> tuple[str, ...]:
    import csv
    with FileSystems.open(path) as handle:
        first = handle.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if not first:
        raise ConfigError(f"input.path: {path} is empty; a CSV input needs a header row")
    return tuple(next(csv.reader([first], delimiter=delimiter)))


def _jsonl_keys(path: str) -> set[str]:
    keys: set[str] = set()
    with FileSystems.open(path) as handle:
        for line in itertools.islice(handle, _INSPECT_RECORDS):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # bad lines are reported as invalid rows by the job itself
            if isinstance(record, dict):
                keys.update(record)
    return keys


def _example_keys(path: str) -> set[str]:
    import tensorflow as tf
    keys: set[str] = set()
    compression = "GZIP" if path.endswith(".gz") else ""
    try:
        for record in tf.data.TFRecordDataset(path, compression_type=compression).take(_INSPECT_RECORDS):
            keys.update(tf.train.Example.FromString(record.numpy()).features.feature.keys())
    except (tf.errors.DataLossError, ValueError):
        pass  # the job reports corrupt records itself; the keys seen so far are enough here
    return keys


def _check_columns(config: Config, available: set[str]) -> None:
    shown = ", ".join(sorted(available)[:30])
    for feature in config.features.values():
        for column in feature.raw_columns:
            if column not in available:
                key = "columns" if feature.type == "cross" else "column"
                raise ConfigError(f"features.{feature.name}.{key}: column {column!r} is not in the input "
                                  f"(columns: {shown})")
    named = [("model.label", config.label_column), ("split.column", config.split.column)]
    named += [("split.key", k) for k in config.split.key]
    named += [(f"entities[{i}].metadata", m) for i, e in enumerate(config.entities) for m in e.metadata]
    for key, column in named:
        if column and column not in available:
            raise ConfigError(f"{key}: column {column!r} is not in the input (columns: {shown})")


def _published_type(arrow_type: pa.DataType) -> pa.DataType:
    """Parquet metadata keeps simple input types; anything nested is published as a string."""
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_floating(arrow_type):
        return pa.float64()
    if pa.types.is_boolean(arrow_type):
        return pa.bool_()
    return pa.string()
