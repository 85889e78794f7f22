"""TFRecord-framed tf.Examples of transformed record batches whose every feature holds one number a row.

tf.Transform's output for vocabularies, hash buckets, crosses and scaled numbers is one int64 or
float32 per row and feature. Then every example has the same fields, and the only bytes that
differ between two examples are the values: their varints (int64) or their 4 bytes (float32).
Rows whose values have the same encoded lengths share one layout: a template of constant bytes
into whose columns numpy writes the values. Each record's CRC32C is the template's CRC changed
by its value bytes alone (CRC is linear over GF(2)): a table step per value byte and a jump over
each run of constant bytes, for all the layout's rows at once. So no Python object is made per
row: tfx-bsl's `RecordBatchToExamplesEncoder` then `frame_records` took 0.75 us a row of the
preprocess benchmark (4 features, a batch of 131,072 rows), this 0.23. Any other batch (token lists, strings, missing
values, many layouts) returns None, for tfx-bsl to encode.

The wire format (tensorflow/core/example/example.proto, feature.proto): Example{1: Features{1:
repeated map entry {1: key, 2: Feature{2: FloatList{1: packed float} | 3: Int64List{1: packed
int64}}}}}, its map entries in key order.
"""
from __future__ import annotations

import functools

import google_crc32c
import numpy as np
import pyarrow as pa
from tensorflow_metadata.proto.v0 import schema_pb2

from pipelines.stages.preprocess.batched_io import frame_header, masked_crcs

_MAX_VARINT = 10  # bytes of a 64-bit varint (a negative int64)
_FLOAT_LIST, _INT64_LIST = 2, 3  # Feature's fields
_HEADER, _FOOTER = 12, 4  # a TFRecord's bytes before and after its data
# Each layout costs a few numpy calls per value byte: past this many, tfx-bsl's row loop is faster
# (8 Zipf-spread vocabulary ids made 3,920 layouts in 50,000 rows: 0.7 s here against 0.06 s).
_MAX_LAYOUTS = 64


def _crc_table() -> np.ndarray:
    """CRC32C (reflected, polynomial 0x82F63B78) of each byte value [256] uint32."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> np.uint32(1)) ^ np.uint32(0x82F63B78), table >> np.uint32(1))
    table.flags.writeable = False
    return table


_CRC_TABLE = _crc_table()


def _crc_step(crcs: np.ndarray, data: np.ndarray) -> np.ndarray:
    """CRC registers [rows] after one more byte each [rows] (uint8)."""
    return _CRC_TABLE[(crcs ^ data) & np.uint32(0xFF)] ^ (crcs >> np.uint32(8))


@functools.cache  # a pure function of k: a layout's gaps repeat from batch to batch
def _zero_run_tables(k: int) -> np.ndarray:
    """What k zero bytes do to a CRC register, per register byte: [4, 256] uint32, so that the
    register after them is the XOR of tables[j][byte j of the register] (a linear map)."""
    registers = (np.arange(256, dtype=np.uint32)[None, :] << (np.arange(4, dtype=np.uint32)[:, None] * np.uint32(8)))
    for _ in range(k):
        registers = _crc_step(registers, np.uint32(0))
    registers.flags.writeable = False
    return registers


def _skip_zeros(crcs: np.ndarray, k: int) -> np.ndarray:
    if k == 0:
        return crcs
    tables = _zero_run_tables(k)
    return (tables[0][crcs & np.uint32(0xFF)] ^ tables[1][(crcs >> np.uint32(8)) & np.uint32(0xFF)]
            ^ tables[2][(crcs >> np.uint32(16)) & np.uint32(0xFF)] ^ tables[3][crcs >> np.uint32(24)])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _single_values(batch: pa.RecordBatch) -> dict[str, np.ndarray] | None:
    """Feature name -> its values [rows] (int64 or float32), when every row holds exactly one."""
    if len(set(batch.schema.names)) < batch.num_columns:
        return None   # tfx-bsl's error
    rows = np.arange(batch.num_rows + 1)
    columns = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or column.null_count:
            return None
        values = column.values
        if values.null_count or values.type not in (pa.int64(), pa.float32()) or len(values) != len(column):
            return None
        if not np.array_equal(column.offsets.to_numpy(), rows):
            return None
        columns[name] = values.to_numpy()
    return columns


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    """Encoded length of each int64 [rows] as a varint: 1-10 bytes (negatives take 10)."""
    unsigned = values.view(np.uint64)
    lengths = np.ones(len(values), np.int64)
    for groups in range(1, _MAX_VARINT):
        lengths += unsigned >= np.uint64(1) << np.uint64(7 * groups)
    return lengths


def _varint_bytes(values: np.ndarray, length: int) -> np.ndarray:
    """The varints of int64 values [rows] that all take `length` bytes -> [rows, length] uint8."""
    shifts = np.arange(length, dtype=np.uint64) * np.uint64(7)
    groups = ((values.view(np.uint64)[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    groups[:, :-1] |= 0x80
    return groups


def _template(names: list[str], kinds: list[int], sizes: tuple[int, ...]) -> tuple[bytes, list[int]]:
    """A layout's example with zeroed values, and where each feature's value bytes start in it."""
    entries, starts, position = [], [], 0
    for name, kind, size in zip(names, kinds, sizes):
        entry = _field(1, _field(1, name.encode()) + _field(2, _field(kind, _field(1, bytes(size)))))
        starts.append(position + len(entry) - size)
        entries.append(entry)
        position += len(entry)
    features = b"".join(entries)
    header = _field(1, features)[:-len(features)]
    return header + features, [start + len(header) for start in starts]


def _framed_layout(names: list[str], kinds: list[int], sizes: tuple[int, ...],
                   values: list[np.ndarray]) -> np.ndarray:
    """The framed records of rows that share one layout: [rows, 12 + example bytes + 4] uint8.

    Args:
        names, kinds: the features, in key order, and their Feature field.
        sizes: each feature's value bytes in this layout.
        values: each feature's values of these rows [rows].
    """
    template, starts = _template(names, kinds, sizes)
    width = _HEADER + len(template) + _FOOTER
    framed = np.tile(np.frombuffer(frame_header(len(template)) + template + bytes(_FOOTER), np.uint8),
                     (len(values[0]), 1))                                                     # [rows, width]
    crcs = np.zeros(len(values[0]), np.uint32)   # the CRC of the value bytes alone (template zeroed)
    done = 0
    for kind, start, size, column in zip(kinds, starts, sizes, values):
        encoded = (column.astype("<f4").view(np.uint8).reshape(-1, 4) if kind == _FLOAT_LIST
                   else _varint_bytes(column, size))                                          # [rows, size]
        framed[:, _HEADER + start:_HEADER + start + size] = encoded
        crcs = _skip_zeros(crcs, start - done)
        for byte in range(size):
            crcs = _crc_step(crcs, encoded[:, byte])
        done = start + size
    crcs = _skip_zeros(crcs, len(template) - done) ^ np.uint32(google_crc32c.value(template))
    framed[:, width - _FOOTER:] = masked_crcs(crcs).astype("<u4").view(np.uint8).reshape(-1, _FOOTER)
    return framed


def numpy_encodable(schema: schema_pb2.Schema) -> bool:
    """Whether tfx-bsl names each example feature after its column: no ragged or other tensor
    representation in tf.Transform's output schema (a ragged `tok` would be `tok$ragged_values`)."""
    return not schema.tensor_representation_group


