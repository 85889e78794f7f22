"""`embedpipe run` end to end on real taxi and MovieLens samples: the published Parquet."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from tests.conftest import TAXI_SAMPLE, run_cli


def read_entity(run, name: str) -> pd.DataFrame:
    return pd.read_parquet(run / "embeddings" / name)


def vectors(frame: pd.DataFrame) -> np.ndarray:
    return np.stack(frame.embedding.to_numpy())


def test_taxi_entities(taxi_run):
    sample = pd.read_csv(TAXI_SAMPLE)
    manifest = json.loads((taxi_run / "manifest.json").read_text())
    assert (taxi_run.parent / "LATEST").read_text().strip() == "t1"
    assert all(manifest["stages"][s]["status"] == "succeeded" for s in ("preprocess", "train", "embed"))
    day_hour = read_entity(taxi_run, "day_hour")
    pairs = {f"{d}|{h}" for d, h in zip(sample.trip_start_day, sample.trip_start_hour)}
    assert len(day_hour) == len(pairs) <= 168 and set(day_hour.key) == pairs
    assert vectors(day_hour).shape == (len(pairs), 2) and np.isfinite(vectors(day_hour)).all()
    vocabulary = tft.TFTransformOutput(str(taxi_run / "transform")).vocabulary_by_name("payment_type")
    payment = read_entity(taxi_run, "payment")
    assert sorted(payment.key) == sorted(v.decode() for v in vocabulary)
    assert vectors(payment).shape[1] == 4
    areas = read_entity(taxi_run, "pickup_area")
    assert set(areas.key) == {str(int(a)) for a in sample.pickup_community_area.dropna()}
    companies = read_entity(taxi_run, "company")
    assert set(companies.key) == set(sample.company.dropna())
    for name in ("day_hour", "payment", "pickup_area", "company"):
        assert manifest["stages"]["embed"]["entities"][name] == len(read_entity(taxi_run, name))
    # counts are training occurrences, so they add up to the train rows
    assert day_hour["count"].sum() == manifest["stages"]["preprocess"]["counts"]["rows_train"]


def test_taxi_cross_vector_equals_signature(taxi_run):
    day_hour = read_entity(taxi_run, "day_hour").set_index("key")
    model = tf.saved_model.load(str(taxi_run / "model" / "export"))
    served = model.signatures["embed_day_hour"](trip_start_day=tf.constant(["6"]),
                                                trip_start_hour=tf.constant(["19"]))["embedding"].numpy()[0]
    np.testing.assert_allclose(day_hour.loc["6|19"].embedding, served, rtol=1e-6)


def test_parquet_schema_and_metadata(taxi_run):
    path = sorted((taxi_run / "embeddings" / "day_hour").glob("part-*.parquet"))[0]
    schema = pq.read_schema(path)
    assert str(schema.field("embedding").type) == "fixed_size_list<element: float>[2]"
    assert str(schema.field("key").type) == "string" and str(schema.field("count").type) == "int64"
    metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert metadata["run_id"] == "t1" and metadata["entity"] == "day_hour" and metadata["dim"] == "2"
    assert metadata["model_kind"] == "supervised" and metadata["similarity"] == "cosine" and metadata["created_at"]
    column = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert "PLAIN_DICTIONARY" not in column.encodings and "RLE_DICTIONARY" not in column.encodings


def test_movielens_entities_and_tower_vectors(movielens_run, movielens_sample):
    ratings = pd.read_csv(movielens_sample)
    output = tft.TFTransformOutput(str(movielens_run / "transform"))
    movies, users = read_entity(movielens_run, "movie"), read_entity(movielens_run, "user")
    assert sorted(movies.key) == sorted(v.decode() for v in output.vocabulary_by_name("movieId"))
    assert sorted(users.key, key=int) == [str(u) for u in sorted(ratings.userId.unique())]
    assert vectors(movies).shape[1] == vectors(users).shape[1] == 16 and np.isfinite(vectors(movies)).all()
    assert list(movies.columns) == ["key", "embedding", "count", "title", "year", "genres"]
    toy = movies[movies.key == "1"].iloc[0]
    assert toy.title == "Toy Story (1995)" and toy["count"] == ((ratings.movieId == 1) & (ratings.is_last == 0)).sum()
    model = tf.saved_model.load(str(movielens_run / "model" / "export"))
    genres = ratings[ratings.movieId == 1].genres.iloc[0]
    served = model.signatures["candidate_embedding"](movieId=tf.constant(["1"]), genres=tf.constant([genres]))
    np.testing.assert_allclose(toy.embedding, served["embedding"].numpy()[0], rtol=1e-5, atol=1e-6)
    user = users[users.key == "7"].iloc[0]
    score = model.signatures["serving_default"](userId=tf.constant(["7"]), movieId=tf.constant(["1"]),
                                                genres=tf.constant([genres]))["score"].numpy()[0]
    assert np.dot(user.embedding, toy.embedding) == pytest.approx(score, rel=1e-4)   # one space: dot = score
    metadata = pq.read_schema(sorted((movielens_run / "embeddings" / "movie").glob("*.parquet"))[0]).metadata
    assert metadata[b"similarity"] == b"dot" and metadata[b"model_kind"] == b"two_tower"
    metrics = json.loads((movielens_run / "metrics.json").read_text())
    assert 0 <= metrics["hr@10"] <= 1 and metrics["eval_examples"] == ratings.userId.nunique()


def test_neighbors_command(movielens_run, capsys):
    assert run_cli("neighbors", movielens_run, "--entity", "movie", "--key", "Toy Story (1995)", "-k", "5") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "5 nearest to 'Toy Story (1995)' (key '1') in movie by dot (exact):"
    assert len(lines) == 2 + 5 and all(line.count("\t") == 6 for line in lines[1:])
    assert "Toy Story (1995)" not in "".join(lines[2:])
    assert run_cli("neighbors", movielens_run, "--entity", "movie", "--key", "No Such Movie", "-k", "5") == 2
    assert run_cli("neighbors", movielens_run, "--entity", "nothing", "--key", "1") == 2


def test_keys_never_seen_in_training_are_counted_and_named_in_the_terminal():
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from pipelines.cli.summary import embed_lines
    from pipelines.core.beam_runner import read_counters
    from pipelines.stages.embed.pipeline import count_untrained
    tables = [pa.table({"key": ["a", "b", "c"], "count": [3, 0, 1]}), pa.table({"key": ["d"], "count": [0]})]
    pipeline = TestPipeline()
    rows = (pipeline | beam.Create(tables) | beam.Map(count_untrained, "user")
            | beam.Map(lambda table: table.num_rows))
    assert_that(rows, equal_to([3, 1]))   # the tables pass through whole
    counters = read_counters(pipeline.run(), ("untrained_keys_user",))
    assert counters["untrained_keys_user"] == 2
    lines = embed_lines({"entities": {"user": 4}, "untrained_keys": {"user": 2}})
    assert lines[1] == ("warning: user: 2 keys never seen in training (count 0, e.g. only in eval rows): their vectors "
                        "are the initial random ones")
