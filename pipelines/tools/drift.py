"""Drift of one entity between two runs: keys added and removed, how far shared keys moved after
alignment, and how much their neighbourhoods changed."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from pipelines.core import fs
from pipelines.core.rundir import RunDir
from pipelines.core.vectors import EntityVectors, mean_cosine, procrustes, shared_rows
from pipelines.tools.neighbors import exact_neighbors, load_entity


def compare_runs(old_run: RunDir, new_run: RunDir, entity: str, k: int = 10, sample: int = 2000) -> dict:
    """Keys added/removed, mean cosine after Procrustes alignment over the shared keys, and the mean
    overlap of top-k neighbour sets among shared keys; written to the new run's compare/."""
    old, new = load_entity(old_run, entity), load_entity(new_run, entity)
    old_rows, new_rows, keys = shared_rows(old, new)
    report = {"entity": entity, "old_run": old_run.run_id, "new_run": new_run.run_id, "shared_keys": len(keys),
              "added_keys": len(set(new.keys) - set(old.keys)), "removed_keys": len(set(old.keys) - set(new.keys))}
    if len(keys) < 2:
        return report
    a, b = old.vectors[old_rows], new.vectors[new_rows]
    report["mean_cosine_aligned"] = mean_cosine(b @ procrustes(b, a), a) if a.shape[1] == b.shape[1] else None
    shared_old = EntityVectors(keys, a, pa.table({"key": keys}), old.similarity)
    shared_new = EntityVectors(keys, b, pa.table({"key": keys}), new.similarity)
    probes = np.random.default_rng(0).choice(len(keys), min(sample, len(keys)), replace=False)
    top = min(k, len(keys) - 1)
    overlaps = [len({r for r, _ in exact_neighbors(shared_old, int(p), top)} &
                    {r for r, _ in exact_neighbors(shared_new, int(p), top)}) / top for p in probes]
    report[f"neighbor_overlap@{top}"] = float(np.mean(overlaps))
    path = new_run.compare_path(entity, old_run.run_id)
    fs.write_text_atomic(path, json.dumps(report, indent=2))
    report["path"] = path
    return report
