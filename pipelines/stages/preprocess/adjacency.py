"""A graph in compressed sparse rows (CSR), built from edges in parts that fit one worker each, and
its files (no Beam).

Node ids are strings; a graph numbers them in sorted order (`node_names`, `node_numbers`).
`directed_edges` turns a batch of edge rows into directed edges between those numbers (an
undirected edge both ways, self-loops dropped), so a Beam job can send each to the shard of its
source node (`shard_of`: consecutive ranges of node numbers), either through a shuffle or, written
to a file (`save_edge_parts`, about 8 bytes per directed edge, 8 more with weights), as where it is
(`EdgePart`, read back by `load_edge_part`); `adjacency_shard` merges the shard's duplicates and
sorts them. A shard is saved as a file of its own (`save_shard`), the nodes' ids and
degrees as one more (`save_nodes`); `load_graph` reads them back into the CSR: 4 bytes per directed
edge, 8 per node, plus the running sum of the weights (8 bytes per directed edge) when edges are
weighted. `assemble_graph` does the same in memory, for a graph built in one process.
"""
from __future__ import annotations

import dataclasses
import io
import uuid
from typing import Iterable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import fs

# Shards are ranges of this many node numbers at least, and at most MAX_SHARDS of them.
SHARD_NODES = 4096
MAX_SHARDS = 1024


