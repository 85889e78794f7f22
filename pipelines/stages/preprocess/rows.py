"""Raw records -> typed rows: decoding per input format, typing per column, the split decision.

Missing values (an empty CSV field, a JSON null, an absent key or tf.Example feature) get these
defaults: categorical strings -> "" (the OOV bucket of a vocabulary, the hash bucket of "" for
hashes), identity ids -> -1 (the default bucket), numbers -> NaN (imputed with the training mean
by the transform). A missing or non-finite label makes the row invalid, and so does a nested
value (a JSON object or list) where a column holds one value. Booleans are the categories
"true" and "false", as JSON writes them. Sequences and graphs have no defaults: a row without its
group, order, item, node id or weight is invalid, and so is an order that is neither a number nor
an ISO 8601 date-time (UTC unless it says otherwise) or a weight that is not a positive number.
"""
from __future__ import annotations

import base64
import csv
import datetime
import hashlib
import json
import math
from typing import Any, Callable, Mapping

import pyarrow as pa

from pipelines.core.config import Config
from pipelines.core.dates import is_timestamp
from pipelines.stages.preprocess.batched_io import CorruptRecord
from pipelines.stages.preprocess.schema import FLOAT, INT, STRING, TIME, WEIGHT, RawSchema

EVAL_FLAGS = frozenset({"1", "true", "t", "yes", "y", "eval"})
_HASH_SCALE = float(2 ** 64)


class InvalidRow(ValueError):
    """The record cannot be used; the message is the reason written to `invalid/`.

    Attributes:
        kind: the reason without the offending value ("column 'x': not a number"), under which
            invalid rows are counted and summarised.
    """

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind or message


def record_text(record: Any) -> str:
    """The raw record as it is written to `invalid/` (bytes that are not UTF-8 as base64)."""
    if isinstance(record, bytes):
        try:
            return record.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(record).decode("ascii")
    if isinstance(record, dict):
        return json.dumps(record, default=str, sort_keys=True)
    return str(record)


def _utf8(record: bytes) -> str:
    try:
        return record.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRow(f"invalid UTF-8 at byte {error.start}", "invalid UTF-8") from error


def make_decoder(config: Config, schema: RawSchema) -> Callable[[Any, str], Mapping[str, Any]]:
    """Returns a function (raw record, its file) -> {column: value or None} for the configured format."""
    fmt = config.input.format
    if fmt == "csv":
        delimiter = config.input.delimiter

        def decode_csv(record: bytes, source: str) -> Mapping[str, Any]:
            header = schema.header_of(source)
            try:
                fields = next(csv.reader([_utf8(record)], delimiter=delimiter, strict=True), [])
            except csv.Error as error:
                raise InvalidRow(f"not a CSV row ({error})", "not a CSV row") from None
            if len(fields) != len(header):
                raise InvalidRow(f"expected {len(header)} CSV fields, got {len(fields)}", "wrong number of CSV fields")
            return dict(zip(header, fields))
        return decode_csv
    if fmt == "jsonl":
        def decode_json(record: bytes, source: str) -> Mapping[str, Any]:
            try:
                value = json.loads(_utf8(record))
            except ValueError as error:
                raise InvalidRow(f"invalid JSON ({error.msg} at column {error.colno})", "invalid JSON") from error
            if not isinstance(value, dict):
                raise InvalidRow(f"a JSON line must be an object, got {type(value).__name__}",
                                 "JSON line is not an object")
            return value
        return decode_json
    if fmt == "text":
        column = config.input.text_column
        return lambda record, source: {column: _utf8(record)}
    if fmt == "tfrecord":
        return _decode_example
    return lambda record, source: record  # parquet rows arrive as dicts


def _decode_example(record: bytes, source: str) -> Mapping[str, Any]:
    from tensorflow.core.example import example_pb2
    if isinstance(record, CorruptRecord):
        raise InvalidRow(record.reason, "corrupt TFRecord data")
    try:
        example = example_pb2.Example.FromString(record)
    except Exception as error:  # protobuf raises DecodeError, not a public subclass of ValueError
        raise InvalidRow("not a serialized tf.Example") from error
    values: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        items = list(getattr(feature, kind).value) if kind else []
        if len(items) > 1:
            raise InvalidRow(f"feature {name!r} has {len(items)} values; one is expected",
                             f"feature {name!r}: several values")
        values[name] = items[0] if items else None
    return values


