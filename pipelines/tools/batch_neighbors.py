"""Neighbours of a file of keys as a Beam job: (key, rank, neighbor, score) Parquet.

Keys are batched; each worker loads the entity's vectors (and its index, unless exact search is
asked for) once, in `setup`. Keys the entity does not have are counted and logged, not fatal.
"""
from __future__ import annotations

import logging
from typing import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.core.beam_runner import COUNTER_NAMESPACE, make_pipeline, read_counters, run_pipeline
from pipelines.core.rundir import RunDir
from pipelines.tools.index import indexer_for
from pipelines.tools.neighbors import load_entity, most_similar

logger = logging.getLogger(__name__)

NEIGHBOR_SCHEMA = pa.schema([("key", pa.string()), ("rank", pa.int32()), ("neighbor", pa.string()),
                             ("score", pa.float32())])


@beam.typehints.with_input_types(list[str])
@beam.typehints.with_output_types(pa.Table)
class FindNeighbors(beam.DoFn):
    """Batches of keys -> tables of their neighbours."""

    def __init__(self, run_path: str, entity: str, k: int, exact: bool):
        self._run_path, self._entity, self._k, self._exact = run_path, entity, k, exact
        self._missing = Metrics.counter(COUNTER_NAMESPACE, "neighbor_keys_not_found")

    def setup(self) -> None:
        run = RunDir(self._run_path)
        self._vectors = load_entity(run, self._entity)
        self._indexer = None if self._exact else indexer_for(run, self._vectors, self._entity)

    def process(self, keys: list[str]) -> Iterator[pa.Table]:
        rows_of = self._vectors.key_to_index
        known = [key for key in keys if key in rows_of]
        for key in sorted(set(keys) - set(known)):
            self._missing.inc()
            logger.warning("neighbors: key %r not found", key)
        if not known:
            return
        found = most_similar(self._vectors, [rows_of[key] for key in known], self._k, self._indexer)
        columns = {"key": [], "rank": [], "neighbor": [], "score": []}
        for key, pairs in zip(known, found):
            for rank, (neighbor, score) in enumerate(pairs, 1):
                columns["key"].append(key)
                columns["rank"].append(rank)
                columns["neighbor"].append(self._vectors.keys[neighbor])
                columns["score"].append(score)
        yield pa.Table.from_pydict(columns, schema=NEIGHBOR_SCHEMA)


def run_batch_neighbors(run: RunDir, entity: str, keys_file: str, output: str, k: int, exact: bool,
                        options: PipelineOptions) -> int:
    """A file of keys (one per line) -> `<output>-*.parquet`; returns the keys not found."""
    load_entity(run, entity)  # an unknown entity is an error before the job starts
    pipeline = make_pipeline(options)
    _ = (pipeline
         | "ReadKeys" >> beam.io.ReadFromText(keys_file)
         | "DropBlankKeys" >> beam.Filter(lambda key: key.strip())
         | "BatchKeys" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
         | "FindNeighbors" >> beam.ParDo(FindNeighbors(run.path, entity, k, exact))
         | "WriteNeighbors" >> beam.io.WriteToParquetBatched(output, NEIGHBOR_SCHEMA, file_name_suffix=".parquet"))
    return read_counters(run_pipeline(pipeline), ("neighbor_keys_not_found",))["neighbor_keys_not_found"]
