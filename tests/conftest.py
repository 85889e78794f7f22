"""Shared fixtures: small real data (a taxi CSV sample, a MovieLens sample) and complete runs of it."""
from __future__ import annotations

import io
import os
import pathlib

import pytest
import yaml

from pipelines import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
TAXI_SAMPLE = ROOT / "tests" / "data" / "taxi_sample.csv"
MOVIELENS_USERS = 60


def write_config(directory: pathlib.Path, example: str, **overrides) -> pathlib.Path:
    """An example config with `overrides`: input/split/model are updated per key, others replaced."""
    config = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    for key, value in overrides.items():
        if key in ("input", "split", "model") and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = directory / f"{example}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_genres_config(directory: pathlib.Path, data: pathlib.Path, model: dict, **overrides) -> pathlib.Path:
    """The MovieLens example reading `data`, with the genres text in the candidate tower (so trained by
    gradient: a tower of several features) and `model` keys updated."""
    features = {"userId": {"type": "vocabulary"}, "movieId": {"type": "vocabulary"},
                "genres": {"type": "text", "delimiter": "|"}, "timestamp": {"type": "numeric", "normalize": "none"}}
    return write_config(directory, "movielens", input={"path": str(data)}, features=features,
                        model={"candidate": ["movieId", "genres"], **model}, **overrides)


def unframed(framed: bytes) -> list[bytes]:
    """The records of TFRecord-framed bytes (what preprocess's EncodeExamples emits), both
    checksums of each checked."""
    from pipelines.stages.preprocess.batched_io import read_frame
    handle, records = io.BytesIO(framed), []
    while (record := read_frame(handle)) is not None:
        records.append(record)
    return records


def run_cli(*args: str) -> int:
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="session")
def movielens_sample(tmp_path_factory) -> pathlib.Path:
    """The first MOVIELENS_USERS users of MovieLens, as `python -m pipelines.datasets` writes it."""
    from pipelines.tools.datasets import movielens
    frame = movielens()
    path = tmp_path_factory.mktemp("movielens") / "ratings.csv"
    frame[frame.userId <= MOVIELENS_USERS].to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def taxi_run(tmp_path_factory) -> pathlib.Path:
    """`embedpipe run` of the taxi example on the 2,000-row sample."""
    directory = tmp_path_factory.mktemp("taxi")
    config = write_config(directory, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)},
                          model={"epochs": 20, "early_stopping_patience": 0})
    assert run_cli("run", config, "--output", directory / "runs", "--run-id", "t1") == 0
    return directory / "runs" / "t1"


@pytest.fixture(scope="session")
def movielens_run(tmp_path_factory, movielens_sample) -> pathlib.Path:
    """`embedpipe run` of the MovieLens example on a sample of users, trained by gradient with the
    genres text in the candidate tower (a tower of several features)."""
    directory = tmp_path_factory.mktemp("ml")
    config = write_genres_config(directory, movielens_sample, model={"epochs": 3, "embedding_dim": 16})
    assert run_cli("run", config, "--output", directory / "runs", "--run-id", "m1") == 0
    return directory / "runs" / "m1"


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
