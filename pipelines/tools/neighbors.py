"""Nearest neighbours of published keys by the entity's own similarity (cosine or dot).

Search is exact unless an index plugs in, as gensim's `most_similar(indexer=...)` does: an
`Indexer` answers the same question approximately (the usearch index of `tools.index`).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from pipelines.core.rundir import RunDir
from pipelines.core.vectors import EntityVectors, UnknownKeyError

Neighbors = list[tuple[int, float]]


class Indexer(Protocol):
    """Finds the k nearest rows of given rows (themselves excluded), best first."""

    def most_similar(self, entity: EntityVectors, rows: list[int], k: int) -> list[Neighbors]:
        ...


def load_entity(run: RunDir, name: str) -> EntityVectors:
    """A published entity of `run`.

    Raises:
        UnknownKeyError: the run has no such entity (the message lists those it has).
    """
    entities = run.published_entities()
    if name not in entities:
        have = ", ".join(entities) if entities else f"none: the run is not embedded ({run.status()})"
        raise UnknownKeyError(f"{run.path}: no entity {name!r} (entities: {have})")
    return EntityVectors.load(run.embeddings_dir(name))


def exact_neighbors(entity: EntityVectors, row: int, k: int) -> Neighbors:
    """Top-k (row, score) by the entity's similarity, `row` itself excluded, best first."""
    vectors = entity.similarity_vectors
    scores = vectors @ vectors[row]
    scores[row] = -np.inf
    k = min(k, len(scores) - 1)
    top = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.array([], int)
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top]


class ExactIndexer:
    """Exact search: every row scored."""

    def most_similar(self, entity: EntityVectors, rows: list[int], k: int) -> list[Neighbors]:
        return [exact_neighbors(entity, row, k) for row in rows]


def most_similar(entity: EntityVectors, rows: list[int], k: int, indexer: Indexer | None = None) -> list[Neighbors]:
    """The k nearest (row, score) of each of `rows`, by `indexer` (exact search by default)."""
    return (indexer or ExactIndexer()).most_similar(entity, rows, k)


def is_hashed_entity(run: RunDir, name: str) -> bool:
    """Whether the entity's keys are hashed into buckets (a hash feature, or a cross that is not exact)."""
    from pipelines.core.config_parse import config_from_dict
    config = config_from_dict(run.read_manifest()["config"])
    entity = next((e for e in config.entities if e.name == name), None)
    return entity is not None and config.features[entity.key].is_hashed


def neighbor_lines(entity: EntityVectors, name: str, key: str, k: int, indexer: Indexer | None = None,
                   method: str = "exact", hashed: bool = False) -> list[str]:
    """The neighbours of one key (or of the row a metadata value such as a title names) as the
    `neighbors` command prints them: a title line, a header, then rank, score, key and metadata.
    For a hashed entity a last column says "same" for a neighbour in the query's bucket (the same
    row, so the same vector)."""
    row = entity.find_row(key)
    found = most_similar(entity, [row], k, indexer)[0]
    extra = [c for c in ("count",) if c in entity.table.column_names] + entity.metadata_columns
    values = {c: entity.table.column(c).to_pylist() for c in extra}
    named = "" if entity.keys[row] == key else f" (key {entity.keys[row]!r})"
    lines = [f"{k} nearest to {key!r}{named} in {name} by {entity.similarity} ({method}):",
             "\t".join(["rank", "score", "key"] + extra + (["bucket"] if hashed else []))]
    for rank, (index, score) in enumerate(found, 1):
        fields = [str(rank), f"{score:.4f}", entity.keys[index]] + [str(values[c][index]) for c in extra]
        if hashed:
            fields.append("same" if np.array_equal(entity.vectors[index], entity.vectors[row]) else "")
        lines.append("\t".join(fields))
    return lines

