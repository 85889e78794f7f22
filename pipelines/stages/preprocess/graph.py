"""Edge rows -> a graph -> random walks as token documents (DeepWalk, node2vec), and the node table.

A graph config runs preprocess as two Beam jobs:
1. Building the graph (`BuildGraph`, `pipeline.build_graph_job`): a combine gathers the node ids
   from one read of the edge rows; a second read numbers each edge's ends and sends each directed
   edge to the shard of its source node (a range of node numbers, `adjacency`), in parts of many
   edges: through the runner's shuffle, or, on a runner that holds its shuffle in memory, through
   files on the workers' shared disk (`ToShardParts`). Each shard merges its duplicates and writes
   its part of the graph (compressed sparse rows) as a file of its own; the last step writes the
   nodes' file (ids, degrees), and the node tables and invalid rows are written beside. No worker
   holds more than one shard's edges (and `PART_EDGES` on their way), and the edges cross the
   shuffle as numbers (9 bytes per direction, 8 more with weights), never as strings.
2. The walks and tf.Transform's job: walks start from chunks of `CHUNK_NODES` nodes, spread over the
   workers (`Reshuffle`), and stream out as record batches of documents. Each worker process reads
   the graph once (`shared.Shared`, as RunInference loads a model), so the graph must fit one
   worker's memory: 4 bytes per directed edge (an undirected edge counts twice), 8 per node plus
   the node ids; 8 more per directed edge for weights, 8 more for node2vec. Nothing of the edge
   rows is left in this job (a runner that holds a stage's input until its job ends, as the
   in-process one does, has freed them), and the walks, walks_per_node x walk_length tokens per
   node and by far the larger data, are never held.
Every draw of a chunk comes from a generator seeded by (model.seed, the chunk's first node), so the
walks do not depend on the runner, and both tf.Transform passes can generate them again instead of
holding them (see TransformInputs).
Each walk goes to the eval split with probability `split.eval_fraction` (a draw of the same seed).
Self-loops are dropped (a step that stays put adds no context); an edge given more than once is
kept once, with the sum of its weights. Both are counted in the manifest, not written to invalid/:
the rows are valid. Nodes without out-edges (isolated, or sinks of a directed graph) are counted;
their walks are the node alone.
"""
from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils import shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.core import fs
from pipelines.core.beam_runner import COUNTER_NAMESPACE
from pipelines.core.config import Config, GraphConfig
from pipelines.core.rundir import RunDir
from pipelines.stages.preprocess.adjacency import (DirectedEdges, EdgePart, NodeDegrees, ShardNodes,
                                                   adjacency_shard, directed_edges, load_edge_part, load_graph,
                                                   node_names, save_edge_parts, save_nodes, save_shard, shard_of)
from pipelines.stages.preprocess.documents import TransformInputs, document_column, ragged_batch
from pipelines.stages.preprocess.entities import entity_table_schema
from pipelines.stages.preprocess.schema import RawSchema
from pipelines.stages.preprocess.walks import random_walks, walk_documents

CHUNK_NODES = 1024
PART_EDGES = 1 << 21   # directed edges a worker holds before they go on to their shards (ToShardParts)
NODE_ROWS_PER_TABLE = 65536
GRAPH_COUNTERS = ("nodes", "edges", "self_loops", "duplicate_edges", "nodes_without_edges", "walk_tokens",
                  "documents_train", "documents_eval")


class EdgePasses(NamedTuple):
    """Typed edge rows, read twice: the node ids are gathered from the first read, the edges numbered
    from the second (reading the input again costs less than holding it until the ids are known)."""
    nodes: beam.PCollection
    edges: beam.PCollection