def frame_single_value_examples(batch: pa.RecordBatch) -> bytes | None:
    """The rows of `batch` as TFRecord-framed serialized tf.Examples, in order (what `frame_records`
    gives for tfx-bsl's examples, but for the order of a map's entries), or None unless every
    column is a list of exactly one int64 or float32 a row and the rows take at most
    `_MAX_LAYOUTS` layouts. Features are named after the columns: only for a schema without tensor
    representations (`numpy_encodable`) are those tfx-bsl's names too.

    Args:
        batch: tf.Transform's transformed record batch (list columns) [rows].
    """
    columns = _single_values(batch)
    if not columns or not batch.num_rows:
        return None
    names = sorted(columns)
    kinds = [_FLOAT_LIST if columns[n].dtype == np.float32 else _INT64_LIST for n in names]
    sizes = [np.full(batch.num_rows, 4) if kind == _FLOAT_LIST else _varint_lengths(columns[name])
             for name, kind in zip(names, kinds)]                                            # [features][rows]
    # Rows grouped by layout: a code of their value sizes (kept small), one sort.
    code = np.zeros(batch.num_rows, np.int64)
    for size in sizes:
        code = code * _MAX_VARINT + size - 1
        if code.max() >= 1 << 50:
            code = np.unique(code, return_inverse=True)[1].reshape(-1)
    order = np.argsort(code, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(code[order])) + 1)
    if len(groups) > _MAX_LAYOUTS:
        return None
    layouts = [_framed_layout(names, kinds, tuple(int(size[rows[0]]) for size in sizes),
                              [columns[name][rows] for name in names]) for rows in groups]
    if len(layouts) == 1:
        return layouts[0].tobytes()
    # Each row's record left-aligned in a row of the widest layout, then the padding dropped.
    widths = np.empty(batch.num_rows, np.int64)
    padded = np.zeros((batch.num_rows, max(framed.shape[1] for framed in layouts)), np.uint8)
    for rows, framed in zip(groups, layouts):
        widths[rows] = framed.shape[1]
        padded[rows, :framed.shape[1]] = framed
    return padded[np.arange(padded.shape[1]) < widths[:, None]].tobytes()
