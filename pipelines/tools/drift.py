"""Drift of one entity between two runs: keys added and removed, how far shared keys moved after
alignment, and how much their neighbourhoods changed. `compare` and the run report both use it."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa

from pipelines.core import fs
from pipelines.core.rundir import RunDir
from pipelines.core.vectors import EntityVectors, procrustes, row_cosines, shared_rows
from pipelines.tools.neighbors import exact_neighbors, load_entity


@dataclasses.dataclass(frozen=True)
class Drift:
    """Attributes:
        facts: shared_keys, added_keys, removed_keys and, with two shared keys or more,
            mean_cosine_aligned (None when the dimension changed) and neighbor_overlap@k.
        keys: the shared keys.
        cosines: per shared key, the cosine between its old vector and its aligned new one
            (None when there is no alignment).
    """
    facts: dict
    keys: list[str]
    cosines: np.ndarray | None

    def most_moved(self, n: int) -> list[tuple[str, float]]:
        """The `n` shared keys whose aligned vectors turned furthest, with their cosines."""
        if self.cosines is None:
            return []
        rows = np.argsort(self.cosines, kind="stable")[:n]
        return [(self.keys[r], float(self.cosines[r])) for r in rows]


def entity_drift(old: EntityVectors, new: EntityVectors, k: int = 10, sample: int = 2000) -> Drift:
    """Mean cosine after Procrustes alignment over the shared keys, and the mean overlap of top-k
    neighbour sets of `sample` shared keys (each side searched among the shared keys only)."""
    old_rows, new_rows, keys = shared_rows(old, new)
    facts = {"shared_keys": len(keys), "added_keys": len(set(new.keys) - set(old.keys)),
             "removed_keys": len(set(old.keys) - set(new.keys))}
    if len(keys) < 2:
        return Drift(facts, keys, None)
    a, b = old.vectors[old_rows], new.vectors[new_rows]
    cosines = row_cosines(b @ procrustes(b, a), a) if a.shape[1] == b.shape[1] else None
    facts["mean_cosine_aligned"] = None if cosines is None else float(np.mean(cosines))
    shared_old = EntityVectors(keys, a, pa.table({"key": keys}), old.similarity)
    shared_new = EntityVectors(keys, b, pa.table({"key": keys}), new.similarity)
    probes = np.random.default_rng(0).choice(len(keys), min(sample, len(keys)), replace=False)
    top = min(k, len(keys) - 1)
    overlaps = [len({r for r, _ in exact_neighbors(shared_old, int(p), top)} &
                    {r for r, _ in exact_neighbors(shared_new, int(p), top)}) / top for p in probes]
    facts[f"neighbor_overlap@{top}"] = float(np.mean(overlaps))
    return Drift(facts, keys, cosines)


def compare_runs(old_run: RunDir, new_run: RunDir, entity: str, k: int = 10, sample: int = 2000) -> dict:
    """`entity_drift` of an entity of two runs, written to the new run's compare/ (with two shared
    keys or more)."""
    drift = entity_drift(load_entity(old_run, entity), load_entity(new_run, entity), k, sample)
    report = {"entity": entity, "old_run": old_run.run_id, "new_run": new_run.run_id, **drift.facts}
    if len(drift.keys) < 2:
        return report
    path = new_run.compare_path(entity, old_run.run_id)
    fs.write_text_atomic(path, json.dumps(report, indent=2))
    report["path"] = path
    return report