class GatherNodeNames(beam.CombineFn):
    """Typed edge rows -> the sorted ids of every node (`adjacency.node_names`), a self-loop's too.
    The accumulator is a list of distinct-id arrays, merged whenever what waits beside the first
    reaches its size: a worker holds each id about twice, not once per edge."""

    def __init__(self, graph: GraphConfig):
        self._graph = graph

    def create_accumulator(self) -> list[pa.Array]:
        return []

    def add_input(self, accumulator: list[pa.Array], batch: pa.RecordBatch) -> list[pa.Array]:
        accumulator.append(node_names([batch.column(self._graph.source), batch.column(self._graph.target)]))
        return self._merged_when_grown(accumulator)

    def merge_accumulators(self, accumulators) -> list[pa.Array]:
        return self._merged_when_grown([names for accumulator in accumulators for names in accumulator])

    def compact(self, accumulator: list[pa.Array]) -> list[pa.Array]:
        return [node_names(accumulator)] if len(accumulator) > 1 else accumulator

    def extract_output(self, accumulator: list[pa.Array]) -> pa.Array:
        return self.compact(accumulator)[0] if accumulator else pa.array([], pa.string())

    def _merged_when_grown(self, accumulator: list[pa.Array]) -> list[pa.Array]:
        waiting = sum(len(names) for names in accumulator[1:])
        return self.compact(accumulator) if waiting >= max(len(accumulator[0]), 1) else accumulator


@beam.typehints.with_input_types(pa.RecordBatch, pa.Array)
@beam.typehints.with_output_types(tuple[int, Union[DirectedEdges, EdgePart]])
class ToShardParts(beam.DoFn):
    """Typed edge rows -> (shard, a part of its directed edges) (`adjacency.directed_edges`, `shard_of`);
    self-loops dropped and counted.

    A bundle's edges are held per shard and go on whenever `part_edges` directed edges are held, and
    at the bundle's end: as arrays, through the runner's shuffle; or, given `parts_dir`, written there
    as one file (`adjacency.save_edge_parts`), only where each shard's edges are (`EdgePart`) crossing
    the shuffle. Files are for a runner that holds its shuffle in memory (the in-process one: its
    workers share this machine's disk).

    Args:
        graph: the graph settings.
        parts_dir: a directory every worker can read, or None.
        part_edges: directed edges held before they go on (9 bytes each, 8 more with weights; twice
            that while they are concatenated).
    """

    def __init__(self, graph: GraphConfig, parts_dir: str | None, part_edges: int = PART_EDGES):
        self._graph = graph
        self._parts_dir = parts_dir
        self._part_edges = part_edges

    def setup(self) -> None:
        self._self_loops = Metrics.counter(COUNTER_NAMESPACE, "self_loops")

    def start_bundle(self) -> None:
        self._held: dict[int, list[DirectedEdges]] = {}
        self._held_edges = 0

    def process(self, batch: pa.RecordBatch, names: pa.Array) -> Iterator[tuple[int, DirectedEdges | EdgePart]]:
        graph = self._graph
        weights = batch.column(graph.weight).cast(pa.float64()).to_numpy() if graph.weight else None
        edges, loops = directed_edges(names, batch.column(graph.source), batch.column(graph.target), weights,
                                      graph.directed)
        self._self_loops.inc(loops)
        for shard, part in shard_of(edges, len(names)):
            self._held.setdefault(shard, []).append(part)
        self._held_edges += len(edges.sources)
        if self._held_edges >= self._part_edges:
            yield from self._release_held()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for part in self._release_held():
            yield WindowedValue(part, MIN_TIMESTAMP, [GlobalWindow()])

    def _release_held(self) -> list[tuple[int, DirectedEdges | EdgePart]]:
        held, self._held, self._held_edges = self._held, {}, 0
        shards = {shard: DirectedEdges.concatenate(parts) for shard, parts in held.items()}
        if self._parts_dir is None or not shards:
            return list(shards.items())
        return save_edge_parts(shards, self._parts_dir)


def merge_and_save_shard(grouped: tuple[int, Iterable[DirectedEdges | EdgePart]], names: pa.Array, directed: bool,
                         directory: str) -> ShardNodes:
    """A shard and the parts of its edges (the edges, or where they were written) -> its adjacency
    (`adjacency.adjacency_shard`), written into the graph's `directory`; only its nodes go on."""
    shard, parts = grouped
    edges = [load_edge_part(part) if isinstance(part, EdgePart) else part for part in parts]
    return save_shard(adjacency_shard(shard, edges, len(names), directed), directory)