class RowTyper:
    """Types one decoded row into the columns of a raw record batch.

    The output columns are the tf.Transform inputs (typed per `RawSchema.types`) followed by the
    entity metadata columns (typed per `RawSchema.metadata_types`).
    """

    def __init__(self, config: Config, schema: RawSchema):
        self.columns = tuple(schema.types) + tuple(m for m in schema.metadata_types if m not in schema.types)
        self.arrow_schema = pa.schema([(c, schema.arrow_type(c)) for c in self.columns])
        self._types = schema.types
        self._numeric = schema.numeric
        self._timestamps = schema.timestamps
        self._required = schema.required
        self._label = config.label_column
        self._identity_ranges = {f.column: f.num_buckets for f in config.features.values() if f.type == "identity"}

    def identity_buckets(self, column: str) -> int:
        return self._identity_ranges[column]

    def type_row(self, row: Mapping[str, Any]) -> tuple[list[Any], int]:
        """Returns the typed values in `columns` order and the number of out-of-range identity ids.

        Raises:
            InvalidRow: a value cannot be typed or the label is missing.
        """
        values = []
        out_of_range = 0
        for column in self.columns:
            value = row.get(column)
            kind = self._types.get(column)
            if isinstance(value, (dict, list)) and column in self._types:
                shape = "an object" if isinstance(value, dict) else "a list"
                raise InvalidRow(f"column {column!r}: {shape} where one value is expected",
                                 f"column {column!r}: nested value")
            if column in self._required:
                value = _required(self._required[column], column, value, kind)
            elif column == self._label:
                value = self._label_value(column, value, kind)
            elif kind == FLOAT:
                value = _number(column, value)
            elif kind == INT:
                value = _integer(column, value)
                if not 0 <= value < self._identity_ranges[column]:
                    out_of_range += value != -1
                    value = -1
            elif kind == STRING:
                if column in self._numeric:
                    _number(column, value)
                value = _string(column, value)
                if column in self._timestamps and value and not is_timestamp(value):
                    raise InvalidRow(f"column {column!r}: {value[:50]!r} is not a timestamp (epoch seconds or "
                                     "ISO-8601)", f"column {column!r}: not a timestamp")
            else:
                value = _metadata(column, value, self.arrow_schema.field(column).type)
            values.append(value)
        return values, out_of_range

    def _label_value(self, column: str, value: Any, kind: str) -> Any:
        if value is None or value == "":
            raise InvalidRow(f"label {column!r} is missing")
        if kind == STRING:
            return _string(column, value)
        number = _number(column, value)
        if math.isnan(number):
            raise InvalidRow(f"label {column!r} is NaN")
        return number


def _required(key: str, column: str, value: Any, kind: str) -> Any:
    """A value a sequences or graph row cannot do without; `key` names the config key in reasons."""
    if value is None or value == "" or value == b"" or (isinstance(value, float) and math.isnan(value)):
        raise InvalidRow(f"{key}: no value in column {column!r}", f"{key}: missing value")
    if kind == TIME:
        return _time(key, value)
    if kind == WEIGHT:
        try:
            weight = _number(column, value)
        except InvalidRow:
            weight = math.nan   # not a number, or beyond float32: said as the weight's own reason
        if not weight > 0:
            raise InvalidRow(f"{key}: {str(value)[:50]!r} is not a positive number", f"{key}: not a positive number")
        return weight
    return _string(column, value)


