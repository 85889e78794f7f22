"""Vectorised typing of clean batches with pyarrow; any doubt hands the batch to the per-row path.

The per-row path (`pipelines.rows`) is the reference: it types every value and gives each bad
row its reason. This module types a whole batch at once and returns None as soon as one value
would need a decision (a bad number, a missing label, a non-integer id, a field count that does
not match): then the caller decodes that batch row by row, so results never depend on the path.
"""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.core import dates
from pipelines.stages.preprocess.rows import RowTyper
from pipelines.stages.preprocess.schema import FLOAT, INT, STRING, TIME, WEIGHT, RawSchema

FLOAT32_MAX = 3.4e38


def read_csv_batch(lines: list[bytes], header: tuple[str, ...], delimiter: str) -> pa.Table | None:
    """CSV records -> a table of string columns, or None when a record is not a clean row."""
    data = b"\n".join(lines)
    # Records hold newlines only inside quoted fields (the source joins them); parsing for them
    # costs time, so only batches that have one ask for it.
    multiline = data.count(b"\n") >= len(lines)
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(header), block_size=1 << 26),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=False,
                                              newlines_in_values=multiline),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return table if table.num_rows == len(lines) else None


def type_batch(table: pa.Table, typer: RowTyper, schema: RawSchema, label: str | None) -> tuple[pa.Table, int] | None:
    """Raw columns -> the typed columns of `typer.arrow_schema`, and the out-of-range identity ids.

    Returns None when any value needs the per-row path.
    """
    arrays, out_of_range = [], 0
    for field in typer.arrow_schema:
        if field.name not in table.column_names:
            return None
        column = table.column(field.name).combine_chunks()
        kind = schema.types.get(field.name)
        if field.name in schema.required:
            typed = _required(column, kind)
        elif field.name == label:
            typed = _label(column, kind)
        elif kind == FLOAT:
            typed = _floats(column)
        elif kind == INT:
            typed, bad = _ids(column, typer.identity_buckets(field.name))
            out_of_range += bad
        elif kind == STRING:
            typed = _strings(column)
            if typed is not None and field.name in schema.numeric and _floats(typed) is None:
                return None
            if typed is not None and field.name in schema.timestamps and not dates.valid(typed).all():
                return None
        else:
            typed = _metadata(column, field.type)
        if typed is None:
            return None
        arrays.append(typed)
    return pa.Table.from_arrays(arrays, schema=typer.arrow_schema), out_of_range


def _required(column: pa.Array, kind: str) -> pa.Array | None:
    """A column no row may miss (sequences and graphs); None when one value is missing or bad."""
    if kind == STRING:
        typed = _strings(column)
        present = column.null_count == 0 and typed is not None and not pc.any(pc.equal(typed, "")).as_py()
        return typed if present else None
    if kind == TIME:
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            zone = getattr(column.type, "tz", None)
            micros = column.cast(pa.timestamp("us", tz=zone)).cast(pa.int64())
            numbers = pc.divide(micros.cast(pa.float64()), 1e6)
        else:
            numbers = _numbers(column)   # ISO 8601 strings are parsed by the per-row path
        finite = numbers is not None and numbers.null_count == 0 and pc.all(pc.is_finite(numbers)).as_py()
        return numbers if finite else None
    numbers = _numbers(column)
    positive = numbers is not None and numbers.null_count == 0 and pc.all(pc.greater(numbers, 0.0)).as_py()
    return numbers.cast(pa.float32()) if positive and kind == WEIGHT else None


def _metadata(column: pa.Array, arrow_type: pa.DataType) -> pa.Array | None:
    if pa.types.is_string(arrow_type) and not (_as_text(column) is not None or pa.types.is_integer(column.type)):
        return None  # floats and nested values are stringified by the per-row rules
    try:
        return column.cast(arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _as_text(column: pa.Array) -> pa.Array | None:
    return column if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) else None


def _strings(column: pa.Array) -> pa.Array | None:
    if pa.types.is_floating(column.type):
        return None  # 3.0 -> "3" is the per-row rule; keep one implementation of it
    if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type) or pa.types.is_timestamp(column.type):
        return pc.fill_null(column.cast(pa.string()), "")
    text = _as_text(column)
    return None if text is None else pc.fill_null(text.cast(pa.string()), "")


def _numbers(column: pa.Array) -> pa.Array | None:
    """float64 with nulls for missing values, or None when a value is not a finite float32 number."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        numbers = column.cast(pa.float64())
    elif _as_text(column) is not None:
        text = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
        try:
            numbers = text.cast(pa.float64())
        except pa.ArrowInvalid:
            return None
    else:
        return None
    if pc.any(pc.greater(pc.abs(numbers), FLOAT32_MAX)).as_py():
        return None
    return numbers


def _floats(column: pa.Array) -> pa.Array | None:
    numbers = _numbers(column)
    return None if numbers is None else pc.fill_null(numbers, float("nan")).cast(pa.float32())


def _ids(column: pa.Array, buckets: int) -> tuple[pa.Array | None, int]:
    numbers = _numbers(column)
    if numbers is None or not pc.all(pc.equal(pc.floor(pc.fill_null(numbers, 0.0)), pc.fill_null(numbers, 0.0))).as_py():
        return None, 0
    # Decided on the float64 values: an id too large for int64 (1e30) is out of range, as the
    # per-row rule says, instead of failing the cast.
    filled = pc.fill_null(numbers, -1.0)
    outside = pc.or_(pc.less(filled, 0.0), pc.greater_equal(filled, float(buckets)))
    bad = pc.sum(pc.and_(outside, pc.not_equal(filled, -1.0))).as_py() or 0
    return pc.if_else(outside, -1.0, filled).cast(pa.int64()), bad


def _label(column: pa.Array, kind: str) -> pa.Array | None:
    if kind == STRING:
        typed = _strings(column)
        return None if typed is None or pc.any(pc.equal(typed, "")).as_py() else typed
    numbers = _numbers(column)
    if numbers is None or numbers.null_count or pc.any(pc.is_nan(numbers)).as_py():
        return None
    return numbers.cast(pa.float32())
