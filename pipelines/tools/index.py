"""Approximate nearest-neighbour index of a published entity (usearch HNSW), an `Indexer` for
`tools.neighbors.most_similar`.

usearch rather than faiss: one small wheel with no BLAS of its own, cosine and inner product as
native metrics (our `similarity` metadata maps onto them without normalising copies), an index that
is one file and can be memory-mapped (`view`) when it is larger than RAM, and multi-threaded builds.

Layout: `<run>/index/<entity>/index.usearch` (labels are row numbers) and `keys.parquet` (row ->
key, with the `created_at` of the vectors it was built from). Republishing the embeddings deletes
the index (see `RunDir.stage`); an index whose vectors' `created_at` differs is ignored anyway.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa

from pipelines.core import fs
from pipelines.core.rundir import RunDir
from pipelines.core.vectors import EntityVectors, UnknownKeyError
from pipelines.tools.neighbors import Neighbors, exact_neighbors, load_entity

logger = logging.getLogger(__name__)

METRICS = {"cosine": "cos", "dot": "ip"}
INDEX_FILE = "index.usearch"
KEYS_FILE = "keys.parquet"


def build_index(run: RunDir, entity: str, connectivity: int = 32, expansion_add: int = 128) -> dict:
    """Builds and saves the HNSW index of `entity`; returns its size facts."""
    from usearch.index import Index
    vectors = load_entity(run, entity)
    index = Index(ndim=vectors.dim, metric=METRICS[vectors.similarity], dtype="f32",
                  connectivity=connectivity, expansion_add=expansion_add)
    index.add(np.arange(len(vectors.keys), dtype=np.uint64), vectors.vectors)
    directory = run.index_dir(entity)
    keys = pa.table({"key": vectors.keys}).replace_schema_metadata(
        {"created_at": vectors.metadata.get("created_at", "")})
    fs.write_parquet(keys, fs.join(directory, KEYS_FILE))
    with fs.local_target(fs.join(directory, INDEX_FILE)) as local:
        temporary = local + ".tmp"
        index.save(temporary)
        os.replace(temporary, local)  # the index file appears last, complete
    return {"entity": entity, "vectors": len(vectors.keys), "dim": vectors.dim, "metric": vectors.similarity,
            "path": directory}


def has_index(run: RunDir, entity: str) -> bool:
    return fs.exists(fs.join(run.index_dir(entity), INDEX_FILE))


class UsearchIndexer:
    """A saved index, loaded (memory-mapped for a local run) for searches by row or vector."""

    def __init__(self, run: RunDir, entity: str):
        from usearch.index import Index
        directory = run.index_dir(entity)
        if not has_index(run, entity):
            raise UnknownKeyError(f"{entity}: no index; run `embedpipe index {run.path} --entity {entity}`")
        keys = fs.read_parquet(fs.join(directory, KEYS_FILE))
        self.keys = keys.column("key").to_pylist()
        self.created_at = (keys.schema.metadata or {}).get(b"created_at", b"").decode()
        path = fs.join(directory, INDEX_FILE)
        if fs.is_remote(path):
            with fs.local_copy(path) as local:
                self.index = Index.restore(local)
        else:
            self.index = Index.restore(path, view=True)

    def matches(self, entity: EntityVectors) -> bool:
        """Whether the index was built from these very vectors."""
        return self.created_at == entity.metadata.get("created_at", "") and len(self.keys) == len(entity.keys)

    def search(self, vectors: np.ndarray, k: int, expansion: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Rows [n, k] and scores [n, k] (cosine or dot, higher is nearer) of the k nearest."""
        self.index.expansion_search = max(expansion, k)
        matches = self.index.search(vectors.astype(np.float32), k)
        return np.asarray(matches.keys, np.int64).reshape(len(vectors), -1), 1.0 - np.asarray(
            matches.distances, np.float32).reshape(len(vectors), -1)

    def most_similar(self, entity: EntityVectors, rows: list[int], k: int) -> list[Neighbors]:
        """For each of `rows`, its k nearest (row, score), itself excluded."""
        found, scores = self.search(entity.vectors[rows], k + 1)
        return [[(int(n), float(s)) for n, s in zip(ns, ss) if n != row][:k]
                for row, ns, ss in zip(rows, found, scores)]


def indexer_for(run: RunDir, entity: EntityVectors, name: str) -> UsearchIndexer | None:
    """The entity's index when one was built from these vectors, else None (exact search)."""
    if not has_index(run, name):
        return None
    indexer = UsearchIndexer(run, name)
    if not indexer.matches(entity):
        logger.warning("%s: the index was built from other vectors; searching exactly", name)
        return None
    return indexer


def recall_at_k(entity: EntityVectors, indexer: UsearchIndexer, k: int = 10, queries: int = 1000,
                seed: int = 0) -> float:
    """Share of the exact top-k (the query itself excluded) that the index returns."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(entity.keys), min(queries, len(entity.keys)), replace=False)
    found, _ = indexer.search(entity.vectors[rows], k + 1)
    hits = 0
    for row, candidates in zip(rows, found):
        exact = {r for r, _ in exact_neighbors(entity, int(row), k)}
        hits += len(exact & set(candidates.tolist()) - {int(row)})
    return hits / (len(rows) * k)
