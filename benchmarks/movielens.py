"""MovieLens temporal leave-last-out: embedpipe's two-tower configs beside popularity, implicit ALS and EASE.

Each user's newest rating is held out, every other rating trains; every movie seen in training
that the user has not rated is ranked. ALS (the `implicit` package, 64 factors) and EASE are tuned
on a validation holdout (each user's second-newest rating, taken out of the training part) before
they are scored on the test holdout. So is embedpipe's one choice, the number of epochs: each config
and seed first trains on the validation protocol as the config says (early stopping on `val_hr@10`
keeps the best epoch; ALS, with early stopping off, runs its fixed sweeps), then on the test
protocol for the epochs kept there, without early stopping (the test holdout is the run's eval
split, and picking the epoch by it would flatter the result). It is scored as a downstream user
would score it: from the published Parquet (`embeddings/user`, `embeddings/movie`) by dot product.
Every stochastic method runs with 3 seeds; the table gives mean +- standard deviation.

    python benchmarks/movielens.py [--out benchmarks/out/movielens] [--seeds 3]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import sys
import time
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
K = 10
SEEDS = (1, 2, 3)
EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)


def minimal_config() -> dict:
    """The config that names only its features: every model option at its default."""
    return {"name": "movielens-minimal", "input": {"path": "", "format": "csv"}, "split": {"column": "is_last"},
            "features": {"userId": {"type": "vocabulary"}, "movieId": {"type": "vocabulary"}},
            "model": {"kind": "two_tower", "query": ["userId"], "candidate": ["movieId"]},
            "entities": [{"name": "user", "key": "userId"}, {"name": "movie", "key": "movieId"}]}


def example_config(**model) -> dict:
    """examples/movielens.yaml with `model` keys replaced."""
    import yaml
    config = yaml.safe_load((ROOT / "examples" / "movielens.yaml").read_text())
    config["model"] = {**config["model"], **model}
    return config


def genres_config(**model) -> dict:
    """examples/movielens.yaml with the genres text in the candidate tower (so trained by gradient),
    `model` keys replaced: the example as it was until 2026-11-24."""
    config = example_config(candidate=["movieId", "genres"], **model)
    config["features"] = {**config["features"], "genres": {"type": "text", "delimiter": "|"}}
    return config


def minimal_gradient_config() -> dict:
    """The minimal config trained by gradient steps (the softmax) instead of its default solver, als."""
    config = minimal_config()
    return {**config, "model": {**config["model"], "solver": "gradient"}}


CONFIGS: dict[str, Callable[[], dict]] = {
    "embedpipe minimal two-tower (defaults: solver als)": minimal_config,
    "embedpipe minimal two-tower with solver: gradient (the softmax)": minimal_gradient_config,
    "embedpipe examples/movielens.yaml (solver als, the last 100 movies by recency)": example_config,
    "embedpipe examples/movielens.yaml with genres in the candidate tower (solver gradient, mean of the last 100)":
        genres_config,
    "the same with query_encoder: attention, query_history: 50":
        lambda: genres_config(query_encoder="attention", query_history=50),
}


def rank_metrics(scores: np.ndarray, train: sp.csr_matrix, users: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """HR@K and NDCG@K; scores [users, items], the user's training items excluded from the ranking."""
    scores = scores.copy()
    for row, user in enumerate(users):
        scores[row, train.indices[train.indptr[user]:train.indptr[user + 1]]] = -np.inf
    target_scores = scores[np.arange(len(users)), targets]
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    hits = ranks < K
    return float(hits.mean()), float(np.where(hits, 1 / np.log2(ranks + 2), 0).mean())


class Split:
    """Training rows and holdout of one protocol, users and items indexed for matrices.

    Items are those seen in training; a held-out movie never seen in training is a miss for every
    method, so HR and NDCG are averaged over all users.
    """

    def __init__(self, train: pd.DataFrame, holdout: pd.DataFrame, users: dict):
        self.train = train
        self.users = users
        self.items = {m: i for i, m in enumerate(sorted(train.movieId.unique()))}
        self.total = holdout.userId.nunique()
        self.holdout_rows = holdout.index
        self.holdout = holdout[holdout.movieId.isin(self.items)]
        self.matrix = sp.csr_matrix((np.ones(len(train)), (train.userId.map(users), train.movieId.map(self.items))),
                                    shape=(len(users), len(self.items)))

    def score(self, scores: np.ndarray) -> tuple[float, float]:
        """HR@K, NDCG@K of scores [users, items] on the holdout."""
        rows = self.holdout.userId.map(self.users).to_numpy()
        hr, ndcg = rank_metrics(scores[rows], self.matrix, rows, self.holdout.movieId.map(self.items).to_numpy())
        return hr * len(self.holdout) / self.total, ndcg * len(self.holdout) / self.total


