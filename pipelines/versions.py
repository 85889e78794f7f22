"""Runs over time: listing and pruning, Procrustes alignment onto the previous run, drift reports."""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from pipelines.neighbors import EntityVectors, exact_neighbors, load_entity
from pipelines.rundir import LATEST, STAGES, RunDir, write_text_atomic
from pipelines.vector_columns import vector_array, vectors_of

logger = logging.getLogger(__name__)
ALIGN_SAMPLE = 200_000


def list_runs(output: str) -> list[RunDir]:
    """Run directories under `output`, oldest first (run ids sort by time)."""
    return [RunDir(os.path.dirname(path)) for path in sorted(glob.glob(os.path.join(output, "*", "manifest.json")))]


def latest_id(output: str) -> str | None:
    path = os.path.join(output, LATEST)
    return open(path).read().strip() if os.path.exists(path) else None


def describe(run: RunDir) -> dict:
    """Status and headline numbers of one run."""
    stages = run.read_manifest().get("stages", {})
    metrics = stages.get("train", {}).get("metrics", {})
    headline = {k: v for k, v in metrics.items() if k in ("rmse", "accuracy", "hr@10", "ndcg@10", "spearman")}
    status = "complete" if all(stages.get(s, {}).get("status") == "succeeded" for s in STAGES) else next(
        (f"{s}: {stages[s]['status']}" if s in stages else f"{s}: not run") for s in STAGES
        if stages.get(s, {}).get("status") != "succeeded")
    return {"run_id": run.run_id, "status": status, "metrics": headline,
            "entities": stages.get("embed", {}).get("entities", {})}


def prune_runs(output: str, keep: int) -> list[str]:
    """Deletes all but the newest `keep` runs; the run LATEST names is always kept. Returns the deleted ids."""
    runs = list_runs(output)
    latest = latest_id(output)
    doomed = [run for run in runs[:max(len(runs) - keep, 0)] if run.run_id != latest]
    for run in doomed:
        shutil.rmtree(run.path)
    return [run.run_id for run in doomed]


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal R [dim, dim] minimising ||source @ R - target|| (Schönemann's SVD solution)."""
    u, _, vt = np.linalg.svd(source.T.astype(np.float64) @ target.astype(np.float64))
    return (u @ vt).astype(np.float32)


def shared_rows(old: EntityVectors, new: EntityVectors, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of the keys both hold: (old rows, new rows, keys), at most `limit` keys (the first in key order)."""
    index = {key: row for row, key in enumerate(old.keys)}
    keys = sorted(set(index) & set(new.keys))[:limit]
    new_index = {key: row for row, key in enumerate(new.keys)}
    return np.array([index[k] for k in keys], int), np.array([new_index[k] for k in keys], int), keys


def align_embeddings(staged: str, previous: RunDir, entities: list[str], space_of: dict[str, str]) -> dict:
    """Rotates the staged entity vectors onto the previous run's space, file by file.

    Entities in one space (a two-tower run's users and items) share one rotation, so their dot
    products are unchanged; each other entity gets its own.

    Args:
        staged: the `embeddings/` directory about to be published.
        previous: the run to align to.
        entities: entity names to align.
        space_of: entity -> space name.

    Returns:
        Per space: shared keys used and mean cosine between old and aligned new vectors.
    """
    stage_run = RunDir(os.path.dirname(staged))
    report = {}
    for space in sorted(set(space_of[e] for e in entities)):
        members = [e for e in entities if space_of[e] == space]
        olds, news = [], []
        for entity in members:
            try:
                old = load_entity(previous, entity)
            except LookupError:
                continue
            new = load_entity(stage_run, entity)
            if old.vectors.shape[1] != new.vectors.shape[1]:
                logger.warning("align: %s changed dimension; not aligned", entity)
                continue
            old_rows, new_rows, _ = shared_rows(old, new, ALIGN_SAMPLE)
            olds.append(old.vectors[old_rows])
            news.append(new.vectors[new_rows])
        if not olds or sum(len(o) for o in olds) < 2:
            report[space] = {"aligned": False, "shared_keys": 0}
            continue
        source, target = np.concatenate(news), np.concatenate(olds)
        rotation = procrustes(source, target)
        for entity in members:
            _rotate_files(os.path.join(staged, entity), rotation)
        report[space] = {"aligned": True, "entities": members, "shared_keys": int(len(source)),
                         "mean_cosine_after": float(_mean_cosine(source @ rotation, target))}
    return report


def _rotate_files(directory: str, rotation: np.ndarray) -> None:
    for path in sorted(tf.io.gfile.glob(os.path.join(directory, "*.parquet"))):
        table = pq.read_table(path)
        column = vector_array(vectors_of(table) @ rotation)
        table = table.set_column(table.schema.get_field_index("embedding"), table.schema.field("embedding"), column)
        pq.write_table(table, path + ".tmp", use_dictionary=["key"], compression="snappy")
        os.replace(path + ".tmp", path)


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)))


def compare_runs(old_run: RunDir, new_run: RunDir, entity: str, k: int = 10, sample: int = 2000) -> dict:
    """Drift of one entity between two runs: keys added/removed, mean cosine after Procrustes alignment
    over the shared keys, and the mean overlap of top-k neighbour sets (among shared keys)."""
    old, new = load_entity(old_run, entity), load_entity(new_run, entity)
    old_rows, new_rows, keys = shared_rows(old, new)
    report = {"entity": entity, "old_run": old_run.run_id, "new_run": new_run.run_id, "shared_keys": len(keys),
              "added_keys": len(set(new.keys) - set(old.keys)), "removed_keys": len(set(old.keys) - set(new.keys))}
    if len(keys) < 2:
        return report
    a, b = old.vectors[old_rows], new.vectors[new_rows]
    report["mean_cosine_aligned"] = _mean_cosine(b @ procrustes(b, a), a) if a.shape[1] == b.shape[1] else None
    shared_old = EntityVectors(keys, a, pa.table({"key": keys}), old.similarity)
    shared_new = EntityVectors(keys, b, pa.table({"key": keys}), new.similarity)
    probes = np.random.default_rng(0).choice(len(keys), min(sample, len(keys)), replace=False)
    top = min(k, len(keys) - 1)
    overlaps = [len({r for r, _ in exact_neighbors(shared_old, int(p), top)} &
                    {r for r, _ in exact_neighbors(shared_new, int(p), top)}) / top for p in probes]
    report[f"neighbor_overlap@{top}"] = float(np.mean(overlaps))
    path = new_run.join("compare", f"{entity}-vs-{old_run.run_id}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text_atomic(path, json.dumps(report, indent=2))
    report["path"] = path
    return report
