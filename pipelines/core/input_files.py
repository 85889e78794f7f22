"""Reading input files before any Beam work: matching them, opening them (gzip by name, as Beam
does), their headers and schemas, and samples of their rows; `inspect_input` and `embedpipe init`
read through these, and through `fs`, so every filesystem works.
"""
from __future__ import annotations

import concurrent.futures
import csv
import gzip
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import fs
from pipelines.core.errors import ConfigError

INSPECT_RECORDS = 1000
INSPECT_BYTES = 1 << 20
_THREADS = 16


def each(files: list[str], read) -> list:
    """`read` of every file, in file order; a few at a time, since remote reads wait on the network."""
    with concurrent.futures.ThreadPoolExecutor(min(_THREADS, len(files))) as pool:
        return list(pool.map(read, files))


def match_files(pattern: str) -> list[str]:
    try:
        files = fs.glob(pattern)
    except Exception as error:  # Beam raises BeamIOError for unknown schemes and unreadable dirs.
        raise ConfigError(f"input.path: cannot list {pattern!r} ({error})") from error
    files = [f for f in files if not fs.isdir(f)]
    if not files:
        raise ConfigError(f"input.path: no file matches {pattern!r}")
    return files


def csv_header(path: str, delimiter: str) -> tuple[str, ...]:
    with open_input(path) as handle:
        first = handle.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if not first:
        raise ConfigError(f"input.path: {path} is empty; a CSV input needs a header row")
    header = tuple(next(csv.reader([first], delimiter=delimiter)))
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ConfigError(f"input.path: {path}: column name {repeated[0]!r} appears {header.count(repeated[0])} "
                          "times in the header; rename one")
    return header


def open_input(path: str):
    """An input file opened for reading, decompressed when its name says gzip (as Beam reads it)."""
    handle = fs.open(path, "rb")
    return gzip.GzipFile(fileobj=handle) if path.endswith(".gz") else handle


def has_quoted_newline(path: str, delimiter: str) -> bool:
    """Whether a record in the first MiB of a CSV file spans lines (a quoted field with a newline)."""
    with open_input(path) as handle:
        sample = handle.read(INSPECT_BYTES)
    lines = sample.split(b"\n")[:-1] if len(sample) == INSPECT_BYTES else sample.split(b"\n")
    return any(line.count(b'"') % 2 for line in lines)


def parquet_schema(path: str) -> pa.Schema:
    try:
        with fs.open(path, "rb") as handle:
            return pq.read_schema(pa.BufferReader(handle.read()) if fs.is_remote(path) else handle)
    except (OSError, pa.ArrowException) as error:
        raise ConfigError(f"input.path: {path} is not a readable Parquet file ({error})") from None


def jsonl_keys(path: str) -> set[str]:
    keys: set[str] = set()
    with open_input(path) as handle:
        for line in itertools.islice(handle, INSPECT_RECORDS):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # bad lines are reported as invalid rows by the job itself
            if isinstance(record, dict):
                keys.update(record)
    return keys


def example_keys(path: str) -> set[str]:
    import tensorflow as tf
    keys: set[str] = set()
    compression = "GZIP" if path.endswith(".gz") else ""
    try:
        for record in tf.data.TFRecordDataset(path, compression_type=compression).take(INSPECT_RECORDS):
            keys.update(tf.train.Example.FromString(record.numpy()).features.feature.keys())
    except (tf.errors.DataLossError, ValueError):
        pass  # the job reports corrupt records itself; the keys seen so far are enough here
    return keys




def read_sample(path: str, fmt: str, rows: int, delimiter: str = ",", text_column: str = "text") -> list[dict]:
    """The first `rows` records of a file as dicts (CSV values are strings, as written).

    Raises:
        ConfigError: the file cannot be read as `fmt`.
    """
    try:
        if fmt == "parquet":
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(pa.BufferReader(handle.read()) if fs.is_remote(path) else handle)
                batch = next(parquet.iter_batches(batch_size=rows), None)
                return [] if batch is None else batch.to_pylist()
        with open_input(path) as handle:
            lines = [line.decode("utf-8", errors="replace") for line in itertools.islice(handle, rows + 1)]
    except (OSError, pa.ArrowException) as error:
        raise ConfigError(f"{path}: cannot read it as {fmt} ({error})") from None
    if fmt == "csv":
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader, [])
        return [dict(zip(header, fields)) for fields in reader if len(fields) == len(header)][:rows]
    if fmt == "jsonl":
        records = []
        for line in lines[:rows]:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records
    return [{text_column: line.rstrip("\r\n")} for line in lines[:rows] if line.strip()]


def format_of(path: str) -> str | None:
    """The input format a file name says (csv, parquet, jsonl or text), if any."""
    name = path.removesuffix(".gz").lower()
    for suffix, fmt in ((".csv", "csv"), (".tsv", "csv"), (".parquet", "parquet"), (".jsonl", "jsonl"),
                        (".json", "jsonl"), (".ndjson", "jsonl"), (".txt", "text"), (".cor", "text")):
        if name.endswith(suffix):
            return fmt
    return None
