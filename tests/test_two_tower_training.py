"""Two-tower training on the MovieLens sample: the per-epoch ranking and the kept epoch."""
from __future__ import annotations

import json

import pytest


def test_each_epoch_is_ranked_and_the_best_epoch_is_exported(movielens_run):
    metrics = json.loads((movielens_run / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history["val_hr@10"]) == len(history["val_ndcg@10"]) == len(history["loss"]) == metrics["epochs_run"]
    assert all(0.0 <= value <= 1.0 for value in history["val_hr@10"])
    # metrics.json ranks the exported model (trainer/evaluate.py, in NumPy); test_step ranked every
    # epoch in TensorFlow. Early stopping restored the best epoch, so the two rankings meet there.
    assert metrics["hr@10"] == pytest.approx(max(history["val_hr@10"]), abs=1e-6)
    best = history["val_hr@10"].index(max(history["val_hr@10"]))
    assert metrics["ndcg@10"] == pytest.approx(history["val_ndcg@10"][best], abs=1e-6)
