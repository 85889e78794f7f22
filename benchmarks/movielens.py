"""MovieLens temporal leave-last-out: embedpipe's two-tower beside popularity and implicit ALS.

Each user's newest rating is held out, every other rating trains; every movie seen in training
that the user has not rated is ranked. ALS (the `implicit` package, 64 factors) is tuned on a
validation holdout (each user's second-newest rating) before it is scored on the test holdout.

    python benchmarks/movielens.py [--config examples/movielens.yaml] [--out benchmarks/out/movielens]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import sys
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
K = 10


def rank_metrics(scores: np.ndarray, train: sp.csr_matrix, users: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """HR@K and NDCG@K; scores [users, items], the user's training items excluded from the ranking."""
    scores = scores.copy()
    for row, user in enumerate(users):
        scores[row, train.indices[train.indptr[user]:train.indptr[user + 1]]] = -np.inf
    target_scores = scores[np.arange(len(users)), targets]
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    hits = ranks < K
    return float(hits.mean()), float(np.where(hits, 1 / np.log2(ranks + 2), 0).mean())


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return frame[frame.is_last == 0], frame[frame.is_last == 1]


def als_scores(train: sp.csr_matrix, factors: int, regularization: float, alpha: float, iterations: int) -> np.ndarray:
    from implicit.als import AlternatingLeastSquares
    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                    iterations=iterations, random_state=0, calculate_training_loss=False)
    model.fit(train, show_progress=False)
    return np.asarray(model.user_factors) @ np.asarray(model.item_factors).T


def baselines(frame: pd.DataFrame) -> dict[str, dict]:
    """Popularity and tuned ALS on the same split, items limited to those seen in training."""
    train, test = split(frame)
    items = {m: i for i, m in enumerate(sorted(train.movieId.unique()))}
    users = {u: i for i, u in enumerate(sorted(frame.userId.unique()))}
    test = test[test.movieId.isin(items)]   # a held-out movie never seen in training is a miss for everyone
    misses = frame.userId.nunique() - len(test)

    def matrix(rows: pd.DataFrame) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(len(rows)), (rows.userId.map(users), rows.movieId.map(items))),
                             shape=(len(users), len(items)))

    def scored(scores: np.ndarray, train_matrix: sp.csr_matrix, holdout: pd.DataFrame, total: int) -> tuple:
        user_rows = holdout.userId.map(users).to_numpy()
        hr, ndcg = rank_metrics(scores[user_rows], train_matrix, user_rows, holdout.movieId.map(items).to_numpy())
        return hr * len(holdout) / total, ndcg * len(holdout) / total

    total = frame.userId.nunique()
    train_matrix = matrix(train)
    results = {}
    started = time.time()
    popularity = np.asarray(train_matrix.sum(axis=0)).ravel().astype(np.float64)
    hr, ndcg = scored(np.tile(popularity, (len(users), 1)), train_matrix, test, total)
    results["popularity"] = {"hr@10": hr, "ndcg@10": ndcg, "seconds": time.time() - started}

    # tune ALS on each user's second-newest training rating
    ordered = train.sort_values(["userId", "timestamp"], kind="stable")
    validation = ordered.groupby("userId").tail(1)
    fit_rows = train.drop(validation.index)
    fit_matrix = matrix(fit_rows)
    validation = validation[validation.movieId.isin(set(fit_rows.movieId))]
    best, best_hr = None, -1.0
    for regularization, alpha in itertools.product((0.01, 0.1, 1.0), (1.0, 10.0, 40.0)):
        hr, _ = scored(als_scores(fit_matrix, 64, regularization, alpha, 15), fit_matrix, validation, total)
        if hr > best_hr:
            best, best_hr = (regularization, alpha), hr
    started = time.time()
    hr, ndcg = scored(als_scores(train_matrix, 64, best[0], best[1], 15), train_matrix, test, total)
    results["implicit ALS (64 factors, tuned)"] = {"hr@10": hr, "ndcg@10": ndcg, "seconds": time.time() - started,
                                                   "params": {"regularization": best[0], "alpha": best[1]}}
    results["_misses"] = misses
    return results


def run_embedpipe(config: pathlib.Path, data: pathlib.Path, out: pathlib.Path) -> dict:
    import yaml
    from pipelines import cli
    spec = yaml.safe_load(config.read_text())
    spec["input"]["path"] = str(data)
    path = out / "movielens.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_id = time.strftime("%Y%m%dT%H%M%S")
    if cli.main(["run", str(path), "--output", str(out / "runs"), "--run-id", run_id]) != 0:
        raise SystemExit("embedpipe run failed")
    manifest = json.loads((out / "runs" / run_id / "manifest.json").read_text())
    metrics = json.loads((out / "runs" / run_id / "metrics.json").read_text())
    return {"hr@10": metrics["hr@10"], "ndcg@10": metrics["ndcg@10"],
            "seconds": manifest["stages"]["train"]["seconds"], "params": spec["model"]}


def write_movielens(out: pathlib.Path) -> tuple[pd.DataFrame, pathlib.Path]:
    """The MovieLens ratings (`pipelines.tools.datasets.movielens`), written to out/movielens.csv."""
    from pipelines.tools.datasets import movielens
    out.mkdir(parents=True, exist_ok=True)
    frame = movielens()
    frame.to_csv(out / "movielens.csv", index=False)
    return frame, out / "movielens.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=pathlib.Path, default=ROOT / "examples" / "movielens.yaml")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "movielens")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    frame, data = write_movielens(args.out)
    results = baselines(frame)
    misses = results.pop("_misses")
    results["embedpipe two-tower"] = run_embedpipe(args.config, data, args.out)
    print(f"\nMovieLens leave-last-out: {frame.userId.nunique()} users, {len(frame)} ratings, "
          f"{misses} held-out movies never seen in training (a miss for every method)")
    print("| method | HR@10 | NDCG@10 | fit seconds |\n| --- | --- | --- | --- |")
    for name, row in results.items():
        print(f"| {name} | {row['hr@10']:.4f} | {row['ndcg@10']:.4f} | {row['seconds']:.1f} |")
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