def splits(frame: pd.DataFrame) -> tuple[Split, Split]:
    """(validation: each user's second-newest rating held out of the training part, test: the newest)."""
    users = {u: i for i, u in enumerate(sorted(frame.userId.unique()))}
    train, test = frame[frame.is_last == 0], frame[frame.is_last == 1]
    validation = train.sort_values(["userId", "timestamp"], kind="stable").groupby("userId").tail(1)
    return Split(train.drop(validation.index), validation, users), Split(train, test, users)


def als_scores(train: sp.csr_matrix, factors: int, regularization: float, alpha: float, iterations: int,
               seed: int) -> np.ndarray:
    from implicit.als import AlternatingLeastSquares
    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                    iterations=iterations, random_state=seed, calculate_training_loss=False)
    model.fit(train, show_progress=False)
    return np.asarray(model.user_factors) @ np.asarray(model.item_factors).T


def ease_scores(train: sp.csr_matrix, lambda_: float) -> np.ndarray:
    """EASE (Steck, 2019): B = I - P diag(1/diag(P)), P = (X^T X + lambda I)^-1; scores X B."""
    gram = (train.T @ train).toarray()
    gram[np.diag_indices_from(gram)] += lambda_
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    weights[np.diag_indices_from(weights)] = 0.0
    return np.asarray(train @ weights)


def summary(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every number in the runs."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {**{k: float(np.mean([r[k] for r in runs])) for k in keys},
            **{f"{k}_std": float(np.std([r[k] for r in runs])) for k in keys}, "runs": runs}


def baselines(validation: Split, test: Split, seeds: tuple[int, ...]) -> dict[str, dict]:
    """Popularity; ALS and EASE tuned on the validation split, then fitted on the whole training part."""
    results = {}
    started = time.time()
    popularity = np.asarray(test.matrix.sum(axis=0)).ravel().astype(np.float64)
    hr, ndcg = test.score(np.tile(popularity, (len(test.users), 1)))
    results["popularity"] = summary([{"hr@10": hr, "ndcg@10": ndcg, "seconds": time.time() - started}])

    grid = list(itertools.product((0.01, 0.1, 1.0), (1.0, 10.0, 40.0)))
    tuning = {params: validation.score(als_scores(validation.matrix, 64, *params, 15, seeds[0]))[0] for params in grid}
    best = max(grid, key=tuning.get)
    runs = []
    for seed in seeds:
        started = time.time()
        scores = als_scores(test.matrix, 64, *best, 15, seed)
        seconds = time.time() - started
        hr, ndcg = test.score(scores)
        runs.append({"hr@10": hr, "ndcg@10": ndcg, "seconds": seconds})
    results["implicit ALS (64 factors, tuned)"] = {
        **summary(runs), "params": {"regularization": best[0], "alpha": best[1]},
        "validation_hr@10": {f"{r}/{a}": v for (r, a), v in tuning.items()}}

    tuning = {lambda_: validation.score(ease_scores(validation.matrix, lambda_))[0] for lambda_ in EASE_LAMBDAS}
    best_lambda = max(EASE_LAMBDAS, key=tuning.get)
    started = time.time()
    scores = ease_scores(test.matrix, best_lambda)
    seconds = time.time() - started
    hr, ndcg = test.score(scores)
    results["EASE (lambda tuned)"] = {**summary([{"hr@10": hr, "ndcg@10": ndcg, "seconds": seconds}]),
                                      "params": {"lambda": best_lambda}, "validation_hr@10": tuning}
    return results


def parquet_scores(run: pathlib.Path, split: Split) -> np.ndarray:
    """Dot products of the published user and movie vectors [users, items] in `split`'s indexing."""
    users = pd.read_parquet(run / "embeddings" / "user", columns=["key", "embedding"])
    movies = pd.read_parquet(run / "embeddings" / "movie", columns=["key", "embedding"])
    user_rows = users.key.astype(np.int64).map(split.users)
    movie_rows = movies.key.astype(np.int64).map(split.items)
    movies = movies[movie_rows.notna().to_numpy()]
    user_vectors = np.zeros((len(split.users), len(users.embedding.iloc[0])), np.float32)
    user_vectors[user_rows.to_numpy()] = np.stack(users.embedding.to_numpy())
    movie_vectors = np.zeros((len(split.items), user_vectors.shape[1]), np.float32)
    movie_vectors[movie_rows.dropna().astype(np.int64).to_numpy()] = np.stack(movies.embedding.to_numpy())
    scores = user_vectors @ movie_vectors.T
    missing = np.setdiff1d(np.arange(len(split.items)), movie_rows.dropna().astype(np.int64).to_numpy())
    scores[:, missing] = -np.inf   # a movie without a published vector cannot be retrieved
    return scores