def _time(key: str, value: Any) -> float:
    """Seconds since the epoch of a number (taken as seconds) or an ISO 8601 date-time (UTC when it
    has no offset)."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        moment = value if isinstance(value, datetime.datetime) else datetime.datetime.combine(value, datetime.time())
    else:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.datetime.fromisoformat(text.strip())
            except ValueError:
                raise InvalidRow(f"{key}: {text[:50]!r} is neither a number nor an ISO 8601 date-time",
                                 f"{key}: not a number or date-time") from None
        else:
            if not math.isfinite(number):
                raise InvalidRow(f"{key}: {text[:50]!r} is not a finite number", f"{key}: not a number or date-time")
            return number
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _string(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidRow(f"column {column!r}: invalid UTF-8", "invalid UTF-8") from error
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 3.0 from a typed format is the category "3", as in a CSV
    return str(value)


def _metadata(column: str, value: Any, arrow_type: pa.DataType) -> Any:
    """Metadata keeps its input type; a value that does not fit it makes the row invalid."""
    if value is None or (value == "" and not pa.types.is_string(arrow_type)):
        return None
    if pa.types.is_string(arrow_type):
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        return _string(column, value)
    try:
        return {pa.int64(): int, pa.float64(): float, pa.bool_(): bool}[arrow_type](value)
    except (TypeError, ValueError):
        raise InvalidRow(f"column {column!r}: {str(value)[:50]!r} is not of type {arrow_type}",
                         f"column {column!r}: not of type {arrow_type}") from None


def _number(column: str, value: Any) -> float:
    if value is None or value == "" or value == b"":
        return math.nan
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRow(f"column {column!r}: {str(value)[:50]!r} is not a number",
                         f"column {column!r}: not a number") from None
    if math.isinf(number) or abs(number) > 3.4e38:
        raise InvalidRow(f"column {column!r}: {str(value)[:50]!r} is out of float32 range",
                         f"column {column!r}: out of float32 range")
    return number


def _integer(column: str, value: Any) -> int:
    number = _number(column, value)
    if math.isnan(number):
        return -1
    if not number.is_integer():
        raise InvalidRow(f"column {column!r}: {str(value)[:50]!r} is not an integer id",
                         f"column {column!r}: not an integer id")
    return int(number)


class Splitter:
    """Deterministic train/eval decision: the same row lands in the same split on every runner.

    A row is eval when the first 8 bytes of the BLAKE2b digest of its split key (the key columns
    joined by "\\x1f", or the whole raw record), read as a big-endian integer, are below
    `eval_fraction` * 2**64.
    """

    def __init__(self, config: Config):
        self._never = config.graph is not None   # a graph holds out walks, not edges
        self._column = config.split.column
        self._key = config.split.key
        # An integer is below a float exactly when it is below the float's ceiling, and 8-byte
        # big-endian digests sort as their integers: comparing bytes skips int.from_bytes.
        limit = math.ceil(config.split.eval_fraction * _HASH_SCALE)
        self._limit = limit.to_bytes(8, "big") if limit < 2 ** 64 else None

    @property
    def columns(self) -> list[str]:
        """Raw columns the decision reads (none when the whole record is hashed)."""
        return [self._column] if self._column else list(self._key)

    @property
    def reads_records(self) -> bool:
        """Whether the decision hashes whole raw records."""
        return not (self._never or self._column or self._key)

    def eval_mask(self, columns: Mapping[str, list], records: list[Any] | None, rows: int) -> list[bool]:
        """`is_eval` of a batch of `rows` rows given as raw column lists (and the raw records, when
        `reads_records`)."""
        if self._never:
            return [False] * rows
        if self._column:
            return [_is_flag(value) for value in columns[self._column]]
        if self._key:
            keys = ["\x1f".join(map(str, values)).encode("utf-8") for values in zip(*(columns[k] for k in self._key))]
        else:
            keys = _record_bytes(records)
        return self._hashed_below(keys)

    def is_eval(self, row: Mapping[str, Any], record: Any) -> bool:
        if self._never:
            return False
        if self._column:
            return _is_flag(row.get(self._column, ""))
        text = "\x1f".join(str(row.get(k, "")) for k in self._key) if self._key else record_text(record)
        return self._hashed_below([text.encode("utf-8")])[0]

    def _hashed_below(self, keys: list[bytes]) -> list[bool]:
        if self._limit is None:
            return [True] * len(keys)
        blake2b, limit = hashlib.blake2b, self._limit
        return [blake2b(key, digest_size=8).digest() < limit for key in keys]


def _record_bytes(records: list[Any]) -> list[bytes]:
    """Each record's `record_text` as UTF-8. Records that are all UTF-8 bytes (CSV and text lines)
    are their own text: one decode of the joined batch checks that (a newline between them keeps
    a sequence from being completed by the next record) instead of a decode and encode per record.
    """
    try:
        b"\n".join(records).decode("utf-8")
        return records
    except (TypeError, UnicodeDecodeError):
        return [record_text(record).encode("utf-8") for record in records]


def _is_flag(value: Any) -> bool:
    return str(value).strip().lower() in EVAL_FLAGS
