"""Event logs -> sessions: ordering, gaps, min_length, the group bound and bad rows, on real Beam; then
`embedpipe run` of item2vec on a MovieLens sample."""
from __future__ import annotations

import datetime
import json

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipelines.core.beam_runner import read_counters
from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import ConfigError
from pipelines.stages.preprocess import columnar
from pipelines.stages.preprocess.entities import SplitRows
from pipelines.stages.preprocess.pipeline import DecodeAndSplitRows
from pipelines.stages.preprocess.rows import RowTyper, make_decoder
from pipelines.stages.preprocess.schema import RawSchema, required_columns, transform_column_types
from pipelines.stages.preprocess.sequences import BuildSequences, sessions
from tests.conftest import ROOT, run_cli, write_config

HEADER = ("user", "ts", "item", "title")


def config(**sequences) -> dict:
    return {"name": "s", "input": {"path": "x.csv", "format": "csv"},
            "sequences": {"group_by": "user", "order_by": "ts", "item": "item", **sequences},
            "features": {"item": {"type": "vocabulary"}}, "model": {"kind": "skipgram"},
            "entities": [{"name": "item", "key": "item", "metadata": ["title"]}]}


def schema_of(parsed) -> RawSchema:
    return RawSchema(files=("x.csv",), headers={"x.csv": HEADER}, types=transform_column_types(parsed),
                     numeric=frozenset(), metadata_types={"title": pa.string()}, required=required_columns(parsed))


def test_sessions_cut_at_gaps_and_drop_short_ones():
    events = [(0.0, "a"), (10.0, "b"), (100.0, "c"), (105.0, "d"), (106.0, "e"), (500.0, "f")]
    assert sessions(events, 50.0, 2) == ([["a", "b"], ["c", "d", "e"]], 1)
    assert sessions(events, None, 2) == ([["a", "b", "c", "d", "e", "f"]], 0)
    assert sessions(events, 50.0, 3) == ([["c", "d", "e"]], 2)
    assert sessions([], 50.0, 1) == ([], 0)


def run_sequences(parsed, lines: list[bytes], documents: list[tuple], reasons: list[str]) -> dict[str, int]:
    """Decodes CSV lines and builds sessions on Beam's in-process runner, asserting the train documents
    and the reasons of the invalid rows; returns the counters."""
    schema = schema_of(parsed)
    pipeline = TestPipeline(runner=FnApiRunner())
    rows = pipeline | beam.Create([("x.csv", lines)]) | DecodeAndSplitRows(parsed, schema)
    built = SplitRows(rows.train, rows.eval) | BuildSequences(parsed)
    assert_that(built.train | beam.FlatMap(lambda batch: map(tuple, batch.column(0).to_pylist())),
                equal_to(documents), label="CheckDocuments")
    assert_that(rows.invalid | beam.Map(lambda row: row["reason"]), equal_to(reasons), label="CheckInvalid")
    result = pipeline.run()
    result.wait_until_finish()
    return read_counters(result)


def test_beam_orders_groups_cuts_gaps_and_reports_bad_rows():
    parsed = config_from_dict({**config(max_gap=60, min_length=2), "split": {"eval_fraction": 0.01, "key": "title"}})
    lines = [b"u1,80,b,B", b"u1,30,a,A", b"u1,30,0a,Z", b"u1,200,c,C", b"u1,230,d,D", b"u1,1000,e,E",   # ties: by item
             b"u2,2024-01-01T00:00:00Z,x,X", b"u2,2024-01-01T00:00:30+00:00,y,Y", b"u2,1704067260,z,Z",
             b",5,a,A", b"u3,,a,A", b"u3,yesterday,a,A", b"u3,7,,A"]
    reasons = ["sequences.group_by: no value in column 'user'", "sequences.item: no value in column 'item'",
               "sequences.order_by: 'yesterday' is neither a number nor an ISO 8601 date-time",
               "sequences.order_by: no value in column 'ts'"]
    counts = run_sequences(parsed, lines, [("0a", "a", "b"), ("c", "d"), ("x", "y", "z")], reasons)
    assert counts["rows_invalid"] == 4 and counts["sessions_too_short"] == 1 and counts["documents_train"] == 3


def test_beam_keeps_the_newest_events_of_a_large_group():
    parsed = config_from_dict({**config(max_group_events=3), "split": {"eval_fraction": 0.01, "key": "title"}})
    lines = [f"u1,{t},i{t},T".encode() for t in range(10)]
    counts = run_sequences(parsed, lines, [("i7", "i8", "i9")], [])
    assert counts["events_over_group_limit"] == 7


