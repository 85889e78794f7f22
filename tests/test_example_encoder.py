"""The numpy tf.Example encoder writes the records tfx-bsl's encoder and `frame_records` write."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from pipelines.stages.preprocess.batched_io import frame_records
from pipelines.stages.preprocess.example_encoder import frame_single_value_examples, numpy_encodable
from pipelines.stages.preprocess import pipeline
from pipelines.stages.preprocess.pipeline import ExampleCoder, encode_examples
from tests.conftest import unframed

INT64 = np.iinfo(np.int64)
# Each varint length from 1 to 10 bytes, on both sides of its boundaries.
BOUNDARIES = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**35, 2**42, 2**49, 2**56, 2**63 - 1,
              -1, INT64.min, 300]


def list_column(values: np.ndarray | list) -> pa.LargeListArray:
    values = pa.array(values)
    return pa.LargeListArray.from_arrays(pa.array(np.arange(len(values) + 1)), values)


def tfx_bsl_encoder(batch: pa.RecordBatch) -> tfxio.RecordBatchToExamplesEncoder:
    kinds = {pa.int64(): tf.int64, pa.float32(): tf.float32, pa.binary(): tf.string}
    spec = {field.name: tf.io.VarLenFeature(kinds[field.type.value_type]) for field in batch.schema}
    return tfxio.RecordBatchToExamplesEncoder(schema_utils.schema_from_feature_spec(spec))


def parsed(records: list[bytes]) -> list[bytes]:
    """Examples with their features in name order (a map's entry order is not part of the proto)."""
    return [tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records]


def test_every_varint_length_float_bit_pattern_and_long_names_frame_as_tfx_bsl_and_frame_records_do():
    rng = np.random.default_rng(7)
    rows = 5_000
    ints = np.concatenate([np.array(BOUNDARIES, np.int64), rng.integers(INT64.min, INT64.max, rows - len(BOUNDARIES))])
    floats = rng.normal(size=rows).astype(np.float32)
    floats[:5] = [np.nan, np.inf, -np.inf, -0.0, np.float32(1e-45)]
    columns = {"user": rng.permutation(ints), "item": rng.zipf(1.3, rows).astype(np.int64),
               "amount": floats, "day_hour": rng.integers(0, 168, rows),
               # A name of 130 bytes: its map entry's length takes two varint bytes.
               "a_" + "long_" * 25 + "name": rng.integers(-3, 3, rows)}
    batch = pa.RecordBatch.from_arrays([list_column(v) for v in columns.values()], names=list(columns))

    framed = frame_single_value_examples(batch)

    records = unframed(framed)
    assert len(records) == rows
    assert parsed(records) == parsed(tfx_bsl_encoder(batch).encode(batch))
    assert framed == frame_records(records)          # the same lengths and checksums as google-crc32c's
    first = tf.train.Example.FromString(records[0]).features.feature
    assert first["user"].int64_list.value == [columns["user"][0]]
    assert np.isnan(first["amount"].float_list.value[0])
    assert len({len(r) for r in records}) > 20 and max(map(len, records)) > 130   # many layouts, long ones


def test_a_batch_of_one_layout_and_one_row():
    batch = pa.RecordBatch.from_arrays([list_column([5]), list_column(np.array([0.5], np.float32))], names=["id", "x"])

    records = unframed(frame_single_value_examples(batch))

    assert parsed(records) == parsed(tfx_bsl_encoder(batch).encode(batch))
    assert tf.train.Example.FromString(records[0]).features.feature["x"].float_list.value == [0.5]


@pytest.mark.parametrize("column", [
    pa.LargeListArray.from_arrays(pa.array([0, 2, 2, 3]), pa.array([1, 2, 3], pa.int64())),   # token ids
    list_column([b"a", b"b", b"c"]),                                                           # bytes
    pa.LargeListArray.from_arrays(pa.array([0, 1, 2, 3]), pa.array([1, None, 3], pa.int64())),  # a missing value
])
def test_other_batches_are_left_to_tfx_bsl(column):
    batch = pa.RecordBatch.from_arrays([list_column(np.arange(3)), column], names=["id", "other"])
    coder = tfx_bsl_encoder(batch)

    assert frame_single_value_examples(batch) is None
    assert parsed(unframed(encode_examples((batch, None), ExampleCoder(coder, True)))) == parsed(coder.encode(batch))


def test_many_layouts_are_left_to_tfx_bsl():
    """Each layout costs numpy calls: 8 columns of 1-3 byte varints make thousands of them."""
    rng = np.random.default_rng(3)
    ids = [(2 ** rng.uniform(0, 21, 20_000)).astype(np.int64) for _ in range(8)]   # 1-3 varint bytes each
    batch = pa.RecordBatch.from_arrays([list_column(column) for column in ids], names=[f"id{i}" for i in range(8)])
    coder = tfx_bsl_encoder(batch)

    assert frame_single_value_examples(batch) is None
    assert parsed(unframed(encode_examples((batch, None), ExampleCoder(coder, True)))) == parsed(coder.encode(batch))


def test_a_schema_with_tensor_representations_is_left_to_tfx_bsl(monkeypatch):
    """tfx-bsl names a ragged output `tok` `tok$ragged_values`: only tfx-bsl knows its names."""
    ragged = schema_utils.schema_from_feature_spec({"tok$ragged_values": tf.io.VarLenFeature(tf.int64)})
    ragged.tensor_representation_group[""].tensor_representation["tok"].ragged_tensor.feature_path.step.append(
        "tok$ragged_values")
    dense = schema_utils.schema_from_feature_spec({"id": tf.io.FixedLenFeature([], tf.int64)})
    batch = pa.RecordBatch.from_arrays([list_column(np.arange(3))], names=["id"])
    coder = tfx_bsl_encoder(batch)

    assert not numpy_encodable(ragged) and numpy_encodable(dense) and numpy_encodable(schema_pb2.Schema())
    monkeypatch.setattr(pipeline, "frame_single_value_examples", lambda batch: pytest.fail("numpy path taken"))
    assert parsed(unframed(encode_examples((batch, None), ExampleCoder(coder, False)))) == parsed(coder.encode(batch))
