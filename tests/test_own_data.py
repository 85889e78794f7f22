"""A user's own table: hash collisions made visible, readable names joined from a side table, keys
left out named (issue #16)."""
from __future__ import annotations

import collections
import json

import numpy as np
import pandas as pd
import tensorflow as tf

from tests.conftest import TAXI_SAMPLE, run_cli, write_config


def test_collisions_and_a_side_table(tmp_path, capsys):
    frame = pd.read_csv(TAXI_SAMPLE, dtype={"company": str}, keep_default_na=False)
    companies = sorted(set(frame.company) - {""})
    names = pd.DataFrame({"code": companies[::2], "name": [f"Company {c.upper()}" for c in companies[::2]],
                          "since": range(len(companies[::2]))})
    names.to_csv(tmp_path / "names.csv", index=False)
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)},
                          features={"company": {"type": "hash", "hash_buckets": 8}, "trip_miles": {"type": "numeric"}},
                          model={"epochs": 1, "embeddings": {}},
                          entities=[{"name": "company", "key": "company",
                                     "metadata_from": {"path": str(tmp_path / "names.csv"), "key": "code",
                                                       "columns": ["name", "since"]}}])
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "r") == 0
    err = capsys.readouterr().err
    run = tmp_path / "runs" / "r"
    facts = json.loads((run / "manifest.json").read_text())["stages"]["embed"]
    # by hand: the transform's own hash of every key
    buckets = tf.strings.to_hash_bucket_fast(companies, 8).numpy()
    sizes = collections.Counter(buckets)
    sharing = sum(size for size in sizes.values() if size > 1)
    collisions = facts["collisions"]["company"]
    assert (collisions["keys"], collisions["buckets_used"], collisions["keys_sharing_a_bucket"]) == (
        len(companies), len(sizes), sharing)
    assert collisions["examples"] and " = " in collisions["examples"][0]
    assert f"company: {sharing:,} of {len(companies):,} keys share a hash bucket" in err
    published = pd.read_parquet(run / "embeddings" / "company").set_index("key")
    assert list(published.columns) == ["embedding", "count", "name", "since"]
    assert published.loc[companies[0], "name"] == f"Company {companies[0].upper()}"
    assert pd.isna(published.loc[companies[1], "name"]) and facts["metadata_missing"]["company"] == len(companies) // 2
    assert published.loc[companies[2], "since"] == "1"           # CSV side columns are strings
    same = [k for k, b in zip(companies, buckets) if b == buckets[0] and k != companies[0]]
    if same:
        np.testing.assert_array_equal(published.loc[same[0]].embedding, published.loc[companies[0]].embedding)
        capsys.readouterr()
        assert run_cli("neighbors", run, "--entity", "company", "--key", companies[0], "-k", "3") == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[1].endswith("\tbucket") and lines[2].endswith("\tsame")


def test_a_side_table_column_that_does_not_exist(tmp_path, capsys):
    pd.DataFrame({"code": ["a"], "name": ["A"]}).to_csv(tmp_path / "names.csv", index=False)
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)},
                          entities=[{"name": "company", "key": "company",
                                     "metadata_from": {"path": str(tmp_path / "names.csv"), "key": "code",
                                                       "columns": ["title"]}}])
    assert run_cli("run", config, "--output", tmp_path / "runs") == 2
    assert "entities[0].metadata_from: column 'title' is not in" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_row_filters_leave_rows_out_and_count_them(tmp_path, capsys):
    frame = pd.read_csv(TAXI_SAMPLE)
    filters = [{"column": "trip_miles", "min": 0.5}, {"column": "trip_seconds", "min": 60, "max": 14400},
               {"column": "payment_type", "values": ["Cash", "Credit Card"]}]
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE), "filters": filters},
                          model={"epochs": 1})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", "f") == 0
    facts = json.loads((tmp_path / "runs" / "f" / "manifest.json").read_text())["stages"]["preprocess"]
    miles = frame.trip_miles.fillna(-1) >= 0.5
    seconds = frame.trip_seconds.between(60, 14400)
    payment = frame.payment_type.isin(["Cash", "Credit Card"])
    assert facts["filtered"] == {"trip_miles outside [0.5, inf]": int((~miles).sum()),
                                 "trip_seconds outside [60, 14400]": int((miles & ~seconds).sum()),
                                 "payment_type not in ['Cash', 'Credit Card']": int((miles & seconds & ~payment).sum())}
    counts = facts["counts"]
    assert counts["rows_valid"] == int((miles & seconds & payment).sum())
    assert counts["rows_read"] == len(frame) == counts["rows_valid"] + counts["rows_filtered"] + counts["rows_invalid"]
    assert "filters: " in capsys.readouterr().err
