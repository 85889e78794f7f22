"""Does a day-of-week x hour-of-day embedding mean something? The neighbour purity of its cells.

For a cross of a timestamp's `day_of_week` and `hour` (keys "Mon|08"), each weekday daytime cell
(Monday to Friday, 07:00-18:59) looks at its PURITY_K nearest cells by cosine; the purity is the
share of those that are weekday daytime cells too, beside the share expected by chance (their share
among the other cells). An embedding that learned traffic puts rush hours near rush hours and
nights near nights, well above chance; one that learned nothing stays near it.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from pipelines.core import dates
from pipelines.core.config import Config, FeatureConfig
from pipelines.core.names import join_parts

PURITY_K = 5
DAYTIME = range(7, 19)


def day_hour_parts(feature: FeatureConfig) -> bool:
    """Whether the feature crosses a timestamp's day of week with its hour (in that order)."""
    return feature.type == "cross" and [dates.split_reference(c)[1] for c in feature.columns] == ["day_of_week", "hour"]


def cells(feature: FeatureConfig, tft_output: tft.TFTransformOutput) -> tuple[list[str], np.ndarray]:
    """Every (day, hour) key the table has a row for, and that row: vocabulary rows of an exact cross,
    the hash bucket of a hashed one."""
    keys = [join_parts([day, f"{hour:02d}"]) for day in dates.WEEKDAYS for hour in range(24)]
    if feature.is_hashed:
        return keys, tf.strings.to_hash_bucket_fast(keys, feature.hash_buckets).numpy()
    vocabulary = {v.decode(): row for row, v in enumerate(tft_output.vocabulary_by_name(feature.name))}
    present = [key for key in keys if key in vocabulary]
    return present, np.array([vocabulary[key] for key in present], np.int64)


def purity(vectors: np.ndarray, members: np.ndarray, k: int = PURITY_K) -> tuple[float, float]:
    """Share of the k nearest (cosine) of each member that are members, and the share chance gives.

    Args:
        vectors: [n, dim].
        members: [n] bool, the group.
    """
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    nearest = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = np.flatnonzero(members)
    found = float(members[nearest[rows]].mean()) if len(rows) else 0.0
    chance = (members.sum() - 1) / (len(members) - 1) if len(members) > 1 else 0.0
    return found, float(chance)


def day_hour_purity(config: Config, layers: dict, tft_output: tft.TFTransformOutput) -> dict:
    """{"neighbour_purity": {feature: {...}}} for every day x hour cross with an embedding, else {}."""
    results = {}
    for name, feature in config.features.items():
        if not day_hour_parts(feature) or name not in layers:
            continue
        keys, rows = cells(feature, tft_output)
        if len(keys) < PURITY_K + 2:
            continue
        vectors = layers[name].embeddings.numpy()[rows]
        members = np.array([key.split("|")[0] in dates.WEEKDAYS[:5] and int(key.split("|")[1]) in DAYTIME
                            for key in keys])
        found, chance = purity(vectors, members)
        results[name] = {f"weekday_daytime@{PURITY_K}": round(found, 4), "chance": round(chance, 4),
                         "cells": len(keys)}
    return {"neighbour_purity": results} if results else {}
