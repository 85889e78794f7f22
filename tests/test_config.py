"""Config validation: every error names its key; the CLI exits 2 with one line before any Beam work."""
from __future__ import annotations

import pytest
import yaml

from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import ConfigError
from tests.conftest import ROOT, TAXI_SAMPLE, run_cli, write_config


def taxi_dict(**changes) -> dict:
    config = yaml.safe_load((ROOT / "examples" / "chicago_taxi_fare.yaml").read_text())
    config.update(changes)
    return config


def test_example_configs_are_valid():
    for name in ("chicago_taxi", "chicago_taxi_fare", "movielens", "words"):
        config = config_from_dict(yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text()))
        assert config.name and config.entities


def test_defaults_and_derived_values():
    config = config_from_dict(taxi_dict())
    assert config.features["day_hour"].raw_columns == ("trip_start_day", "trip_start_hour")
    assert config.features["payment_type"].num_oov_buckets == 1
    assert config.model.dim_of("day_hour") == 2 and config.model.dim_of("company") == 4
    assert config.split.eval_fraction == 0.2 and config.split.key == ()
    assert config.input.max_invalid_fraction == 0.01


@pytest.mark.parametrize("changes, message", [
    ({"colour": "red"}, "colour: unknown key"),
    ({"input": {"path": "x.csv", "format": "xlsx"}}, "input.format: 'xlsx' is not one of"),
    ({"input": {"format": "csv"}}, "input.path: required"),
    ({"split": {"eval_fraction": 1.5}}, "split.eval_fraction: must be between 0 and 1"),
    ({"features": {"a": {"type": "embedding"}}}, "features.a.type: 'embedding' is not one of"),
    ({"features": {"a": {"type": "hash"}}}, "features.a.hash_buckets: required"),
    ({"features": {"a": {"type": "hash", "hash_buckets": 0}}}, "features.a.hash_buckets: must be >= 1"),
    ({"features": {"a": {"type": "vocabulary", "top_k": "ten"}}}, "features.a.top_k: expected an integer"),
    ({"features": {"a": {"type": "cross", "columns": ["x"], "hash_buckets": 3}}}, "features.a.columns: a cross needs"),
    ({"features": {"a": {"type": "numeric", "normalize": "ln"}}}, "features.a.normalize: 'ln' is not one of"),
    ({"features": {"a": {"type": "identity", "num_buckets": 3, "top_k": 2}}}, "features.a.top_k: unknown key"),
])
def test_invalid_values_name_their_key(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config_from_dict(taxi_dict(**changes))


def test_model_and_entity_errors():
    with pytest.raises(ConfigError, match="model.label: required"):
        config_from_dict(taxi_dict(model={"kind": "supervised"}))
    with pytest.raises(ConfigError, match="model.query: 'nope' is not a configured feature"):
        config_from_dict(taxi_dict(model={"kind": "two_tower", "query": ["nope"], "candidate": ["company"]}))
    with pytest.raises(ConfigError, match=r"entities\[0\].key: 'trip_miles' is numeric"):
        config_from_dict(taxi_dict(entities=[{"name": "m", "key": "trip_miles"}]))
    with pytest.raises(ConfigError, match=r"model.embeddings.nope: not a configured feature"):
        config_from_dict(taxi_dict(model={"kind": "supervised", "label": "fare", "embeddings": {"nope": 2}}))


@pytest.mark.parametrize("overrides, message", [
    ({"features": {"day_hour": {"type": "embedding"}}}, "features.day_hour.type: 'embedding' is not one of"),
    ({"extra": 1}, "extra: unknown key"),
    ({"features": {"miles": {"type": "numeric", "column": "odometer"}}},
     "features.miles.column: column 'odometer' is not in "),
    ({"input": {"path": "/nonexistent/*.csv", "format": "csv"}}, "input.path: no file matches"),
    ({"features": {"when": {"type": "cross", "columns": ["trip_start_timestamp.day_of_wek",
                                                         "trip_start_timestamp.hour"], "exact": True}}},
     "'day_of_wek' is not a date part of 'trip_start_timestamp' (did you mean trip_start_timestamp.day_of_week?"),
])
def test_cli_exits_2_with_one_line(tmp_path, capsys, overrides, message):
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE), "format": "csv"})
    data = yaml.safe_load(config.read_text())
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    config.write_text(yaml.safe_dump(data))
    assert run_cli("preprocess", config, "--output", tmp_path / "runs") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.tfrecord.gz"))


def test_cli_bad_arguments_exit_2(capsys):
    assert run_cli("neighbors", "somewhere") == 2
    assert run_cli("train", "somewhere", "--runner", "DirectRunner") == 2
    assert "unrecognized arguments" in capsys.readouterr().err
