"""Unusual but valid input, and input that must be refused up front: each case once published wrong
vectors with exit 0 or failed late (issue #15)."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import ConfigError
from pipelines.stages.preprocess import columnar
from pipelines.stages.preprocess.rows import RowTyper, make_decoder
from pipelines.stages.preprocess.schema import RawSchema, transform_column_types
from tests.conftest import TAXI_SAMPLE, run_cli, write_config

TAXI = pd.read_csv(TAXI_SAMPLE, dtype=str, keep_default_na=False)


def manifest(run: pathlib.Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def invalid_rows(run: pathlib.Path) -> list[dict]:
    return [json.loads(line) for path in sorted((run / "invalid").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def taxi_config(directory: pathlib.Path, path, **overrides) -> pathlib.Path:
    return write_config(directory, "chicago_taxi_fare", input={"path": str(path), **overrides.pop("input", {})},
                        model={"epochs": 1, "early_stopping_patience": 0, **overrides.pop("model", {})}, **overrides)


def test_csv_files_with_different_column_orders(tmp_path):
    rows = TAXI.head(400)
    rows.iloc[:200].to_csv(tmp_path / "a.csv", index=False)
    swapped = list(rows.columns)
    i, j = swapped.index("payment_type"), swapped.index("company")
    swapped[i], swapped[j] = swapped[j], swapped[i]
    rows.iloc[200:][swapped].to_csv(tmp_path / "b.csv", index=False)
    config = taxi_config(tmp_path, tmp_path / "*.csv")
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "r") == 0
    payments = set(pd.read_parquet(tmp_path / "runs" / "r" / "embeddings" / "payment").key)
    assert payments <= set(rows.payment_type) and not payments & set(rows.company)
    assert manifest(tmp_path / "runs" / "r")["stages"]["preprocess"]["counts"]["rows_invalid"] == 0


def test_a_separator_inside_a_crossed_value(tmp_path):
    rows = TAXI.head(300).copy()
    rows.loc[rows.index[:150], "trip_start_day"] = "Sat|Sun"
    rows.loc[rows.index[:150], "trip_start_hour"] = "12"
    rows.loc[rows.index[150:155], "trip_start_day"] = "Sat"
    rows.loc[rows.index[150:155], "trip_start_hour"] = "Sun|12"
    rows.to_csv(tmp_path / "t.csv", index=False)
    assert run_cli("run", taxi_config(tmp_path, tmp_path / "t.csv"), "--output", tmp_path / "runs", "--run-id", "r") == 0
    table = pd.read_parquet(tmp_path / "runs" / "r" / "embeddings" / "day_hour").set_index("key")
    assert "Sat\\|Sun|12" in table.index and "Sat|Sun\\|12" in table.index   # two keys, each maps back one way
    model = tf.saved_model.load(str(tmp_path / "runs" / "r" / "model" / "export"))
    for key, (day, hour) in (("Sat\\|Sun|12", ("Sat|Sun", "12")), ("Sat|Sun\\|12", ("Sat", "Sun|12"))):
        served = model.signatures["embed_day_hour"](trip_start_day=tf.constant([day]),
                                                    trip_start_hour=tf.constant([hour]))["embedding"].numpy()[0]
        np.testing.assert_allclose(table.loc[key].embedding, served, rtol=1e-6)


@pytest.mark.parametrize("features, message", [
    ({"pay_type": {"type": "vocabulary"}, "pay/type": {"type": "vocabulary"}}, "features.pay/type: a feature name"),
    ({"Company": {"type": "hash", "hash_buckets": 4}, "company": {"type": "hash", "hash_buckets": 4}},
     "differs from feature 'Company' only in letter case"),
])
def test_feature_names_that_would_share_a_file(features, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"name": "x", "input": {"path": "x", "format": "csv"}, "features": features,
                          "model": {"kind": "supervised", "label": "y"},
                          "entities": [{"name": "e", "key": next(iter(features))}]})


def test_nested_json_values_are_invalid_and_booleans_are_categories(tmp_path):
    records = [{"user": f"u{i % 5}", "item": f"i{i % 7}", "flag": i % 2 == 0, "y": float(i)} for i in range(60)]
    records += [{"user": {"name": "Acme", "id": 2}, "item": "i1", "flag": True, "y": 1.0},
                {"user": "u1", "item": ["Cash", "Credit Card"], "flag": True, "y": 1.0}]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "rows.jsonl"), "format": "jsonl",
                                                           "max_invalid_fraction": 0.1},
                          features={"user": {"type": "vocabulary"}, "item": {"type": "vocabulary"},
                                    "flag": {"type": "vocabulary"}},
                          model={"label": "y", "embeddings": {}, "epochs": 1},
                          entities=[{"name": "flag", "key": "flag"}], split={"eval_fraction": 0.2})
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "r") == 0
    run = tmp_path / "runs" / "r"
    reasons = sorted(r["reason"] for r in invalid_rows(run))
    assert reasons == ["column 'item': a list where one value is expected",
                       "column 'user': an object where one value is expected"]
    assert manifest(run)["stages"]["preprocess"]["invalid_reasons"] == {"column 'item': nested value": 1,
                                                                        "column 'user': nested value": 1}
    assert set(pd.read_parquet(run / "embeddings" / "flag").key) == {"true", "false"}


def test_an_identity_id_too_large_for_int64_is_out_of_range_on_both_paths():
    config = config_from_dict({"name": "x", "input": {"path": "x.csv", "format": "csv"},
                               "features": {"area": {"type": "identity", "num_buckets": 10}},
                               "model": {"kind": "supervised", "label": "y"},
                               "entities": [{"name": "a", "key": "area"}]})
    schema = RawSchema(files=("x.csv",), headers={"x.csv": ("area", "y")}, types=transform_column_types(config),
                       numeric=frozenset(), metadata_types={})
    typer = RowTyper(config, schema)
    lines = [b"3,1", b"1e30,2", b"99999999999999999999,3"]
    table, out_of_range = columnar.type_batch(columnar.read_csv_batch(lines, ("area", "y"), ","), typer, schema, "y")
    rows = [typer.type_row(make_decoder(config, schema)(line, "x.csv")) for line in lines]
    assert table.column("area").to_pylist() == [values[0] for values, _ in rows] == [3, -1, -1]
    assert out_of_range == sum(bad for _, bad in rows) == 2


def test_three_rows_train_without_an_eval_split(tmp_path, capsys):
    (tmp_path / "tiny.csv").write_text("\n".join(TAXI_SAMPLE.read_text().splitlines()[:4]) + "\n")
    config = taxi_config(tmp_path, tmp_path / "tiny.csv", split={"eval_fraction": 0.01})
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "r") == 0
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert metrics["eval_examples"] == 0 and metrics["epochs_run"] == 1
    assert "the eval split is empty" in capsys.readouterr().err


def test_quoted_newlines_are_part_of_their_row(tmp_path):
    text = TAXI_SAMPLE.read_text().splitlines()
    header, body = text[0], text[1:301]
    columns = header.split(",")
    company = columns.index("company")
    rows = []
    for number, line in enumerate(body):
        fields = line.split(",")
        if number % 10 == 0:
            fields[company] = f'"Two-line\nCab {number // 10}"'
        rows.append(",".join(fields))
    (tmp_path / "q.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    config = taxi_config(tmp_path, tmp_path / "q.csv", input={"max_invalid_fraction": 0.0})
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "r") == 0
    run = tmp_path / "runs" / "r"
    assert manifest(run)["stages"]["preprocess"]["counts"]["rows_valid"] == 300
    companies = set(pd.read_parquet(run / "embeddings" / "company").key)
    assert {f"Two-line\nCab {i}" for i in range(30)} <= companies


def test_corrupt_parquet_files(tmp_path, capsys):
    table = pa.Table.from_pandas(TAXI.head(200), preserve_index=False)
    pq.write_table(table, tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    config = taxi_config(tmp_path, tmp_path / "*.parquet", input={"format": "parquet"})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs") == 2
    assert "b.parquet is not a readable Parquet file" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    # A readable footer but damaged data: that row group's rows are invalid, named by file and group.
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=100, compression="snappy")
    data = bytearray((tmp_path / "b.parquet").read_bytes())
    metadata = pq.ParquetFile(tmp_path / "b.parquet").metadata
    start = metadata.row_group(1).column(0).data_page_offset
    data[start:start + 64] = bytes(64)
    (tmp_path / "b.parquet").write_bytes(bytes(data))
    config = taxi_config(tmp_path, tmp_path / "*.parquet", input={"format": "parquet", "max_invalid_fraction": 0.5})
    assert run_cli("preprocess", config, "--output", tmp_path / "runs", "--run-id", "p") == 0
    counts = manifest(tmp_path / "runs" / "p")["stages"]["preprocess"]["counts"]
    assert counts["rows_read"] == 400 and counts["rows_invalid"] == 100
    rows = invalid_rows(tmp_path / "runs" / "p")
    assert len(rows) == 1 and rows[0]["file"].endswith("b.parquet") and "row group 1 (100 rows)" in rows[0]["reason"]


@pytest.mark.parametrize("change, message", [
    ({"model": {"seed": -7}}, "model.seed: must be >= 0"),
    ({"model": {"seed": 1.0e23}}, "model.seed: expected an integer"),
    ({"model": {"seed": 2 ** 40}}, "model.seed: must be at most"),
    ({"features": {"company": {"type": "hash", "hash_buckets": 10_000_000_000}}},
     "features.company.hash_buckets: the embedding tables need about"),
])
def test_impossible_values_refused_before_any_work(tmp_path, capsys, change, message):
    config = taxi_config(tmp_path, TAXI_SAMPLE)
    data = json.loads(json.dumps(__import__("yaml").safe_load(config.read_text())))
    for section, values in change.items():
        for key, value in values.items():
            data[section][key] = value
    config.write_text(__import__("yaml").safe_dump(data))
    assert run_cli("run", config, "--output", tmp_path / "runs") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_duplicate_keys_and_columns_refused(tmp_path, capsys):
    config = taxi_config(tmp_path, TAXI_SAMPLE)
    text = config.read_text()
    config.write_text(text + "name: again\n")
    assert run_cli("run", config, "--output", tmp_path / "runs") == 2
    assert "key 'name' is given twice" in capsys.readouterr().err
    lines = TAXI_SAMPLE.read_text().splitlines()
    (tmp_path / "dup.csv").write_text(lines[0].replace("tips", "company") + "\n" + "\n".join(lines[1:50]) + "\n")
    assert run_cli("run", taxi_config(tmp_path, tmp_path / "dup.csv"), "--output", tmp_path / "runs") == 2
    assert "column name 'company' appears 2 times in the header" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_yaml_alias_bomb_refused_at_once(tmp_path, capsys):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\nname: *a9\n")   # 9^10 values when expanded
    assert run_cli("run", tmp_path / "bomb.yaml") == 2
    err = capsys.readouterr().err
    assert "more than 100,000 values once YAML aliases are expanded" in err and len(err) < 400


def test_warm_start_between_different_feature_definitions(tmp_path, capsys):
    from pipelines.core.rundir import RunDir
    from pipelines.core.warm_start import plan_warm_start
    import yaml
    old = yaml.safe_load(taxi_config(tmp_path, TAXI_SAMPLE).read_text())
    source = RunDir(str(tmp_path / "old"))
    manifest = source.create("old", old)
    manifest["stages"] = {s: {"status": "succeeded"} for s in ("preprocess", "train", "embed")}
    source.write_manifest(manifest)
    new = json.loads(json.dumps(old))
    new["features"]["payment_type"] = {"type": "hash", "hash_buckets": 5}
    new["features"]["company"] = {"type": "hash", "hash_buckets": 100}
    new["warm_start"] = {"from": source.path}
    plan = {p.feature: p for p in plan_warm_start(config_from_dict(new)).features}
    assert plan["pickup_area"].how == "key" and plan["day_hour"].how == "bucket"
    assert plan["payment_type"].how == "skip" and "vocabulary in the source, hash here" in plan["payment_type"].reason
    assert plan["company"].how == "skip" and "64 hash buckets in the source, 100 here" in plan["company"].reason
    with pytest.raises(ConfigError, match="warm_start: company cannot be warm-started .*64 hash buckets"):
        plan_warm_start(config_from_dict({**new, "warm_start": {"from": source.path, "freeze": ["company"]}}))
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in new.items() if k != "warm_start"}))
    assert run_cli("run", path, "--output", tmp_path / "runs", "--warm-start", source.path, "--freeze", "company") == 2
    assert "64 hash buckets in the source, 100 here" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert run_cli("run", path, "--output", tmp_path / "runs", "--warm-start", tmp_path / "nothing.txt") == 2
    assert "neither a run directory" in capsys.readouterr().err