def write_config(config: dict, data: pathlib.Path, out: pathlib.Path, **model) -> pathlib.Path:
    import yaml
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump({**config, "input": {**config["input"], "path": str(data)},
                                    "model": {**config["model"], **model}}))
    return path


def best_validation_epoch(config: dict, data: pathlib.Path, out: pathlib.Path, seed: int) -> int:
    """Trains on the validation protocol and returns the epochs the trainer kept there (1-based): the
    best under early stopping (on val_hr@10), all of them when the config has it off (ALS's fixed sweeps)."""
    from pipelines import cli
    path = write_config(config, data, out, seed=seed)
    run_id = f"seed{seed}-{time.strftime('%Y%m%dT%H%M%S')}"
    for stage in (["preprocess", str(path), "--output", str(out / "runs"), "--run-id", run_id],
                  ["train", str(out / "runs" / run_id)]):
        if cli.main(stage) != 0:
            raise SystemExit(f"embedpipe {stage[0]} failed")
    metrics = json.loads((out / "runs" / run_id / "metrics.json").read_text())
    return metrics["best_epoch"] or metrics["epochs_run"]


def run_embedpipe(config: dict, data: pathlib.Path, out: pathlib.Path, seed: int, epochs: int, test: Split) -> dict:
    """`embedpipe run` on the test protocol for `epochs` (no early stopping: the test holdout is the
    eval split, and choosing the epoch by it would flatter the result), scored from the Parquet."""
    from pipelines import cli
    path = write_config(config, data, out, seed=seed, epochs=epochs, early_stopping_patience=0)
    run_id = f"seed{seed}-{time.strftime('%Y%m%dT%H%M%S')}"
    if cli.main(["run", str(path), "--output", str(out / "runs"), "--run-id", run_id]) != 0:
        raise SystemExit("embedpipe run failed")
    run = out / "runs" / run_id
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    hr, ndcg = test.score(parquet_scores(run, test))
    return {"hr@10": hr, "ndcg@10": ndcg, "seconds": metrics["fit_seconds"], "epochs": epochs,
            "train_stage_seconds": manifest["stages"]["train"]["seconds"]}


def write_movielens(out: pathlib.Path) -> tuple[pd.DataFrame, pathlib.Path]:
    """The MovieLens ratings (`pipelines.tools.datasets.movielens`), written to out/movielens.csv."""
    from pipelines.tools.datasets import movielens
    out.mkdir(parents=True, exist_ok=True)
    frame = movielens()
    frame.to_csv(out / "movielens.csv", index=False)
    return frame, out / "movielens.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "movielens")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds per stochastic method")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    seeds = tuple(range(1, args.seeds + 1))
    frame, data = write_movielens(args.out)
    validation, test = splits(frame)
    validation_data = args.out / "movielens-validation.csv"
    validation_frame = frame[frame.is_last == 0].copy()
    validation_frame["is_last"] = validation_frame.index.isin(validation.holdout_rows).astype(int)
    validation_frame.to_csv(validation_data, index=False)
    results = baselines(validation, test, seeds)
    for index, (name, config) in enumerate(CONFIGS.items()):
        runs = []
        for seed in seeds:
            epochs = best_validation_epoch(config(), validation_data, args.out / f"config{index}-validation", seed)
            runs.append(run_embedpipe(config(), data, args.out / f"config{index}", seed, epochs, test))
        results[name] = {**summary(runs), "config": config()["model"]}
    print(f"\nMovieLens leave-last-out: {frame.userId.nunique()} users, {len(frame)} ratings, "
          f"{test.total - len(test.holdout)} held-out movies never seen in training (a miss for every method); "
          f"mean +- std over seeds {', '.join(map(str, seeds))} (popularity and EASE are deterministic); "
          "embedpipe scored from its published Parquet, trained for the epochs it kept on the validation "
          "split (the best under early stopping; ALS's fixed sweeps); fit seconds: model fitting only")
    print("| method | HR@10 | NDCG@10 | fit seconds |\n| --- | --- | --- | --- |")
    for name, row in results.items():
        print(f"| {name} | {row['hr@10']:.4f} +- {row['hr@10_std']:.4f} | {row['ndcg@10']:.4f} +- "
              f"{row['ndcg@10_std']:.4f} | {row['seconds']:.1f} |")
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