def test_order_values_type_the_same_column_wise_and_row_by_row():
    parsed = config_from_dict(config())
    schema = schema_of(parsed)
    typer = RowTyper(parsed, schema)
    stamps = [datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone.utc), datetime.datetime(2024, 3, 1, 8, 30)]
    table = pa.table({"user": ["u", "v"], "ts": pa.array(stamps, pa.timestamp("ns", tz="UTC")),
                      "item": pa.array([3, 4]), "title": ["A", None]})
    typed, _ = columnar.type_batch(table, typer, schema, None)
    by_row = [typer.type_row(row)[0] for row in table.to_pylist()]
    assert typed.column("ts").to_pylist() == [row[1] for row in by_row] == [1704110400.0, 1709281800.0]
    assert typed.column("item").to_pylist() == ["3", "4"]
    csv = columnar.read_csv_batch([b"u,1700000000.5,7,A", b"v,12,8,"], HEADER, ",")
    assert columnar.type_batch(csv, typer, schema, None)[0].column("ts").to_pylist() == [1700000000.5, 12.0]
    iso = make_decoder(parsed, schema)(b"u,2024-01-01T13:00:00+01:00,7,A", "x.csv")
    assert typer.type_row(iso)[0][1] == 1704110400.0


@pytest.mark.parametrize("changes, message", [
    ({"graph": {"source": "a", "target": "b"}}, "graph: a config has one input shape"),
    ({"model": {"kind": "two_tower", "query": ["item"], "candidate": ["item"]}}, "model.kind: a sequences config trains skip-gram"),
    ({"features": {"item": {"type": "text"}}}, "features: a sequences config has exactly one feature, a vocabulary"),
    ({"features": {"movie": {"type": "vocabulary"}}, "entities": [{"name": "m", "key": "movie"}]},
     "sequences.item: 'item' must be the column of the feature features.movie"),
    ({"sequences": {"group_by": "user", "order_by": "user", "item": "item"}}, "sequences.order_by: 'user' is already"),
    ({"sequences": {"group_by": "user", "order_by": "ts", "item": "item", "max_gap": 0}}, "sequences.max_gap: must be a positive"),
    ({"sequences": {"group_by": "user", "order_by": "ts"}}, "sequences.item: required"),
    ({"sequences": {}}, "sequences.group_by: required"),
    ({"sequences": {"group_by": "user", "order_by": "ts", "item": "item", "window": 3}}, "sequences.window: unknown key"),
])
def test_config_errors_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**config(), **changes})


def test_split_defaults_to_whole_groups():
    assert config_from_dict(config()).split.key == ("user",)


def test_item2vec_run_on_movielens(tmp_path, movielens_sample):
    frame = pd.read_csv(movielens_sample)
    data = tmp_path / "events.csv"   # userId,movieId,title,year,genres,rating,timestamp,is_last
    data.write_text(movielens_sample.read_text() + ",1,x,1995,,3,1,0\n7,,y,1995,,3,2,0\n7,1,z,1995,,3,last week,0\n")
    settings = write_config(tmp_path, "movielens_sequences", input={"path": str(data)},
                            features={"movieId": {"type": "vocabulary", "frequency_threshold": 2}},
                            model={"epochs": 2, "embedding_dim": 16, "learning_rate": 0.03})
    assert run_cli("run", settings, "--output", tmp_path / "runs", "--run-id", "i") == 0
    run = tmp_path / "runs" / "i"
    facts = json.loads((run / "manifest.json").read_text())["stages"]["preprocess"]
    assert facts["counts"]["rows_invalid"] == 3 and facts["counts"]["documents_train"] > 100
    assert set(facts["invalid_reasons"]) == {"sequences.group_by: missing value", "sequences.item: missing value",
                                             "sequences.order_by: not a number or date-time"}
    vectors = pd.read_parquet(run / "embeddings" / "movie")
    vocabulary = (run / "transform/transform_fn/assets/movieId").read_text().split("\n")[:-1]
    assert sorted(vectors.key) == sorted(vocabulary) and "1" in vocabulary   # ids, not tokens of them
    toy_story = vectors.set_index("key").loc["1"]
    assert toy_story.title == "Toy Story (1995)" and toy_story["count"] == (frame[frame.is_last == 0].movieId == 1).sum()
    assert run_cli("neighbors", run, "--entity", "movie", "--key", "Toy Story (1995)", "-k", "3") == 0


def test_example_config_is_valid():
    import yaml
    parsed = config_from_dict(yaml.safe_load((ROOT / "examples" / "movielens_sequences.yaml").read_text()))
    assert parsed.token_feature == "movieId" and parsed.split.column == "is_last"