def count_graph(nodes: NodeDegrees) -> NodeDegrees:
    """Records the graph's size in the counters (once: the graph is one element)."""
    for name, value in (("nodes", len(nodes.names)), ("edges", nodes.edges), ("duplicate_edges", nodes.duplicates),
                        ("nodes_without_edges", int(np.count_nonzero(nodes.degrees == 0)))):
        Metrics.counter(COUNTER_NAMESPACE, name).inc(value)
    return nodes


def start_chunks(nodes: int) -> list[tuple[int, int]]:
    """[first, last) node ranges of CHUNK_NODES nodes: the units of walk generation."""
    return [(start, min(start + CHUNK_NODES, nodes)) for start in range(0, nodes, CHUNK_NODES)]


class _LoadedGraph:
    """A graph held by `shared.Shared` (which needs an object it can reference weakly)."""

    def __init__(self, directory: str):
        self.graph = load_graph(directory)


@beam.typehints.with_input_types(tuple[int, int])
@beam.typehints.with_output_types(pa.RecordBatch)
class GenerateWalks(beam.DoFn):
    """A chunk of start nodes -> a record batch of walk documents per split (`walks_per_node` walks
    from each node; see the module docstring for the seeds).

    Args:
        config: graph settings, the seed (`model.seed`), the eval fraction and the document column.
        graph_dir: the directory `BuildGraph` wrote the graph into.
        loaded: where the worker process keeps the graph, once for every DoFn given the same handle.
        count: count walks and tokens (False for the second pass over the same walks).
    """

    def __init__(self, config: Config, graph_dir: str, loaded: shared.Shared, count: bool):
        self._graph = config.graph
        self._seed = config.model.seed
        self._eval_fraction = config.split.eval_fraction
        self._column = document_column(config)
        self._graph_dir = graph_dir
        self._loaded = loaded
        self._count = count

    def setup(self) -> None:
        directory = self._graph_dir
        self._held = self._loaded.acquire(lambda: _LoadedGraph(directory), tag=directory)

    def process(self, chunk: tuple[int, int]) -> Iterator[beam.pvalue.TaggedOutput]:
        settings, graph = self._graph, self._held.graph
        rng = np.random.default_rng([self._seed, chunk[0]])
        starts = np.tile(np.arange(*chunk), settings.walks_per_node)
        walks = random_walks(graph, starts, settings.walk_length, settings.p, settings.q, rng)
        is_eval = rng.random(len(starts)) < self._eval_fraction
        for split, rows in (("train", ~is_eval), ("eval", is_eval)):
            tokens, lengths = walk_documents(graph, walks[rows])
            if self._count:
                Metrics.counter(COUNTER_NAMESPACE, f"documents_{split}").inc(len(lengths))
                Metrics.counter(COUNTER_NAMESPACE, "walk_tokens").inc(len(tokens))
            if len(lengths):
                yield beam.pvalue.TaggedOutput(split, ragged_batch(self._column, tokens, lengths))


def node_tables(nodes: NodeDegrees, schema: pa.Schema) -> Iterator[pa.Table]:
    """The entity table of a graph's nodes: every node, its count being its (out-)degree."""
    for start in range(0, len(nodes.names), NODE_ROWS_PER_TABLE):
        rows = np.arange(start, min(start + NODE_ROWS_PER_TABLE, len(nodes.names)))
        # Copies, not slices: a pickled slice would carry every node id.
        yield pa.table([nodes.names.take(rows), pa.array(nodes.degrees[rows])], schema=schema)


