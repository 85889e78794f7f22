"""Raw column types and input inspection, both decided once before any Beam work starts.

Inspection reads every input file's header (CSV) or footer (Parquet), so a missing column, a
duplicate column name or an unreadable file is a one-line error naming the file before any work.
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import difflib
import itertools
import json
from typing import Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import fs
from pipelines.core.config import Config
from pipelines.core.errors import ConfigError

STRING, FLOAT, INT = "string", "float", "int"
# An event's order (Unix seconds, float64: float32 would round them to minutes) and an edge's weight.
TIME, WEIGHT = "time", "weight"
ARROW_TYPES = {STRING: pa.string(), FLOAT: pa.float32(), INT: pa.int64(), TIME: pa.float64(), WEIGHT: pa.float32()}
_INSPECT_RECORDS = 1000
_INSPECT_BYTES = 1 << 20
_INSPECT_THREADS = 16


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
        required: column -> the config key naming it, for columns without which a row is invalid
            (a group, an order, an item, a node id, a weight).
    """
    files: tuple[str, ...]
    headers: Mapping[str, tuple[str, ...]]
    types: Mapping[str, str]
    numeric: frozenset[str]
    metadata_types: Mapping[str, pa.DataType]
    quoted_newlines: bool = False
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
    files = _match(config.input.path)
    headers: dict[str, tuple[str, ...]] = {}
    metadata_types: dict[str, pa.DataType] = {}
    quoted_newlines = False
    fmt = config.input.format
    if fmt == "csv":
        headers = dict(zip(files, _each(files, lambda f: _csv_header(f, config.input.delimiter))))
        for path, header in headers.items():
            _check_columns(config, set(header), path)
        quoted_newlines = _has_quoted_newline(files[0], config.input.delimiter)
    elif fmt == "parquet":
        schemas = dict(zip(files, _each(files, _parquet_schema)))
        for path, arrow_schema in schemas.items():
            _check_columns(config, set(arrow_schema.names), path)
            _check_scalar_columns(config, arrow_schema, path)
        metadata_types = {f.name: _published_type(f.type) for f in schemas[files[0]]}
    else:
        available = {"jsonl": _jsonl_keys, "tfrecord": _example_keys}.get(
            fmt, lambda _: {config.input.text_column})(files[0])
        _check_columns(config, available, files[0])
    types = transform_column_types(config)
    numeric = frozenset(c for f in config.features.values() if f.type == "numeric" for c in f.raw_columns)
    metadata = {m for e in config.entities for m in e.metadata}
    return RawSchema(
        files=tuple(files), headers=headers, types=types, numeric=numeric,
        metadata_types={m: metadata_types.get(m, pa.string()) for m in metadata}, quoted_newlines=quoted_newlines,
        required=required_columns(config))


def _each(files: list[str], read) -> list:
    """`read` of every file, in file order; a few at a time, since remote reads wait on the network."""
    with concurrent.futures.ThreadPoolExecutor(min(_INSPECT_THREADS, len(files))) as pool:
        return list(pool.map(read, files))


def _match(pattern: str) -> list[str]:
    try:
        files = fs.glob(pattern)
    except Exception as error:  # Beam raises BeamIOError for unknown schemes and unreadable dirs.
        raise ConfigError(f"input.path: cannot list {pattern!r} ({error})") from error
    files = [f for f in files if not fs.isdir(f)]
    if not files:
        raise ConfigError(f"input.path: no file matches {pattern!r}")
    return files


def _csv_header(path: str, delimiter: str) -> tuple[str, ...]:
    with _open_input(path) as handle:
        first = handle.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if not first:
        raise ConfigError(f"input.path: {path} is empty; a CSV input needs a header row")
    header = tuple(next(csv.reader([first], delimiter=delimiter)))
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ConfigError(f"input.path: {path}: column name {repeated[0]!r} appears {header.count(repeated[0])} "
                          "times in the header; rename one")
    return header


def _open_input(path: str):
    """An input file opened for reading, decompressed when its name says gzip (as Beam reads it)."""
    handle = fs.open(path, "rb")
    if path.endswith(".gz"):
        import gzip
        return gzip.GzipFile(fileobj=handle)
    return handle


def _has_quoted_newline(path: str, delimiter: str) -> bool:
    """Whether a record in the first MiB of a CSV file spans lines (a quoted field with a newline)."""
    with _open_input(path) as handle:
        sample = handle.read(_INSPECT_BYTES)
    lines = sample.split(b"\n")[:-1] if len(sample) == _INSPECT_BYTES else sample.split(b"\n")
    return any(line.count(b'"') % 2 for line in lines)


def _parquet_schema(path: str) -> pa.Schema:
    try:
        with fs.open(path, "rb") as handle:
            return pq.read_schema(pa.BufferReader(handle.read()) if fs.is_remote(path) else handle)
    except (OSError, pa.ArrowException) as error:
        raise ConfigError(f"input.path: {path} is not a readable Parquet file ({error})") from None


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


def _jsonl_keys(path: str) -> set[str]:
    keys: set[str] = set()
    with _open_input(path) as handle:
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


def _check_columns(config: Config, available: set[str], path: str) -> None:
    shown = ", ".join(sorted(available)[:30])

    def missing(key: str, column: str) -> ConfigError:
        close = difflib.get_close_matches(column, sorted(available), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"{key}: column {column!r} is not in {path}{hint} (columns: {shown})")
    for key, column in _feature_columns(config):
        if column not in available:
            raise missing(key, column)
    named = [("model.label", config.label_column), ("split.column", config.split.column)]
    named += [("split.key", k) for k in config.split.key]
    named += [(f"entities[{i}].metadata", m) for i, e in enumerate(config.entities) for m in e.metadata]
    for key, column in named:
        if column and column not in available:
            raise missing(key, column)


def _published_type(arrow_type: pa.DataType) -> pa.DataType:
    """Parquet metadata keeps simple input types; anything nested is published as a string."""
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_floating(arrow_type):
        return pa.float64()
    if pa.types.is_boolean(arrow_type):
        return pa.bool_()
    return pa.string()
