"""Exact nearest neighbours over a published entity, by the entity's own similarity (cosine or dot)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from pipelines.rundir import RunDir


class UnknownKeyError(LookupError):
    """The entity or key is not in the run's embeddings."""


@dataclasses.dataclass(frozen=True)
class EntityVectors:
    """A published entity loaded in memory: keys [n], vectors [n, dim], the rest of the table."""
    keys: list[str]
    vectors: np.ndarray
    table: pa.Table
    similarity: str

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
    dim = table.schema.field("embedding").type.list_size
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    return EntityVectors(table.column("key").to_pylist(), vectors, table, metadata.get("similarity", "cosine"))


def nearest(entity: EntityVectors, key: str, k: int) -> list[tuple[int, float]]:
    """Top-k (row, score) by the entity's similarity, the key itself excluded, best first."""
    row = find_row(entity, key)
    vectors = entity.vectors
    if entity.similarity == "cosine":
        norms = np.linalg.norm(vectors, axis=1)
        vectors = vectors / np.where(norms > 0, norms, 1.0)[:, None]
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


def print_neighbors(run: RunDir, entity_name: str, key: str, k: int) -> list[tuple[str, float]]:
    """Prints the neighbours of `key` with the entity's metadata columns; returns (key, score) pairs."""
    entity = load_entity(run, entity_name)
    try:
        found = nearest(entity, key, k)
    except UnknownKeyError as error:
        raise UnknownKeyError(f"{entity_name}: {error} among {len(entity.keys)} keys") from None
    extra = entity.metadata_columns
    rows = entity.table.select(extra).to_pylist()
    print(f"{k} nearest to {key!r} in {entity_name} by {entity.similarity}:")
    print("\t".join(["rank", "score", "key"] + extra))
    for rank, (index, score) in enumerate(found, 1):
        print("\t".join([str(rank), f"{score:.4f}", entity.keys[index]] + [str(rows[index][c]) for c in extra]))
    return [(entity.keys[i], s) for i, s in found]
