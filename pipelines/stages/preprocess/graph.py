"""Edge rows -> a graph -> random walks as token documents (DeepWalk, node2vec), and the node table.

How the work is spread:
- each batch of edge rows is reduced to its distinct edges (self-loops dropped and counted,
  duplicates merged), in parallel, and the combine's partial step merges a bundle's batches;
- `MergeIntoGraph` combines those into one CSR graph (`walks.build_graph`). The graph is then a side
  input: every worker holds it, so it must fit one worker's memory (4 bytes per directed edge, 8
  per node and the node ids; 8 more per directed edge for weights, 8 more for node2vec). The
  walks, walks_per_node x walk_length tokens per node and by far the larger data, never have to:
- walks start from chunks of `CHUNK_NODES` nodes, spread over the workers (`Reshuffle`), and stream
  out as record batches of documents. Every draw of a chunk comes from a generator seeded by
  (model.seed, the chunk's first node), so the walks do not depend on the runner, and both
  tf.Transform passes can generate them again instead of holding them (see TransformInputs).
Each walk goes to the eval split with probability `split.eval_fraction` (a draw of the same seed).
Self-loops are dropped (a step that stays put adds no context); an edge given more than once is
kept once, with the sum of its weights. Both are counted in the manifest, not written to invalid/:
the rows are valid. Nodes without out-edges (isolated, or sinks of a directed graph) are counted;
their walks are the node alone.
"""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from pipelines.core import fs
from pipelines.core.beam_runner import COUNTER_NAMESPACE
from pipelines.core.config import Config, GraphConfig
from pipelines.core.rundir import RunDir
from pipelines.stages.preprocess.documents import TransformInputs, document_column, ragged_batch
from pipelines.stages.preprocess.entities import entity_table_schema
from pipelines.stages.preprocess.schema import RawSchema
from pipelines.stages.preprocess.walks import EDGE_SCHEMA, Graph, build_graph, merge_edges, random_walks, walk_documents

CHUNK_NODES = 1024
NODE_ROWS_PER_TABLE = 65536
GRAPH_COUNTERS = ("nodes", "edges", "self_loops", "duplicate_edges", "nodes_without_edges", "walk_tokens",
                  "documents_train", "documents_eval")


@beam.typehints.with_input_types(pa.RecordBatch)
@beam.typehints.with_output_types(pa.Table)
class ToEdgeTable(beam.DoFn):
    """Typed edge rows -> their distinct edges (source, target, weight, rows). An undirected edge is
    written with source <= target, so both spellings merge; a self-loop is counted and becomes its
    node alone (target null), so a node whose only edge is a self-loop is still a node."""

    def __init__(self, graph: GraphConfig):
        self._graph = graph

    def setup(self) -> None:
        self._self_loops = Metrics.counter(COUNTER_NAMESPACE, "self_loops")

    def process(self, batch: pa.RecordBatch) -> Iterator[pa.Table]:
        graph = self._graph
        source, target = batch.column(graph.source), batch.column(graph.target)
        if not graph.directed:
            first = pc.less_equal(source, target)
            source, target = pc.if_else(first, source, target), pc.if_else(first, target, source)
        loops = pc.equal(source, target)
        self._self_loops.inc(pc.sum(loops).as_py() or 0)
        target = pc.if_else(loops, pa.scalar(None, pa.string()), target)
        weight = batch.column(graph.weight).cast(pa.float64()) if graph.weight else pa.array(np.ones(len(source)))
        rows = pa.array(np.ones(len(source), np.int64))
        if len(source):
            yield merge_edges([pa.table([source, target, weight, rows], schema=EDGE_SCHEMA)])


class MergeIntoGraph(beam.CombineFn):
    """Edge tables -> one `Graph`. Partial results are merged edge tables, so what crosses the
    shuffle shrinks with duplicates; the last step builds the CSR."""

    def __init__(self, graph: GraphConfig):
        self._graph = graph

    def create_accumulator(self) -> list[pa.Table]:
        return []

    def add_input(self, accumulator: list[pa.Table], table: pa.Table) -> list[pa.Table]:
        accumulator.append(table)
        return accumulator

    def merge_accumulators(self, accumulators) -> list[pa.Table]:
        return [table for accumulator in accumulators for table in accumulator]

    def compact(self, accumulator: list[pa.Table]) -> list[pa.Table]:
        return [merge_edges(accumulator)] if len(accumulator) > 1 else accumulator

    def extract_output(self, accumulator: list[pa.Table]) -> Graph:
        edges = self.compact(accumulator)[0] if accumulator else EDGE_SCHEMA.empty_table()
        return build_graph(edges, self._graph.directed, self._graph.weight is not None)


