"""item2vec on MovieLens: embedpipe's sequences + skip-gram beside gensim Word2Vec and the two-tower model.

Leave-last-out: each user's newest rating is the test target, every other rating trains. The
sessions are built as examples/movielens_sequences.yaml says (each user's ratings by time, ties by
movie id, cut where ratings are more than `max_gap` apart, at least `min_length` long); gensim
trains on the same sessions with the same settings (skip-gram, dim, window, negatives,
subsampling, epochs, min count = frequency_threshold; 2 worker threads). Both are scored from their
vectors the same way (embedpipe's from the published Parquet): the query is the mean of the
user's training movies' unit vectors, or the last one's; every movie with a vector that the user
has not rated is ranked by cosine; HR@10 counts the users whose target is in the top 10 (a target
without a vector is a miss). The two-tower (examples/movielens.yaml, run here too) is scored by
its own evaluation (metrics.json: every training movie ranked) and, from its Parquet, by
dot(user vector, movie vector) over the same candidates as above.
Both item2vec models train with 3 seeds (1 standard error of one HR@10 here is about 0.011): the
table shows the mean HR@10 and the range. Throughput: training words (in-vocabulary tokens) x
epochs / training seconds, the best of the 3 trainings of each (embedpipe's including graph
tracing, per-epoch dataset construction and saving).

    python benchmarks/item2vec.py [--out benchmarks/out/item2vec] [--skip-two-tower]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np
import pandas as pd
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.movielens import write_movielens  # noqa: E402
K = 10
SEEDS = (1, 2, 3)


def training_sessions(train: pd.DataFrame, max_gap: float | None, min_length: int) -> list[list[str]]:
    """Each user's training ratings ordered as embedpipe orders them (time, then movie id as text),
    cut by embedpipe's own rule (`sequences.sessions`)."""
    from pipelines.stages.preprocess.sequences import sessions
    ordered = train.assign(item=train.movieId.astype(str)).sort_values(["userId", "timestamp", "item"])
    found = []
    for _, group in ordered.groupby("userId", sort=False):
        found += sessions(list(zip(group.timestamp.astype(float), group.item)), max_gap, min_length)[0]
    return found


