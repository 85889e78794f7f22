"""Epochs that survive an interruption, early stopping, and one line per epoch in the terminal.

Training runs one Keras `fit` call per epoch on that epoch's own data (`inputs.epoch_seed`), and
after every epoch saves the model and optimizer state and appends the epoch's metrics to
`history.jsonl` in the stage's work directory. An interrupted `train` restores the last saved
epoch and goes on: the same data, the same draws, the same weights as a training that never
stopped, and the whole history. (Keras's BackupAndRestore restores weights, but not the data order,
the history or EarlyStopping's state.) Early stopping is decided from that history, and the best
epoch's weights come back from its checkpoint, so it too survives interruptions.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from typing import Any, Callable

import tensorflow as tf
import tf_keras as keras

from pipelines.core import fs

progress = logging.getLogger("embedpipe.train")

HISTORY = "history.jsonl"


class EpochState:
    """The model's and optimizer's state after each finished epoch, and the history of all epochs.

    Args:
        directory: the stage's work directory (kept across an interruption).
        net: the compiled model.
        is_chief: non-chief workers save into scratch directories (every worker must save).
    """

    def __init__(self, directory: str, net: keras.Model, is_chief: bool = True):
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        self._checkpoint = tf.train.Checkpoint(model=net, optimizer=net.optimizer, epochs_done=self._epoch)
        self._scratch = None if is_chief else tempfile.TemporaryDirectory(prefix="embedpipe-epochs-")
        root = directory if is_chief else self._scratch.name
        self._manager = tf.train.CheckpointManager(self._checkpoint, fs.join(root, "epochs"), max_to_keep=1)
        self._history_path = fs.join(directory, HISTORY)
        self._is_chief = is_chief

    def restore(self) -> list[dict[str, float]]:
        """Restores the last finished epoch, if any; returns the history of the finished epochs."""
        if self._manager.latest_checkpoint is None:
            return []
        self._checkpoint.restore(self._manager.latest_checkpoint)
        done = int(self._epoch.numpy())
        return [row for row in self._read_history() if row["epoch"] < done]

    def _read_history(self) -> list[dict[str, float]]:
        if not fs.exists(self._history_path):
            return []
        return [json.loads(line) for line in fs.read_text(self._history_path).splitlines() if line.strip()]

    def save(self, history: list[dict[str, float]]) -> None:
        """Records the finished epochs: history first, then the checkpoint that says how many."""
        if self._is_chief:
            fs.write_text_atomic(self._history_path, "".join(json.dumps(row) + "\n" for row in history))
        self._epoch.assign(len(history))
        self._manager.save()


def monitored(kind: str) -> tuple[str, str]:
    """The validation metric early stopping watches, and whether lower ("min") or higher is better.

    A two-tower model is judged by what it retrieves: its loss can rise while HR@10 still improves."""
    return ("val_hr@10", "max") if kind == "two_tower" else ("val_loss", "min")


def best_epoch(history: list[dict[str, float]], metric: str, mode: str) -> int | None:
    """Index of the best epoch by `metric` (the first of equals), or None when no epoch has it."""
    scored = [(row[metric], row["epoch"]) for row in history if metric in row and math.isfinite(row[metric])]
    if not scored:
        return None
    best = min(scored) if mode == "min" else max(scored, key=lambda item: (item[0], -item[1]))
    return best[1]


def should_stop(history: list[dict[str, float]], metric: str, mode: str, patience: int) -> bool:
    """Whether `patience` epochs have passed since the best one (0: never stop early)."""
    best = best_epoch(history, metric, mode)
    return bool(patience) and best is not None and history[-1]["epoch"] - best >= patience


def epoch_line(row: dict[str, Any], epochs: int, seconds: float) -> str:
    """One epoch as the terminal shows it, the loss and the validation metrics:
    "epoch  3/20  loss 4.312  val_loss 4.120  val_rmse 2.03  (0.6 s)"."""
    shown = "  ".join(f"{name} {value:.4g}" for name, value in row.items() if name == "loss" or name.startswith("val_"))
    return f"epoch {row['epoch'] + 1:>{len(str(epochs))}}/{epochs}  {shown}  ({seconds:.1f} s)"


def fit_epochs(net: keras.Model, state: EpochState, train_data, validation, epochs: int, steps: int | None,
               callbacks: list[keras.callbacks.Callback], patience: int, kind: str,
               verbose: bool = True) -> tuple[list[dict], int | None]:
    """Trains epoch by epoch from where `state` left off, one Keras `fit` call an epoch.

    Args:
        net: the compiled model.
        state: saved epochs (restored first).
        train_data: epoch -> that epoch's training dataset.
        validation: validation dataset, or None.
        epochs: epochs in all.
        steps: steps per epoch (None: one pass over the epoch's data).
        callbacks: Keras callbacks for every epoch.
        patience: early-stopping patience (0: off).
        kind: the model kind (which metric early stopping watches).
        verbose: one line per epoch in the terminal.

    Returns:
        The history (one dict per epoch: "epoch" and Keras's logs) and the best epoch (None when
        early stopping is off); the model holds the last epoch's weights (the caller restores the best).
    """
    def one_epoch(epoch: int) -> dict[str, float]:
        logs = net.fit(train_data(epoch), validation_data=validation, initial_epoch=epoch, epochs=epoch + 1,
                       steps_per_epoch=steps, callbacks=callbacks, verbose=0).history
        return {name: float(values[-1]) for name, values in logs.items()}

    return run_epochs(state, one_epoch, epochs, patience, kind, verbose)


def run_epochs(state: EpochState, one_epoch: Callable[[int], dict[str, float]], epochs: int, patience: int,
               kind: str, verbose: bool = True) -> tuple[list[dict], int | None]:
    """Runs `one_epoch(epoch)` (training, then validation: its logs) from where `state` left off,
    saving after each, until `epochs` or early stopping; returns the history and the best epoch
    (None when early stopping is off)."""
    history = state.restore()
    if history:
        progress.info("resuming after epoch %d of %d", len(history), epochs)
    metric, mode = monitored(kind)
    for epoch in range(len(history), epochs):
        if should_stop(history, metric, mode, patience):
            break
        started = time.time()
        row = {"epoch": epoch, **one_epoch(epoch)}
        history.append(row)
        state.save(history)
        if verbose:
            progress.info(epoch_line(row, epochs, time.time() - started))
    best = best_epoch(history, metric, mode) if patience else None
    if verbose and best is not None and len(history) < epochs:
        progress.info("stopped early after epoch %d: %s has not improved since epoch %d", len(history), metric,
                      best + 1)
    return history, best
