"""Exact nearest neighbours over a published entity, by the entity's own similarity (cosine or dot)."""
from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from pipelines.rundir import RunDir
from pipelines.vector_columns import vectors_of


class UnknownKeyError(LookupError):
    """The entity or key is not in the run's embeddings."""


@dataclasses.dataclass
class EntityVectors:
    """A published entity loaded in memory: keys [n], vectors [n, dim], the rest of the table."""
    keys: list[str]
    vectors: np.ndarray
    table: pa.Table
    similarity: str

    @functools.cached_property
    def unit_vectors(self) -> np.ndarray:
        norms = np.linalg.norm(self.vectors, axis=1)
        return self.vectors / np.where(norms > 0, norms, 1.0)[:, None]

    @property
    def similarity_vectors(self) -> np.ndarray:
        """Vectors whose dot product is the entity's similarity: unit length for cosine, as published for dot."""
        return self.unit_vectors if self.similarity == "cosine" else self.vectors

    def rows_by_count(self) -> np.ndarray:
        """Row numbers, most frequent key first (ties in table order)."""
        return np.argsort(-self.table.column("count").to_numpy(), kind="stable")

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.table.column_names if c not in ("key", "embedding")]


def load_entity(run: RunDir, entity: str) -> EntityVectors:
    path = run.join("embeddings", entity)
    try:
        dataset = ds.dataset(path, format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid) as error:
        raise UnknownKeyError(f"{run.path}: no published entity {entity!r}") from error
    table = dataset.to_table()
    metadata = {k.decode(): v.decode() for k, v in (dataset.schema.metadata or {}).items()}
    return EntityVectors(table.column("key").to_pylist(), vectors_of(table), table, metadata.get("similarity", "cosine"))


def exact_neighbors(entity: EntityVectors, row: int, k: int) -> list[tuple[int, float]]:
    """Top-k (row, score) by the entity's similarity, `row` itself excluded, best first."""
    vectors = entity.similarity_vectors
    scores = vectors @ vectors[row]
    scores[row] = -np.inf
    k = min(k, len(scores) - 1)
    top = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.array([], int)
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top]


def find_row(entity: EntityVectors, key: str) -> int:
    """Row of `key`; failing that, of the one row whose string metadata equals it (a movie's title)."""
    try:
        return entity.keys.index(key)
    except ValueError:
        pass
    for column in entity.metadata_columns:
        if pa.types.is_string(entity.table.schema.field(column).type):
            rows = [i for i, value in enumerate(entity.table.column(column).to_pylist()) if value == key]
            if len(rows) > 1:
                raise UnknownKeyError(f"{key!r} matches {len(rows)} rows of {column!r}; use the key instead")
            if rows:
                return rows[0]
    raise UnknownKeyError(f"key {key!r} not found")


def print_neighbors(run: RunDir, entity_name: str, key: str, k: int, use_index: bool = True) -> list[tuple[str, float]]:
    """Prints the neighbours of `key` with the entity's metadata columns; returns (key, score) pairs.

    Searches the entity's ANN index when `embedpipe index` built one (and `use_index`), else exactly.
    """
    entity = load_entity(run, entity_name)
    try:
        row = find_row(entity, key)
    except UnknownKeyError as error:
        raise UnknownKeyError(f"{entity_name}: {error} among {len(entity.keys)} keys") from None
    method = "exact"
    found = None
    if use_index and os.path.exists(run.join("index", entity_name, "index.usearch")):
        from pipelines.ann import EntityIndex
        found = EntityIndex(run, entity_name, view=True).neighbors(entity.vectors, [row], k)[0]
        method = "index"
    if found is None:
        found = exact_neighbors(entity, row, k)
    extra = entity.metadata_columns
    rows_meta = entity.table.select(extra).to_pylist()
    named = "" if entity.keys[row] == key else f" (key {entity.keys[row]!r})"
    print(f"{k} nearest to {key!r}{named} in {entity_name} by {entity.similarity} ({method}):")
    print("\t".join(["rank", "score", "key"] + extra))
    for rank, (index, score) in enumerate(found, 1):
        print("\t".join([str(rank), f"{score:.4f}", entity.keys[index]] + [str(rows_meta[index][c]) for c in extra]))
    return [(entity.keys[i], s) for i, s in found]
