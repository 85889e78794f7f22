"""Stable vectors across retrainings: rotate a run's vectors onto an earlier run's space.

Orthogonal Procrustes over the keys both runs share keeps every distance and angle of the new run
and turns it to face the old one, so nearest-neighbour indexes downstream do not jump. Entities
in one space (a two-tower run's users and items) share one rotation, so their dot products, the
model's scores, are unchanged. The embed stage calls `Aligner` on its staged vectors, before they
are published.
"""
from __future__ import annotations

import logging

import numpy as np

from pipelines.core import fs
from pipelines.core.config import Config
from pipelines.core.errors import UsageError
from pipelines.core.rundir import RunDir, resolve_run
from pipelines.core.vectors import (EntityVectors, UnknownKeyError, mean_cosine, procrustes, shared_rows,
                                    vector_array, vectors_of)
from pipelines.tools.neighbors import load_entity

logger = logging.getLogger(__name__)
ALIGN_SAMPLE = 200_000


def previous_run(run: RunDir, align_to: str | None) -> RunDir | None:
    """The run to align to: `previous` is the run the output's LATEST names (when it is another
    run), anything else a run directory."""
    if not align_to:
        return None
    try:
        target = resolve_run(run.output if align_to == "previous" else align_to)
    except UsageError:
        if align_to != "previous":
            raise
        return None
    return None if target.path == run.path else target


class Aligner:
    """Rotates a staged run's vectors onto `previous`'s space; called by the embed stage."""

    def __init__(self, previous: RunDir):
        self._previous = previous

    @classmethod
    def for_config(cls, config: Config, run: RunDir) -> "Aligner | None":
        previous = previous_run(run, config.align_to)
        if config.align_to and previous is None:
            logger.info("align: no previous run to align to")
        return None if previous is None else cls(previous)

    def __call__(self, staged: RunDir, space_of: dict[str, str]) -> dict:
        """Aligns every entity of `space_of` (entity -> its space) in place; returns per space the
        shared keys used and the mean cosine between old and aligned new vectors."""
        report = {}
        for space in sorted(set(space_of.values())):
            members = [e for e, s in space_of.items() if s == space]
            olds, news = [], []
            for entity in members:
                try:
                    old = load_entity(self._previous, entity)
                except UnknownKeyError:
                    continue
                new = EntityVectors.load(staged.embeddings_dir(entity))
                if old.dim != new.dim:
                    logger.warning("align: %s changed dimension; not aligned", entity)
                    continue
                old_rows, new_rows, _ = shared_rows(old, new, ALIGN_SAMPLE)
                olds.append(old.vectors[old_rows])
                news.append(new.vectors[new_rows])
            if sum(len(o) for o in olds) < 2:
                report[space] = {"aligned": False, "shared_keys": 0}
                continue
            source, target = np.concatenate(news), np.concatenate(olds)
            rotation = procrustes(source, target)
            for entity in members:
                rotate_files(staged.embeddings_dir(entity), rotation)
            report[space] = {"aligned": True, "entities": members, "shared_keys": int(len(source)),
                             "mean_cosine_after": mean_cosine(source @ rotation, target)}
        return {"run": self._previous.path, "spaces": report}


def rotate_files(directory: str, rotation: np.ndarray) -> None:
    """Multiplies the `embedding` column of every Parquet file in `directory` by `rotation`."""
    for path in fs.parquet_files(directory):
        table = fs.read_parquet(path)
        column = vector_array(vectors_of(table) @ rotation)
        table = table.set_column(table.schema.get_field_index("embedding"), table.schema.field("embedding"), column)
        fs.write_parquet(table, path, use_dictionary=["key"], compression="snappy")
