"""A graph as compressed sparse rows, and random walks over it, vectorised with NumPy (no Beam).

`build_graph` turns a table of distinct edges into CSR: node ids sorted, each node's neighbours
sorted, 4 bytes per directed edge (an undirected edge is stored in both directions), 8 per node,
plus the running sum of the weights (8 bytes per directed edge) when edges are weighted.

`random_walks` moves a whole batch of walkers one step at a time:
- uniform (DeepWalk): a neighbour by one uniform draw; weighted: by a binary search of a uniform
  draw in the node's running weight sum;
- node2vec (p, q != 1): second-order steps by rejection sampling (KnightKing's method): draw a
  neighbour x of the current node v as above, accept it with probability bias(x) / max bias, where
  bias is 1/p when x is the previous node t, 1 when x is a neighbour of t, and 1/q otherwise. The
  accepted x is distributed exactly as node2vec's transition (weight x bias). Each trial costs a
  binary search for the edge (t, x) among the sorted edge keys (8 more bytes per directed edge);
  the expected number of trials per step is at most max(1, 1/p, 1/q) / min(1, 1/p, 1/q). No
  per-edge transition table is precomputed (node2vec's alias tables need memory per pair of
  adjacent edges: sum of squared degrees).
A walk ends early at a node without out-edges (only possible in a directed graph, or at an isolated node).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Distinct edges: node ids, the weight (summed over merged duplicates), the input rows merged into it.
EDGE_SCHEMA = pa.schema([("source", pa.string()), ("target", pa.string()), ("weight", pa.float64()),
                         ("rows", pa.int64())])


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


def merge_edges(tables: list[pa.Table]) -> pa.Table:
    """Edge tables (source, target, weight, rows) -> one table with each edge once: weights add up,
    `rows` counts the input edges merged into it.

    Edges are told apart by NumPy on integer keys (node index pairs), not by Arrow's group_by on
    two string columns, which needed about five times the memory.
    """
    table = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
    ends = [table.column(name).combine_chunks() for name in ("source", "target")]
    names = pc.unique(pa.concat_arrays(ends).drop_null())
    sources, targets = (pc.fill_null(pc.index_in(end, value_set=names), -1).to_numpy().astype(np.int64) for end in ends)
    keys = sources * (len(names) + 1) + targets + 1   # a null target (a node alone) is -1
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    sums = [np.bincount(inverse, weights=table.column(name).to_numpy(), minlength=len(distinct))
            for name in ("weight", "rows")]
    kept = [end.take(pa.array(first)) for end in ends]
    return pa.table(kept + [pa.array(sums[0]), pa.array(sums[1].astype(np.int64))], schema=EDGE_SCHEMA)


def build_graph(edges: pa.Table, directed: bool, weighted: bool) -> Graph:
    """Distinct edges (`merge_edges`; undirected edges with source <= target) -> CSR.

    Args:
        edges: columns source, target (strings; a null target: the source is a node without that
            edge, e.g. of a dropped self-loop), weight (float64), rows (int64).
        directed: store each edge as source -> target only (else both ways).
        weighted: keep the weights (else every edge weighs the same).
    """
    names = pc.unique(pa.chunked_array(edges.column("source").chunks + edges.column("target").chunks,
                                       pa.string()).drop_null())
    names = names.take(pc.sort_indices(names))
    edges = edges.filter(pc.is_valid(edges.column("target")))
    sources, targets = (pc.index_in(edges.column(end), value_set=names).to_numpy().astype(np.int32)
                        for end in ("source", "target"))
    weights = edges.column("weight").to_numpy() if weighted else None
    if not directed:
        sources, targets = np.concatenate([sources, targets]), np.concatenate([targets, sources])
        weights = None if weights is None else np.concatenate([weights, weights])
    order = np.lexsort((targets, sources))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(sources, minlength=len(names)))]).astype(np.int64)
    rows = int(pc.sum(edges.column("rows")).as_py() or 0)
    return Graph(names=names, offsets=offsets, neighbours=targets[order],
                 cumulative=None if weights is None else np.cumsum(weights[order]), edges=edges.num_rows,
                 duplicates=rows - edges.num_rows)


def random_walks(graph: Graph, starts: np.ndarray, length: int, p: float, q: float,
                 rng: np.random.Generator) -> np.ndarray:
    """One walk from each start node.

    Args:
        graph: the graph.
        starts: node indices [walks].
        length: nodes per walk, the start included.
        p, q: node2vec's return and in-out parameters (1, 1: uniform, DeepWalk).
        rng: the source of every draw (the walks are a function of its seed).

    Returns:
        Node indices [walks, length] (int64), -1 after a walk ended at a node without out-edges.
    """
    walks = np.full((len(starts), length), -1, np.int64)
    walks[:, 0] = starts
    walkers = np.arange(len(starts))
    keys = graph.edge_keys() if (p, q) != (1.0, 1.0) else None
    for step in range(1, length):
        current = walks[walkers, step - 1]
        moving = graph.degrees[current] > 0
        walkers, current = walkers[moving], current[moving]
        if not len(walkers):
            break
        if keys is None or step == 1:
            walks[walkers, step] = graph.sample_neighbours(current, rng)
        else:
            walks[walkers, step] = _biased_step(graph, keys, walks[walkers, step - 2], current, p, q, rng)
    return walks


def _biased_step(graph: Graph, keys: np.ndarray, previous: np.ndarray, current: np.ndarray, p: float, q: float,
                 rng: np.random.Generator) -> np.ndarray:
    """node2vec's next nodes [walkers] by rejection sampling (see the module docstring)."""
    upper = max(1.0, 1.0 / p, 1.0 / q)
    chosen = np.empty(len(current), np.int64)
    pending = np.arange(len(current))
    while len(pending):
        candidates = graph.sample_neighbours(current[pending], rng)
        back = previous[pending]
        wanted = back * graph.nodes + candidates
        found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        bias = np.where(candidates == back, 1.0 / p, np.where(keys[found] == wanted, 1.0, 1.0 / q))
        accepted = rng.random(len(pending)) * upper < bias
        chosen[pending[accepted]] = candidates[accepted]
        pending = pending[~accepted]
    return chosen


def walk_documents(graph: Graph, walks: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Walks [walks, length] -> their node ids concatenated [tokens] and each walk's length [walks]."""
    present = walks >= 0
    return graph.names.take(pa.array(walks[present])), present.sum(axis=1)