def hit_rates(keys: list[str], vectors: np.ndarray, train: pd.DataFrame, test: pd.DataFrame,
              queries: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """HR@K over every user: "mean" and "last" queries from the user's training movies (unit vectors,
    cosine), or with `queries` (user -> vector) the dot product with them.

    Args:
        keys: movie ids [movies] with vectors [movies, dim].
        train, test: training ratings and each user's held-out newest rating.
        queries: user vectors by user id (the two-tower's), scored instead of the history queries.
    """
    row = {key: i for i, key in enumerate(keys)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    targets = dict(zip(test.userId.astype(str), test.movieId.astype(str)))
    ordered = train.sort_values(["userId", "timestamp"], kind="stable")
    hits = {"mean": 0, "last": 0} if queries is None else {"dot": 0}
    users = 0
    for user, group in ordered.groupby("userId", sort=False):
        users += 1
        history = [row[m] for m in group.movieId.astype(str) if m in row]
        target = row.get(targets.get(str(user)))
        if target is None or not history:
            continue
        if queries is None:
            asked = {"mean": unit[history].mean(axis=0), "last": unit[history[-1]]}
            candidates = unit
        else:
            asked, candidates = {"dot": queries[str(user)]}, vectors
        for name, query in asked.items():
            scores = candidates @ query
            scores[history] = -np.inf
            hits[name] += int(np.sum(scores > scores[target]) < K)
    return {name: count / users for name, count in hits.items()}


def gensim_rows(documents: list[list[str]], settings: dict, train: pd.DataFrame, test: pd.DataFrame) -> list[dict]:
    from gensim.models import Word2Vec
    model = settings["model"]
    rows = []
    for seed in SEEDS:
        net = Word2Vec(vector_size=model["embedding_dim"], window=model["window"], negative=model["negatives"],
                       sample=model["subsample"], min_count=settings["features"]["movieId"]["frequency_threshold"],
                       sg=1, workers=2, seed=seed)
        net.build_vocab(documents)
        started = time.perf_counter()
        net.train(documents, total_examples=len(documents), epochs=model["epochs"])
        seconds = time.perf_counter() - started
        words = sum(net.wv.get_vecattr(w, "count") for w in net.wv.index_to_key)
        rows.append({"seconds": seconds, "words_per_second": words * model["epochs"] / seconds,
                     "vocabulary": len(net.wv), **hit_rates(list(net.wv.index_to_key), net.wv.vectors, train, test)})
    return rows


def embedpipe_rows(settings: dict, train: pd.DataFrame, test: pd.DataFrame, out: pathlib.Path) -> list[dict]:
    rows = []
    for seed in SEEDS:
        settings["model"]["seed"] = seed
        run = run_embedpipe(settings, f"item2vec-{seed}", out)
        metrics = json.loads((run / "metrics.json").read_text())
        keys, vectors = parquet_vectors(run, "movie")
        rows.append({"seconds": metrics["fit_seconds"], "words_per_second": metrics["words_per_second"],
                     "vocabulary": metrics["vocabulary"], **hit_rates(keys, vectors, train, test)})
    return rows


def summary(rows: list[dict]) -> dict:
    """Mean and range of the hit rates, the fastest training."""
    fastest = min(rows, key=lambda row: row["seconds"])
    return {"vocabulary": rows[0]["vocabulary"], "seconds": fastest["seconds"],
            "words_per_second": fastest["words_per_second"],
            **{name: (float(np.mean([r[name] for r in rows])), min(r[name] for r in rows), max(r[name] for r in rows))
               for name in ("mean", "last")}}


def run_embedpipe(config: dict, name: str, out: pathlib.Path) -> pathlib.Path:
    from pipelines import cli
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    run_id = time.strftime("%Y%m%dT%H%M%S")
    if cli.main(["run", str(path), "--output", str(out / name), "--run-id", run_id]) != 0:
        raise SystemExit(f"embedpipe run of {name} failed")
    return out / name / run_id


def parquet_vectors(run: pathlib.Path, entity: str) -> tuple[list[str], np.ndarray]:
    table = pd.read_parquet(run / "embeddings" / entity)
    return table.key.tolist(), np.stack(table.embedding.to_numpy()).astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "item2vec")
    parser.add_argument("--skip-two-tower", action="store_true", help="only item2vec and gensim")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    frame, data = write_movielens(args.out)
    train, test = frame[frame.is_last == 0], frame[frame.is_last == 1]
    settings = yaml.safe_load((ROOT / "examples" / "movielens_sequences.yaml").read_text())
    settings["input"]["path"] = str(data)
    sequences = settings["sequences"]
    documents = training_sessions(train, sequences.get("max_gap"), sequences.get("min_length", 2))

    rows = {"gensim Word2Vec (2 workers)": summary(gensim_rows(documents, settings, train, test)),
            "embedpipe sequences + skip-gram": summary(embedpipe_rows(settings, train, test, args.out))}
    if not args.skip_two_tower:
        two_tower = yaml.safe_load((ROOT / "examples" / "movielens.yaml").read_text())
        two_tower["input"]["path"] = str(data)
        run = run_embedpipe(two_tower, "two_tower", args.out)
        metrics = json.loads((run / "metrics.json").read_text())
        movies, movie_vectors = parquet_vectors(run, "movie")
        users, user_vectors = parquet_vectors(run, "user")
        scored = hit_rates(movies, movie_vectors, train, test, dict(zip(users, user_vectors)))
        rows["embedpipe two-tower (examples/movielens.yaml)"] = {
            "seconds": metrics["fit_seconds"], "vocabulary": len(movies), "dot": scored["dot"],
            "own": metrics["hr@10"]}

    model = settings["model"]
    print(f"\nItem2vec on MovieLens, leave-last-out ({frame.userId.nunique()} users, {len(documents)} training "
          f"sessions; dim {model['embedding_dim']}, window {model['window']}, {model['negatives']} negatives, "
          f"subsample {model['subsample']}, {model['epochs']} epochs, min count "
          f"{settings['features']['movieId']['frequency_threshold']})")
    print("| model | movies with vectors | HR@10, mean of history (range) | HR@10, last item (range) | train seconds | "
          "words/s |\n| --- | --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        if "dot" in row:
            print(f"| {name} | {row['vocabulary']} | {row['dot']:.4f} (user vector; its own evaluation "
                  f"{row['own']:.4f}) | | {row['seconds']:.1f} | |")
        else:
            cells = [f"{row[n][0]:.4f} ({row[n][1]:.4f}-{row[n][2]:.4f})" for n in ("mean", "last")]
            print(f"| {name} | {row['vocabulary']} | {cells[0]} | {cells[1]} | {row['seconds']:.1f} | "
                  f"{row['words_per_second']:,.0f} |")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
