"""The Beam stages on Beam's portable runner (in-process job server, LOOPBACK workers) give exactly
what DirectRunner gives: nothing relies on in-process state a remote worker would not have."""
from __future__ import annotations

import collections
import json

import numpy as np
import pandas as pd

from tests.conftest import TAXI_SAMPLE, run_cli, write_config
from tests.test_preprocess import read_examples

PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def test_portable_runner_matches_direct_runner(tmp_path, taxi_run):
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)},
                          model={"epochs": 20, "early_stopping_patience": 0})   # as the taxi_run fixture
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "portable", *PORTABLE) == 0
    run = tmp_path / "runs" / "portable"
    counts = json.loads((run / "manifest.json").read_text())["stages"]["preprocess"]["counts"]
    assert counts == json.loads((taxi_run / "manifest.json").read_text())["stages"]["preprocess"]["counts"]
    assert collections.Counter(read_examples(run, "eval")) == collections.Counter(read_examples(taxi_run, "eval"))
    for entity in ("day_hour", "payment", "company", "pickup_area"):
        portable = pd.read_parquet(run / "embeddings" / entity).set_index("key").sort_index()
        direct = pd.read_parquet(taxi_run / "embeddings" / entity).set_index("key").sort_index()
        assert list(portable.index) == list(direct.index)
        np.testing.assert_array_equal(np.stack(portable.embedding), np.stack(direct.embedding))
