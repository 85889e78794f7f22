"""tf.Transform analyze + transform of every feature type on a handful of rows, with exact values."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.core.config_parse import config_from_dict
from pipelines.stages.preprocess.pipeline import AnalyzeAndTransform, TransformInputs
from pipelines.stages.preprocess.rows import RowTyper
from pipelines.stages.preprocess.schema import RawSchema, transform_column_types
from tests.conftest import unframed

CONFIG = config_from_dict({
    "name": "types",
    "input": {"path": "x.csv", "format": "csv"},
    "features": {
        "idx": {"type": "numeric", "normalize": "none"},
        "user": {"type": "vocabulary"},
        "user_top": {"type": "vocabulary", "column": "user", "top_k": 2},
        "user_freq": {"type": "vocabulary", "column": "user", "frequency_threshold": 2, "num_oov_buckets": 2},
        "pay": {"type": "vocabulary_list", "values": ["Cash", "Credit Card"]},
        "area": {"type": "identity", "num_buckets": 5},
        "company": {"type": "hash", "hash_buckets": 10},
        "day_hour": {"type": "cross", "columns": ["day", "hour"], "hash_buckets": 168},
        "miles": {"type": "numeric", "normalize": "zscore"},
        "miles_01": {"type": "numeric", "column": "miles", "normalize": "minmax"},
        "miles_q": {"type": "numeric", "column": "miles", "bucketize": 2},
        "genres": {"type": "text", "delimiter": "|"},
    },
    "model": {"kind": "supervised", "label": "fare"},
    "entities": [{"name": "user", "key": "user"}],
})
#        user  pay            area  company      day  hour  miles  genres                  fare
ROWS = [("a", "Cash",        1,    "Flash Cab", "3", "17", 1.0,   "Comedy|Drama",          5.0),
        ("b", "Credit Card", 4,    "Blue",      "3", "17", 3.0,   "drama",                 6.0),
        ("a", "Cash",        9,    "Flash Cab", "4", "17", None,  "",                      7.0),
        ("c", "Dispute",     None, "",          "3", "1",  5.0,   "Comedy|Drama|War",      8.0),
        ("a", "Cash",        0,    "Blue",      "3", "17", 7.0,   "drama | comedy",        9.0),
        ("b", "Cash",        2,    "Blue",      "7", "23", 8.0,   "Drama",                 10.0),
        ("",  "Cash",        3,    "Blue",      "7", "23", 9.0,   "DRAMA",                 11.0)]


def typed_batch() -> pa.RecordBatch:
    types = transform_column_types(CONFIG)
    schema = RawSchema(files=(), headers={}, types=types, numeric=frozenset({"miles", "idx"}), metadata_types={})
    typer = RowTyper(CONFIG, schema)
    rows = []
    for index, (user, pay, area, company, day, hour, miles, genres, fare) in enumerate(ROWS):
        raw = {"idx": index, "user": user, "pay": pay, "area": area, "company": company, "day": day, "hour": hour,
               "miles": miles, "genres": genres, "fare": fare}
        rows.append(typer.type_row(raw)[0])
    arrays = [pa.array(list(column), field.type) for column, field in zip(zip(*rows), typer.arrow_schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=typer.arrow_schema), schema


def decode(serialized: bytes) -> dict:
    features = tf.train.Example.FromString(serialized).features.feature
    out = {}
    for name, feature in features.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value)
        out[name] = values if name == "genres" else values[0]
    return out


def hash_bucket(text: str, buckets: int) -> int:
    return int(tf.strings.to_hash_bucket_fast([text], buckets).numpy()[0])


def check(examples: list[bytes]) -> None:
    rows = sorted((decode(e) for e in examples), key=lambda r: r["idx"])
    assert len(rows) == len(ROWS)
    column = lambda name: [r[name] for r in rows]  # noqa: E731
    # vocabulary by frequency: a(3) b(2) c(1); "" (missing) -> OOV
    assert column("user") == [0, 1, 0, 2, 0, 1, 3]
    assert column("user_top") == [0, 1, 0, 2, 0, 1, 2]                 # top_k 2: c is OOV (id 2)
    assert column("user_freq")[:6] == [0, 1, 0, column("user_freq")[3], 0, 1]
    assert column("user_freq")[3] in (2, 3)                            # c below threshold: one of 2 OOV buckets
    assert column("pay") == [0, 1, 0, 2, 0, 0, 0]                      # not in the list -> OOV id 2
    assert column("area") == [1, 4, 5, 5, 0, 2, 3]                     # out of range or missing -> bucket 5
    assert column("company") == [hash_bucket(c, 10) for c in ("Flash Cab", "Blue", "Flash Cab", "", "Blue", "Blue",
                                                               "Blue")]
    assert hash_bucket("Flash Cab", 10) == 8 and hash_bucket("3|17", 168) == 1    # FarmHash: pinned
    day_hour = column("day_hour")
    assert day_hour[0] == day_hour[1] == day_hour[4] == hash_bucket("3|17", 168)
    assert day_hour[5] == day_hour[6] != day_hour[2]
    miles = np.array([1, 3, 5.5, 5, 7, 8, 9])                          # missing -> mean of the others (5.5)
    observed = np.delete(miles, 2)                                      # z-score statistics of observed values
    np.testing.assert_allclose(column("miles"), (miles - observed.mean()) / observed.std(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(column("miles_01"), (miles - 1) / 8, rtol=1e-5)
    assert column("miles_q")[0] == 0 and column("miles_q")[-1] == 1
    # tokens lower-cased and stripped: drama(6) comedy(3) war(1); empty text -> no ids
    assert column("genres") == [[1, 0], [0], [], [1, 0, 2], [0, 1], [0], [0]]
    assert column("fare") == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]


def test_every_feature_type(tmp_path):
    batch, schema = typed_batch()
    with TestPipeline() as pipeline:
        with tft_beam.Context(temp_dir=str(tmp_path)):
            train = pipeline | "CreateTrain" >> beam.Create([batch])
            evaluation = pipeline | "CreateEval" >> beam.Create([batch.slice(0, 2)])
            outputs = TransformInputs(train, train, evaluation) | AnalyzeAndTransform(CONFIG, schema)
            assert_that(outputs.train | "FlattenTrain" >> beam.FlatMap(unframed), check)
            eval_users = outputs.eval | beam.FlatMap(unframed) | beam.Map(lambda e: decode(e)["user"])
            assert_that(eval_users, equal_to([0, 1]), label="CheckEval")   # eval uses the train vocabulary