class BuildGraph(beam.PTransform):
    """Typed edge rows, read twice -> the graph's files in `directory`; the output is its nodes (one
    `NodeDegrees`, its size counted). The edges go to the shards of their source nodes, where
    duplicates merge and each shard writes its file; the last step writes the nodes' file.

    Args:
        graph: the graph settings.
        directory: where the graph goes (`adjacency.save_shard`, `save_nodes`), for the walks' job to read.
        parts_dir: where the edges go on their way to their shards, or None for the runner's shuffle
            (`ToShardParts`).
        part_edges: see `ToShardParts`.
    """

    def __init__(self, graph: GraphConfig, directory: str, parts_dir: str | None, part_edges: int = PART_EDGES):
        super().__init__()
        self._graph = graph
        self._directory = directory
        self._parts_dir = parts_dir
        self._part_edges = part_edges

    def expand(self, passes: EdgePasses) -> beam.PCollection:
        names = beam.pvalue.AsSingleton(passes.nodes | "GatherNodeNames" >> beam.CombineGlobally(
            GatherNodeNames(self._graph)))
        return (passes.edges
                | "ToShardParts" >> beam.ParDo(ToShardParts(self._graph, self._parts_dir, self._part_edges), names)
                | "GroupPartsByShard" >> beam.GroupByKey()
                | "MergeAndSaveShards" >> beam.Map(merge_and_save_shard, names, self._graph.directed, self._directory)
                | "GatherShardNodes" >> beam.combiners.ToList()
                | "SaveNodes" >> beam.Map(save_nodes, names, self._directory)
                | "CountGraph" >> beam.Map(count_graph))


class WalkFromEveryNode(beam.PTransform):
    """The pipeline -> {"train", "eval": record batches of walk documents}, chunks of start nodes
    spread over the workers.

    Args:
        config: see GenerateWalks.
        graph_dir: the directory `BuildGraph` wrote the graph into.
        nodes: the graph's nodes.
        loaded: see GenerateWalks.
        count: count walks and tokens (False for a second pass over the same walks).
    """

    def __init__(self, config: Config, graph_dir: str, nodes: int, loaded: shared.Shared, count: bool):
        super().__init__()
        self._config = config
        self._graph_dir = graph_dir
        self._nodes = nodes
        self._loaded = loaded
        self._count = count

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (pipeline
                | "ChunkStartNodes" >> beam.Create(start_chunks(self._nodes))
                | "SpreadChunks" >> beam.Reshuffle()
                | "GenerateWalks" >> beam.ParDo(GenerateWalks(self._config, self._graph_dir, self._loaded,
                                                              self._count)).with_outputs("train", "eval"))


class WalkGraph(beam.PTransform):
    """The pipeline -> walk documents of the graph in `graph_dir` for both tf.Transform passes (the
    second pass walks again; each worker process reads the graph once for both).

    Args:
        config: see GenerateWalks.
        graph_dir: the directory `BuildGraph` wrote the graph into.
        nodes: the graph's nodes (`adjacency.graph_nodes`).
    """

    def __init__(self, config: Config, graph_dir: str, nodes: int):
        super().__init__()
        self._config = config
        self._graph_dir = graph_dir
        self._nodes = nodes
        self._loaded = shared.Shared()

    def expand(self, pipeline: beam.pvalue.PBegin) -> TransformInputs:
        first = pipeline | "WalkFromEveryNode" >> WalkFromEveryNode(self._config, self._graph_dir, self._nodes,
                                                                     self._loaded, count=True)
        again = pipeline | "WalkFromEveryNodeAgain" >> WalkFromEveryNode(self._config, self._graph_dir, self._nodes,
                                                                          self._loaded, count=False)
        return TransformInputs(first.train, again.train, again.eval)


class WriteNodeTables(beam.PTransform):
    """The graph's nodes (`NodeDegrees`) -> one entity table per entity (every node, its degree as count) in
    the staged run."""

    def __init__(self, config: Config, schema: RawSchema, staged: RunDir):
        super().__init__()
        self._config = config
        self._schema = schema
        self._staged = staged

    def expand(self, nodes: beam.PCollection) -> dict[str, beam.PCollection]:
        written = {}
        for entity in self._config.entities:
            schema = entity_table_schema(self._config, self._schema, entity)
            written[entity.name] = (
                nodes
                | f"NodeTables[{entity.name}]" >> beam.FlatMap(node_tables, schema)
                | f"CountNodes[{entity.name}]" >> beam.Map(_count_rows, f"entity_keys_{entity.name}")
                | f"WriteNodeTable[{entity.name}]" >> beam.io.WriteToParquetBatched(
                    fs.join(self._staged.entity_table_dir(entity.name), "part"), schema, file_name_suffix=".parquet"))
        return written


def _count_rows(table: pa.Table, counter: str) -> pa.Table:
    Metrics.counter(COUNTER_NAMESPACE, counter).inc(table.num_rows)
    return table
