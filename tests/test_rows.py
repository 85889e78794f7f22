"""Decoding, typing and splitting of raw rows (no Beam): defaults, reasons, determinism."""
from __future__ import annotations

import math

import pyarrow as pa
import pytest

from pipelines.core.config_parse import config_from_dict
from pipelines.stages.preprocess.rows import InvalidRow, RowTyper, Splitter, make_decoder, record_text
from pipelines.stages.preprocess.schema import RawSchema, transform_column_types

HEADER = ("user", "item", "day", "hour", "area", "miles", "fare", "title")
CONFIG = config_from_dict({
    "name": "t",
    "input": {"path": "x.csv", "format": "csv"},
    "split": {"eval_fraction": 0.25, "key": "user"},
    "features": {
        "user": {"type": "vocabulary"},
        "day_hour": {"type": "cross", "columns": ["day", "hour"], "hash_buckets": 168},
        "area": {"type": "identity", "num_buckets": 10},
        "miles": {"type": "numeric"},
    },
    "model": {"kind": "supervised", "label": "fare"},
    "entities": [{"name": "user", "key": "user", "metadata": ["title"]}],
})


def schema() -> RawSchema:
    return RawSchema(files=("x.csv",), headers={"x.csv": HEADER}, types=transform_column_types(CONFIG),
                     numeric=frozenset({"miles"}), metadata_types={"title": pa.string()})


def typed(line: str):
    row = make_decoder(CONFIG, schema())(line.encode(), "x.csv")
    typer = RowTyper(CONFIG, schema())
    values, out_of_range = typer.type_row(row)
    return dict(zip(typer.columns, values)), out_of_range


def test_types_and_defaults():
    row, bad = typed("u1,i1,3,17,4,2.5,10.25,Heat (1995)")
    assert row == {"user": "u1", "day": "3", "hour": "17", "area": 4, "miles": 2.5, "fare": 10.25,
                   "title": "Heat (1995)"}
    assert bad == 0
    row, bad = typed(",i1,3,17,,,7,")
    assert row["user"] == "" and row["area"] == -1 and math.isnan(row["miles"]) and row["title"] == ""
    row, bad = typed("u1,i1,3,17,99,1,7,x")
    assert row["area"] == -1 and bad == 1
    row, _ = typed("u1,i1,3,17,4.0,1,7,x")
    assert row["area"] == 4


@pytest.mark.parametrize("line, reason", [
    ("u1,i1,3,17", "expected 8 CSV fields, got 4"),
    ("u1,i1,3,17,4,far,10,x", "column 'miles': 'far' is not a number"),
    ("u1,i1,3,17,4,1e39,10,x", "out of float32 range"),
    ("u1,i1,3,17,4.5,1,10,x", "column 'area': '4.5' is not an integer id"),
    ("u1,i1,3,17,4,1,,x", "label 'fare' is missing"),
    ("u1,i1,3,17,4,1,nan,x", "label 'fare' is NaN"),
])
def test_invalid_rows_have_reasons(line, reason):
    with pytest.raises(InvalidRow, match=reason):
        typed(line)


def test_invalid_utf8_is_a_reason_and_recorded_as_base64():
    record = b"u1,i1,3,17,4,1,10,\xff\xfe"
    with pytest.raises(InvalidRow, match="invalid UTF-8"):
        make_decoder(CONFIG, schema())(record, "x.csv")
    assert record_text(record).startswith("base64:")


def test_split_is_deterministic_and_by_key():
    splitter = Splitter(CONFIG)
    users = [f"user{i}" for i in range(4000)]
    first = [splitter.is_eval({"user": u}, "") for u in users]
    assert first == [Splitter(CONFIG).is_eval({"user": u, "other": 1}, "x") for u in users]
    assert abs(sum(first) / len(users) - 0.25) < 0.03


def test_split_by_flag_column():
    config = config_from_dict({"name": "t", "input": {"path": "x", "format": "csv"},
                               "split": {"column": "held"}, "features": {"user": {"type": "vocabulary"}},
                               "model": {"kind": "supervised", "label": "fare"},
                               "entities": [{"name": "u", "key": "user"}]})
    splitter = Splitter(config)
    assert [splitter.is_eval({"held": v}, "") for v in ("1", "0", "true", "", "EVAL")] == [
        True, False, True, False, True]


def test_columnar_typing_equals_row_typing():
    """The vectorised path must give exactly what the per-row path gives, or hand the batch over."""
    from pipelines.stages.preprocess import columnar
    lines = [b"u1,i1,3,17,4,2.5,10.25,Heat (1995)", b",i1,3,17,,,7,", b"u1,i1,3,17,99,1,7,x", b"u1,i1,3,17,4.0,1,7,x"]
    raw = columnar.read_csv_batch(lines, HEADER, ",")
    typer = RowTyper(CONFIG, schema())
    table, out_of_range = columnar.type_batch(raw, typer, schema(), "fare")
    rows = [typer.type_row(make_decoder(CONFIG, schema())(line, "x.csv"))[0] for line in lines]
    expected = pa.Table.from_arrays([pa.array(list(c), f.type) for c, f in zip(zip(*rows), typer.arrow_schema)],
                                    schema=typer.arrow_schema)
    assert _nan_equal(table, expected)
    assert out_of_range == 1
    for bad in (b"u1,i1,3,17,4,far,10,x", b"u1,i1,3,17,4,1,,x", b"u1,i1,3,17", b"u1,i1,3,17,4.5,1,10,x"):
        batch = columnar.read_csv_batch(lines + [bad], HEADER, ",")
        assert batch is None or columnar.type_batch(batch, typer, schema(), "fare") is None


def _nan_equal(left: pa.Table, right: pa.Table) -> bool:
    def normal(value):
        return "nan" if isinstance(value, float) and math.isnan(value) else value
    return [{k: normal(v) for k, v in r.items()} for r in left.to_pylist()] == [
        {k: normal(v) for k, v in r.items()} for r in right.to_pylist()]
