"""Evaluation on the eval split, with baselines computed in the same run.

Supervised regression: RMSE and MAE of the model, of the training mean, and of a least-squares
linear model on the numeric features. Classification: accuracy and log loss beside the majority
class. Two-tower: HR@K and NDCG@K ranking every candidate seen in training (the user's training
items excluded), beside a popularity ranking.
"""
from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tf_keras as keras

from trainer.interactions import Interactions, candidate_batch

TOP_K = 10


def regression_metrics(model: keras.Model, train: tf.data.Dataset, evaluation: tf.data.Dataset,
                       numeric: list[str]) -> dict[str, float]:
    """Model RMSE/MAE on eval beside the mean predictor and a linear model on `numeric` features."""
    gram, moment, label_sum, count = None, None, 0.0, 0
    for features, labels in train:  # normal equations, accumulated so memory stays constant
        y = labels.numpy().astype(np.float64)
        x = _design(features, numeric, len(y))
        gram = x.T @ x if gram is None else gram + x.T @ x
        moment = x.T @ y if moment is None else moment + x.T @ y
        label_sum, count = label_sum + y.sum(), count + len(y)
    weights = np.linalg.lstsq(gram, moment, rcond=None)[0]
    mean = label_sum / count
    errors = collections.defaultdict(list)
    for features, labels in evaluation:
        y = labels.numpy().astype(np.float64)
        errors["model"].append(model(features, training=False).numpy().astype(np.float64) - y)
        errors["mean"].append(mean - y)
        errors["linear"].append(_design(features, numeric, len(y)) @ weights - y)
    out = {}
    for name, parts in errors.items():
        err = np.concatenate(parts)
        prefix = "" if name == "model" else f"baseline_{name}_"
        out[f"{prefix}rmse"] = float(np.sqrt(np.mean(err ** 2)))
        out[f"{prefix}mae"] = float(np.mean(np.abs(err)))
    out["eval_examples"] = int(len(np.concatenate(errors["model"])))
    return out


def _design(features: dict, numeric: list[str], size: int) -> np.ndarray:
    """[size, 1 + len(numeric)]: an intercept column and the numeric features."""
    columns = [features[name].numpy().astype(np.float64) for name in numeric]
    return np.column_stack([np.ones(size)] + columns)


def classification_metrics(model: keras.Model, class_counts: np.ndarray,
                           evaluation: tf.data.Dataset) -> dict[str, float]:
    """Model accuracy and log loss on eval beside always predicting the majority training class
    (`class_counts`: training rows per class [num_classes]). An eval row whose class the train
    split does not have (id -1) counts as a miss and is left out of the log loss."""
    majority = int(np.argmax(class_counts))
    correct = baseline = losses = total = unknown = 0
    for features, labels in evaluation:
        y = labels.numpy()
        logits = model(features, training=False)
        known = y >= 0
        losses += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y[known], logits=tf.boolean_mask(logits, known))))
        correct += int(np.sum(np.argmax(logits.numpy(), axis=-1) == y))
        baseline += int(np.sum(y == majority))
        total, unknown = total + len(y), unknown + int(np.sum(~known))
    return {"accuracy": correct / total, "log_loss": losses / max(total - unknown, 1),
            "baseline_majority_accuracy": baseline / total, "eval_examples": total,
            "eval_unknown_class_rows": unknown}


def ranking_metrics(net: keras.Model, evaluation: tf.data.Dataset, interactions: Interactions,
                    max_examples: int, k: int = TOP_K) -> dict[str, float]:
    """HR@k and NDCG@k of a two-tower model and of popularity over every candidate seen in training."""
    query_id, candidate_id, candidate_tower = net.query_id, net.candidate_id, net.candidate_tower
    ids = sorted(interactions.features)
    position = {item: index for index, item in enumerate(ids)}
    vectors = np.concatenate([candidate_tower(candidate_batch(interactions.features, ids[i:i + 4096]),
                                              training=False).numpy() for i in range(0, len(ids), 4096)])
    popularity = interactions.counts[ids].astype(np.float64)
    hits = collections.defaultdict(list)
    examples = 0
    for batch in evaluation:
        if examples >= max_examples:
            break
        queries = net.query(batch).numpy()
        scores = queries @ vectors.T
        for row, (user, item) in enumerate(zip(batch[query_id].numpy().tolist(), batch[candidate_id].numpy().tolist())):
            if examples >= max_examples:
                break
            examples += 1
            target = position.get(item)
            exclude = [position[i] for i in interactions.seen.get(user, ()) if i != item]
            for name, row_scores in (("model", scores[row]), ("popularity", popularity)):
                hits[name].append(_rank(row_scores, target, exclude))
    out = {"eval_examples": examples, "candidates": len(ids)}
    for name, ranks in hits.items():
        ranks = np.array(ranks, dtype=np.float64)
        prefix = "" if name == "model" else f"baseline_{name}_"
        out[f"{prefix}hr@{k}"] = float(np.mean(ranks < k))
        out[f"{prefix}ndcg@{k}"] = float(np.mean(np.where(ranks < k, 1.0 / np.log2(ranks + 2), 0.0)))
    return out


def _rank(scores: np.ndarray, target: int | None, exclude: list[int]) -> float:
    """0-based rank of `target` among candidates not excluded; infinity when it was never seen."""
    if target is None:
        return np.inf
    scores = scores.copy()
    scores[exclude] = -np.inf
    return float(np.sum(scores > scores[target]))
