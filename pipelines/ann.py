"""Approximate nearest-neighbour index of a published entity (usearch HNSW), and batch neighbours.

usearch rather than faiss: one small wheel with no BLAS of its own, cosine and inner product as
native metrics (our `similarity` metadata maps onto them without normalising copies), an index that
is one file and can be memory-mapped (`view`) when it is larger than RAM, and multi-threaded builds.

Layout: `<run>/index/<entity>/index.usearch` (labels are row numbers) and `keys.parquet` (row -> key).
"""
from __future__ import annotations

import logging
import os
from typing import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.neighbors import EntityVectors, UnknownKeyError, exact_neighbors, load_entity
from pipelines.rundir import RunDir

logger = logging.getLogger(__name__)

METRICS = {"cosine": "cos", "dot": "ip"}
INDEX_FILE = "index.usearch"
KEYS_FILE = "keys.parquet"
NEIGHBOR_SCHEMA = pa.schema([("key", pa.string()), ("rank", pa.int32()), ("neighbor", pa.string()),
                             ("score", pa.float32())])


def index_dir(run: RunDir, entity: str) -> str:
    return run.join("index", entity)


def build_index(run: RunDir, entity: str, connectivity: int = 32, expansion_add: int = 128) -> dict:
    """Builds and saves the HNSW index of `entity`; returns its size facts."""
    from usearch.index import Index
    vectors = load_entity(run, entity)
    index = Index(ndim=vectors.vectors.shape[1], metric=METRICS[vectors.similarity], dtype="f32",
                  connectivity=connectivity, expansion_add=expansion_add)
    index.add(np.arange(len(vectors.keys), dtype=np.uint64), vectors.vectors)
    directory = index_dir(run, entity)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, INDEX_FILE + ".tmp")
    index.save(temporary)
    pq.write_table(pa.table({"key": vectors.keys}), os.path.join(directory, KEYS_FILE))
    os.replace(temporary, os.path.join(directory, INDEX_FILE))  # the index file appears last, complete
    return {"entity": entity, "vectors": len(vectors.keys), "dim": int(vectors.vectors.shape[1]),
            "metric": vectors.similarity, "path": directory}


class EntityIndex:
    """A saved index, loaded (memory-mapped with `view=True`) for searches by key or vector."""

    def __init__(self, run: RunDir, entity: str, view: bool = False):
        from usearch.index import Index
        directory = index_dir(run, entity)
        path = os.path.join(directory, INDEX_FILE)
        if not os.path.exists(path):
            raise UnknownKeyError(f"{entity}: no index; run `embedpipe index {run.path} --entity {entity}`")
        self.index = Index.restore(path, view=view)
        self.keys = pq.read_table(os.path.join(directory, KEYS_FILE)).column("key").to_pylist()
        self.similarity = "dot" if str(self.index.metric).endswith("IP") else "cosine"

    def search(self, vectors: np.ndarray, k: int, expansion: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Rows [n, k] and scores [n, k] (cosine or dot, higher is nearer) of the k nearest."""
        self.index.expansion_search = max(expansion, k)
        matches = self.index.search(vectors.astype(np.float32), k)
        return np.asarray(matches.keys, np.int64).reshape(len(vectors), -1), 1.0 - np.asarray(
            matches.distances, np.float32).reshape(len(vectors), -1)

    def neighbors(self, vectors: np.ndarray, rows: list[int], k: int) -> list[list[tuple[int, float]]]:
        """For each of `rows` of `vectors` [n, dim], its k nearest (row, score), itself excluded."""
        found, scores = self.search(vectors[rows], k + 1)
        return [[(int(n), float(s)) for n, s in zip(ns, ss) if n != row][:k]
                for row, ns, ss in zip(rows, found, scores)]


def recall_at_k(entity: EntityVectors, index: EntityIndex, k: int = 10, queries: int = 1000, seed: int = 0) -> float:
    """Share of the exact top-k (the query itself excluded) that the index returns."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(entity.keys), min(queries, len(entity.keys)), replace=False)
    found, _ = index.search(entity.vectors[rows], k + 1)
    hits = 0
    for row, candidates in zip(rows, found):
        exact = {r for r, _ in exact_neighbors(entity, int(row), k)}
        hits += len(exact & set(candidates.tolist()) - {int(row)})
    return hits / (len(rows) * k)


class FindNeighbors(beam.DoFn):
    """Batches of keys -> neighbour rows; the entity's index (or vectors) loaded once per worker."""

    def __init__(self, run_path: str, entity: str, k: int, exact: bool):
        self._run_path, self._entity, self._k, self._exact = run_path, entity, k, exact

    def setup(self) -> None:
        run = RunDir(self._run_path)
        self._vectors = load_entity(run, self._entity)
        self._index = None if self._exact else EntityIndex(run, self._entity, view=True)
        self._rows = {key: i for i, key in enumerate(self._vectors.keys)}

    def process(self, keys: list[str]) -> Iterator[pa.Table]:
        known = [key for key in keys if key in self._rows]
        for key in set(keys) - set(known):
            beam.metrics.Metrics.counter("embedpipe", "neighbor_keys_not_found").inc()
            logger.warning("neighbors: key %r not found", key)
        if not known:
            return
        rows = [self._rows[key] for key in known]
        if self._index is None:
            found = [exact_neighbors(self._vectors, row, self._k) for row in rows]
        else:
            found = self._index.neighbors(self._vectors.vectors, rows, self._k)
        columns = {"key": [], "rank": [], "neighbor": [], "score": []}
        for key, pairs in zip(known, found):
            for rank, (neighbor, score) in enumerate(pairs, 1):
                columns["key"].append(key)
                columns["rank"].append(rank)
                columns["neighbor"].append(self._vectors.keys[neighbor])
                columns["score"].append(score)
        yield pa.Table.from_pydict(columns, schema=NEIGHBOR_SCHEMA)


def run_batch_neighbors(run: RunDir, entity: str, keys_file: str, output: str, k: int, exact: bool,
                        beam_args: list[str]) -> None:
    """A file of keys (one per line) -> `<output>-*.parquet` of (key, rank, neighbor, score), as a Beam job."""
    from apache_beam.options.pipeline_options import PipelineOptions
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        _ = (pipeline
             | "ReadKeys" >> beam.io.ReadFromText(keys_file)
             | "DropBlankKeys" >> beam.Filter(lambda key: key.strip())
             | "BatchKeys" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
             | "FindNeighbors" >> beam.ParDo(FindNeighbors(run.path, entity, k, exact))
             | "WriteNeighbors" >> beam.io.WriteToParquetBatched(output, NEIGHBOR_SCHEMA, file_name_suffix=".parquet"))