def count_graph(graph: Graph) -> Graph:
    """Records the graph's size in the counters (once: the graph is one element)."""
    for name, value in (("nodes", graph.nodes), ("edges", graph.edges), ("duplicate_edges", graph.duplicates),
                        ("nodes_without_edges", int(np.sum(graph.degrees == 0)))):
        Metrics.counter(COUNTER_NAMESPACE, name).inc(value)
    return graph


def start_chunks(graph: Graph) -> list[tuple[int, int]]:
    """[first, last) node ranges of CHUNK_NODES nodes: the units of walk generation."""
    return [(start, min(start + CHUNK_NODES, graph.nodes)) for start in range(0, graph.nodes, CHUNK_NODES)]


@beam.typehints.with_input_types(tuple[int, int], Graph)
@beam.typehints.with_output_types(pa.RecordBatch)
class GenerateWalks(beam.DoFn):
    """A chunk of start nodes -> a record batch of walk documents per split (`walks_per_node` walks
    from each node; see the module docstring for the seeds).

    Args:
        config: graph settings, the seed (`model.seed`), the eval fraction and the document column.
        count: count walks and tokens (False for the second pass over the same walks).
    """

    def __init__(self, config: Config, count: bool):
        self._graph = config.graph
        self._seed = config.model.seed
        self._eval_fraction = config.split.eval_fraction
        self._column = document_column(config)
        self._count = count

    def process(self, chunk: tuple[int, int], graph: Graph) -> Iterator[beam.pvalue.TaggedOutput]:
        settings = self._graph
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


def node_tables(graph: Graph, schema: pa.Schema) -> Iterator[pa.Table]:
    """The entity table of a graph's nodes: every node, its count being its (out-)degree."""
    degrees = graph.degrees.astype(np.int64)
    for start in range(0, graph.nodes, NODE_ROWS_PER_TABLE):
        rows = np.arange(start, min(start + NODE_ROWS_PER_TABLE, graph.nodes))
        # Copies, not slices: a pickled slice would carry every node id.
        yield pa.table([graph.names.take(rows), pa.array(degrees[rows])], schema=schema)


class BuildGraph(beam.PTransform):
    """Typed edge rows -> the graph, one element (its size counted)."""

    def __init__(self, graph: GraphConfig):
        super().__init__()
        self._graph = graph

    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        return (edges
                | "ToEdgeTables" >> beam.ParDo(ToEdgeTable(self._graph))
                | "MergeIntoGraph" >> beam.CombineGlobally(MergeIntoGraph(self._graph))
                | "CountGraph" >> beam.Map(count_graph))


class WalkFromEveryNode(beam.PTransform):
    """The graph -> {"train", "eval": record batches of walk documents}, chunks of start nodes spread
    over the workers.

    Args:
        config: see GenerateWalks.
        count: count walks and tokens (False for a second pass over the same walks).
    """

    def __init__(self, config: Config, count: bool):
        super().__init__()
        self._config = config
        self._count = count

    def expand(self, graph: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (graph
                | "ChunkStartNodes" >> beam.FlatMap(start_chunks)
                | "SpreadChunks" >> beam.Reshuffle()
                | "GenerateWalks" >> beam.ParDo(GenerateWalks(self._config, self._count),
                                                beam.pvalue.AsSingleton(graph)).with_outputs("train", "eval"))


class WalkGraph(beam.PTransform):
    """The graph -> walk documents for both tf.Transform passes (the second pass walks again)."""

    def __init__(self, config: Config):
        super().__init__()
        self._config = config

    def expand(self, graph: beam.PCollection) -> TransformInputs:
        first = graph | "WalkFromEveryNode" >> WalkFromEveryNode(self._config, count=True)
        again = graph | "WalkFromEveryNodeAgain" >> WalkFromEveryNode(self._config, count=False)
        return TransformInputs(first.train, again.train, again.eval)


class WriteNodeTables(beam.PTransform):
    """The graph -> one entity table per entity (every node, its degree as count) in the staged run."""

    def __init__(self, config: Config, schema: RawSchema, staged: RunDir):
        super().__init__()
        self._config = config
        self._schema = schema
        self._staged = staged

    def expand(self, graph: beam.PCollection) -> dict[str, beam.PCollection]:
        written = {}
        for entity in self._config.entities:
            schema = entity_table_schema(self._config, self._schema, entity)
            written[entity.name] = (
                graph
                | f"NodeTables[{entity.name}]" >> beam.FlatMap(node_tables, schema)
                | f"CountNodes[{entity.name}]" >> beam.Map(_count_rows, f"entity_keys_{entity.name}")
                | f"WriteNodeTable[{entity.name}]" >> beam.io.WriteToParquetBatched(
                    fs.join(self._staged.entity_table_dir(entity.name), "part"), schema, file_name_suffix=".parquet"))
        return written


def _count_rows(table: pa.Table, counter: str) -> pa.Table:
    Metrics.counter(COUNTER_NAMESPACE, counter).inc(table.num_rows)
    return table
