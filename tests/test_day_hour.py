"""The course's day x hour picture: neighbour purity by hand, and the taxi example learning it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli, write_config
from trainer.day_hour import purity


def test_purity_by_hand():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.2]])
    members = np.array([True, True, False, False, False])
    # k=1: each member's nearest (cosine) is the other member; chance: 1 of the 4 other cells.
    assert purity(vectors, members, k=1) == (1.0, 0.25)
    # k=2: the second nearest of both members is [0.1, 0.9] (cosine 0.11 and 0.22), a non-member.
    assert purity(vectors, members, k=2) == (0.5, 0.25)


def test_taxi_example_learns_day_hour_cells_that_beat_its_ablation(tmp_path):
    config = write_config(tmp_path, "chicago_taxi", input={"path": str(ROOT / "examples" / "data" / "chicago_taxi.csv")})
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "r") == 0
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    cells = metrics["neighbour_purity"]["day_hour"]
    assert cells["cells"] == 168 and cells["chance"] == pytest.approx(59 / 167, abs=1e-4)
    # 4 seeds gave 0.51-0.59 against chance 0.35; an output layer starting at 0 gave 0.36-0.46.
    assert cells["weekday_daytime@5"] > cells["chance"] + 0.1, cells
    without = metrics["ablation"]["day_hour"]
    assert metrics["rmse"] < without["rmse"] and metrics["mae"] < without["mae"], (metrics["rmse"], without)