@dataclasses.dataclass(frozen=True)
class Graph:
    """A graph in compressed sparse rows: node i's out-neighbours are neighbours[offsets[i]:offsets[i + 1]].

    Attributes:
        names: node ids [nodes], sorted (a string array).
        offsets: int64 [nodes + 1].
        neighbours: int32 [directed edges], sorted within each node.
        cumulative: float64 [directed edges], the running sum of the edge weights; None when unweighted.
        edges: distinct edges (an undirected edge counts once).
        duplicates: input edges merged into an equal earlier one.
    """
    names: pa.Array
    offsets: np.ndarray
    neighbours: np.ndarray
    cumulative: np.ndarray | None
    edges: int
    duplicates: int

    @property
    def nodes(self) -> int:
        return len(self.names)

    @property
    def degrees(self) -> np.ndarray:
        """Out-degree of each node [nodes]."""
        return np.diff(self.offsets)

    def edge_keys(self) -> np.ndarray:
        """source x nodes + target of every directed edge, sorted [directed edges] (int64)."""
        sources = np.repeat(np.arange(self.nodes, dtype=np.int64), self.degrees)
        return sources * self.nodes + self.neighbours

    def sample_neighbours(self, current: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One out-neighbour of each node in `current` [walkers] (each has one), by weight if weighted."""
        start, stop = self.offsets[current], self.offsets[current + 1]
        draws = rng.random(len(current))
        if self.cumulative is None:
            return self.neighbours[start + (draws * (stop - start)).astype(np.int64)]
        before = np.where(start > 0, self.cumulative[np.maximum(start - 1, 0)], 0.0)
        points = before + draws * (self.cumulative[stop - 1] - before)
        found = np.searchsorted(self.cumulative, points, side="right")
        return self.neighbours[np.clip(found, start, stop - 1)]


@dataclasses.dataclass(frozen=True)
class NodeDegrees:
    """A graph's nodes and their out-degrees, without its edges: what its node table and counters need.

    Attributes:
        names: node ids [nodes], sorted.
        degrees: int64 [nodes].
        edges, duplicates: as in Graph.
    """
    names: pa.Array
    degrees: np.ndarray
    edges: int
    duplicates: int


def node_names(ids: Iterable[pa.Array]) -> pa.Array:
    """String arrays of node ids (nulls ignored) -> the distinct ids, sorted [nodes]."""
    chunks = [chunk.cast(pa.string()) for array in ids
              for chunk in (array.chunks if isinstance(array, pa.ChunkedArray) else [array])]
    names = pc.unique(pa.chunked_array(chunks, pa.string()).drop_null())
    return names.take(pc.sort_indices(names))


class DirectedEdges(NamedTuple):
    """Directed edges between node numbers, one per input edge and direction [edges].

    Attributes:
        sources, targets: int32 node numbers.
        weights: float64, None when unweighted.
        canonical: bool, the edge as given (an undirected edge's other direction is False); what
            counts input edges once.
    """
    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None
    canonical: np.ndarray

    def take(self, rows: np.ndarray) -> DirectedEdges:
        return DirectedEdges(self.sources[rows], self.targets[rows],
                             None if self.weights is None else self.weights[rows], self.canonical[rows])

    @staticmethod
    def concatenate(parts: list[DirectedEdges]) -> DirectedEdges:
        """The edges of every part, in order (parts all weighted or all not)."""
        return DirectedEdges(*(None if getattr(parts[0], field) is None
                               else np.concatenate([getattr(part, field) for part in parts])
                               for field in DirectedEdges._fields))


def node_numbers(names: pa.Array, ids: pa.Array) -> np.ndarray:
    """Node ids [rows] -> their numbers, int32 [rows].

    Args:
        names: `node_names` of every edge [nodes].
        ids: node ids, each one of `names`.

    Raises:
        ValueError: an id is not a node (the input changed after the ids were gathered).
    """
    numbers = pc.index_in(ids, value_set=names)
    if numbers.null_count:
        unknown = ids.filter(pc.is_null(numbers))[0]
        raise ValueError(f"node id {unknown} was not among the ids gathered from the edges: did the input "
                         f"change while the graph was built?")
    return numbers.to_numpy().astype(np.int32)


def directed_edges(names: pa.Array, sources: pa.Array, targets: pa.Array, weights: np.ndarray | None,
                   directed: bool) -> tuple[DirectedEdges, int]:
    """Edge rows (node ids, every id one of `names`) -> their directed edges and the self-loops dropped.

    Args:
        names: `node_names` of every edge [nodes].
        sources, targets: node ids [rows].
        weights: float64 [rows], None when unweighted.
        directed: an edge is source -> target only (else both ways).
    """
    source, target = node_numbers(names, sources), node_numbers(names, targets)
    kept = source != target
    loops = int(len(source) - np.count_nonzero(kept))
    source, target = source[kept], target[kept]
    weights = None if weights is None else np.asarray(weights, np.float64)[kept]
    canonical = np.ones(len(source), bool)
    if not directed:
        source, target = np.concatenate([source, target]), np.concatenate([target, source])
        weights = None if weights is None else np.concatenate([weights, weights])
        canonical = np.concatenate([canonical, np.zeros(len(canonical), bool)])
    return DirectedEdges(source, target, weights, canonical), loops


def shard_nodes(nodes: int) -> int:
    """How many consecutive node numbers one shard holds, for a graph of `nodes` nodes."""
    return max(SHARD_NODES, -(-nodes // MAX_SHARDS))


def shard_of(edges: DirectedEdges, nodes: int) -> list[tuple[int, DirectedEdges]]:
    """Directed edges [edges] -> (shard, its edges) for each shard their source nodes fall in, for a
    graph of `nodes` nodes."""
    shards = edges.sources // shard_nodes(nodes)
    order = np.argsort(shards, kind="stable")
    present, starts = np.unique(shards[order], return_index=True)
    return [(int(shard), edges.take(rows)) for shard, rows in zip(present, np.split(order, starts[1:]))]


@dataclasses.dataclass(frozen=True)
class ShardNodes:
    """What a shard knows of its nodes: nodes first .. first + len(degrees) - 1.

    Attributes:
        first: the shard's first node number.
        degrees: int64 [shard nodes], out-degrees.
        edges: distinct edges (an undirected edge counts once: in the shard of its smaller node number).
        rows: input edges (canonical directed edges before merging).
    """
    first: int
    degrees: np.ndarray
    edges: int
    rows: int


@dataclasses.dataclass(frozen=True)
class AdjacencyShard:
    """A shard's out-edges, each edge once, sorted by (source, target).

    Attributes:
        nodes: the shard's nodes.
        neighbours: int32 [shard's directed edges].
        weights: float64 [shard's directed edges], summed over duplicates; None when unweighted.
    """
    nodes: ShardNodes
    neighbours: np.ndarray
    weights: np.ndarray | None


def adjacency_shard(shard: int, parts: Iterable[DirectedEdges], nodes: int, directed: bool) -> AdjacencyShard:
    """A shard's directed edges (from any number of batches) -> its adjacency, duplicates merged.

    Both directions of an undirected edge, given as (a, b) or as (b, a), land in the shards of their
    sources and merge there; the edge is counted once, by its direction from the smaller number.

    Args:
        shard: the shard's number (`shard_of`).
        parts: the shard's directed edges, in any number of parts.
        nodes: the graph's nodes.
        directed: whether the graph is (how its edges are counted).
    """
    edges = DirectedEdges.concatenate(list(parts))
    width = shard_nodes(nodes)
    first = shard * width
    keys = (edges.sources.astype(np.int64) - first) * nodes + edges.targets
    weights = None
    if edges.weights is None:
        distinct = np.unique(keys)
    else:
        distinct, inverse = np.unique(keys, return_inverse=True)
        weights = np.bincount(inverse, weights=edges.weights, minlength=len(distinct))
    del keys
    local, neighbours = distinct // nodes, (distinct % nodes).astype(np.int32)
    counted = len(distinct) if directed else int(np.count_nonzero(local + first < neighbours))
    return AdjacencyShard(ShardNodes(first=first, degrees=np.bincount(local, minlength=min(width, nodes - first)),
                                     edges=counted, rows=int(np.count_nonzero(edges.canonical))),
                          neighbours=neighbours, weights=weights)


def node_degrees(names: pa.Array, shards: Iterable[ShardNodes]) -> NodeDegrees:
    """The nodes of every shard (in any order; nodes in no shard have no out-edges) -> the graph's nodes."""
    degrees = np.zeros(len(names), np.int64)
    edges = rows = 0
    for shard in shards:
        degrees[shard.first:shard.first + len(shard.degrees)] = shard.degrees
        edges, rows = edges + shard.edges, rows + shard.rows
    return NodeDegrees(names, degrees, edges, rows - edges)


def _offsets(degrees: np.ndarray) -> np.ndarray:
    """Out-degrees [nodes] -> CSR offsets, int64 [nodes + 1]."""
    return np.concatenate([[0], np.cumsum(degrees)]).astype(np.int64)


def assemble_graph(names: pa.Array, shards: Iterable[AdjacencyShard]) -> Graph:
    """The shards of a graph (in any order) -> its CSR."""
    shards = sorted(shards, key=lambda shard: shard.nodes.first)
    nodes = node_degrees(names, [shard.nodes for shard in shards])
    weighted = bool(shards) and shards[0].weights is not None
    return Graph(names=names, offsets=_offsets(nodes.degrees),
                 neighbours=np.concatenate([shard.neighbours for shard in shards] or [np.zeros(0, np.int32)]),
                 cumulative=np.cumsum(np.concatenate([shard.weights for shard in shards])) if weighted else None,
                 edges=nodes.edges, duplicates=nodes.duplicates)


def graph_from_edges(sources: pa.Array, targets: pa.Array, weights: np.ndarray | None, directed: bool) -> Graph:
    """Edge rows -> their graph, in one process (the Beam job does the same in parts)."""
    names = node_names([sources, targets])
    edges, _ = directed_edges(names, sources, targets, weights, directed)
    return assemble_graph(names, [adjacency_shard(shard, [part], len(names), directed)
                                  for shard, part in shard_of(edges, len(names))])


# A graph's files, in one directory (any file system): the nodes, and one file per shard with edges.
NODES_FILE = "nodes.npz"


def _shard_file(directory: str, first: int) -> str:
    return fs.join(directory, f"shard-{first:012d}.npz")   # zero-padded: names sort in node order


def _write_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    fs.makedirs(fs.dirname(path))
    with fs.open(path, "wb") as out:
        out.write(buffer.getbuffer())


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    with fs.open(path, "rb") as file:
        archive = np.load(io.BytesIO(file.read()))
        return {name: archive[name] for name in archive.files}


class EdgePart(NamedTuple):
    """Where some of a shard's directed edges were written: `length` bytes of the file `path` from
    byte `start`, an Arrow IPC stream of one record batch."""
    path: str
    start: int
    length: int


def _edge_batch(edges: DirectedEdges) -> pa.RecordBatch:
    """A column per field of `edges` (weights only when weighted)."""
    columns = {name: values for name, values in edges._asdict().items() if values is not None}
    return pa.record_batch(list(columns.values()), names=list(columns))


def save_edge_parts(shards: dict[int, DirectedEdges], directory: str) -> list[tuple[int, EdgePart]]:
    """Writes directed edges bound for several shards into `directory` as one file, one shard after
    another (as a sort-based shuffle writes a file per map task, each reducer reading its range);
    returns where each shard's edges are. The file's name is new each time: a retried bundle writes a
    new file, and only the parts it returns are read."""
    path = fs.join(directory, f"edges-{uuid.uuid4().hex}.arrows")
    fs.makedirs(directory)
    written, start = [], 0
    with fs.open(path, "wb") as out:
        for shard, edges in sorted(shards.items()):
            batch = _edge_batch(edges)
            segment = pa.BufferOutputStream()
            with pa.ipc.new_stream(segment, batch.schema) as writer:
                writer.write_batch(batch)
            data = segment.getvalue().to_pybytes()   # bytes: what every file system's writer takes
            out.write(data)
            written.append((shard, EdgePart(path, start, len(data))))
            start += len(data)
    return written


def load_edge_part(part: EdgePart) -> DirectedEdges:
    """The directed edges `save_edge_parts` wrote to `part` (only its range of the file is read)."""
    batch = pa.ipc.open_stream(fs.read_range(part.path, part.start, part.length)).read_next_batch()
    columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
    return DirectedEdges(**{field: columns.get(field) for field in DirectedEdges._fields})


def save_shard(shard: AdjacencyShard, directory: str) -> ShardNodes:
    """Writes a shard's edges into the graph's `directory`; returns its nodes (what `save_nodes` needs)."""
    arrays = {"neighbours": shard.neighbours, **({} if shard.weights is None else {"weights": shard.weights})}
    _write_arrays(_shard_file(directory, shard.nodes.first), arrays)
    return shard.nodes


def save_nodes(shards: Iterable[ShardNodes], names: pa.Array, directory: str) -> NodeDegrees:
    """Every shard's nodes and the node ids -> the graph's nodes (ids as an Arrow IPC stream,
    degrees), written into its `directory` once every shard is saved; returns them."""
    nodes = node_degrees(names, shards)
    stream = pa.BufferOutputStream()
    with pa.ipc.new_stream(stream, pa.schema([("name", pa.string())])) as writer:
        writer.write_batch(pa.record_batch([names], names=["name"]))
    _write_arrays(fs.join(directory, NODES_FILE), {
        "names": np.frombuffer(stream.getvalue(), np.uint8), "degrees": nodes.degrees,
        "counts": np.array([nodes.edges, nodes.duplicates], np.int64)})
    return nodes


def graph_nodes(directory: str) -> int:
    """How many nodes the graph saved into `directory` has."""
    return len(_read_arrays(fs.join(directory, NODES_FILE))["degrees"])


def load_graph(directory: str) -> Graph:
    """The graph whose nodes and shards were saved into `directory`, read one shard at a time into
    arrays of the graph's size (no more than one shard beside the graph).

    Raises:
        ValueError: the shards do not hold the edges the nodes' degrees count.
    """
    arrays = _read_arrays(fs.join(directory, NODES_FILE))
    names = pa.ipc.open_stream(arrays["names"].tobytes()).read_all().column(0).combine_chunks()
    edges, duplicates = (int(count) for count in arrays["counts"])
    offsets = _offsets(arrays["degrees"])
    neighbours, cumulative = np.empty(offsets[-1], np.int32), None
    mismatch = f"the graph's shards in {directory} do not hold the {offsets[-1]} edges its nodes' degrees count"
    filled = 0
    for path in sorted(fs.glob(fs.join(directory, "shard-*.npz"))):
        shard = _read_arrays(path)
        end = filled + len(shard["neighbours"])
        if end > len(neighbours):
            raise ValueError(mismatch)
        neighbours[filled:end] = shard["neighbours"]
        if "weights" in shard:
            cumulative = np.empty(len(neighbours)) if cumulative is None else cumulative
            cumulative[filled:end] = shard["weights"]
        filled = end
    if filled != len(neighbours):
        raise ValueError(mismatch)
    if cumulative is not None:
        np.cumsum(cumulative, out=cumulative)
    return Graph(names=names, offsets=offsets, neighbours=neighbours, cumulative=cumulative, edges=edges,
                 duplicates=duplicates)
