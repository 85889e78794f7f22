"""Random walks over a graph in compressed sparse rows (`adjacency.Graph`), vectorised with NumPy (no Beam).

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

import numpy as np
import pyarrow as pa

from pipelines.stages.preprocess.adjacency import Graph


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
