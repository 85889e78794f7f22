"""Model inputs: what each transformed feature is, and the tf.data pipeline that reads them.

Parsing uses only tf.Transform's transformed feature spec (`transform/transformed_metadata`); the
config only says which features are inputs, their embedding sizes and the label.
"""
from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tensorflow_transform as tft

from pipelines.config import Config
from transforms.preprocessing import num_categories

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 16384


@dataclasses.dataclass(frozen=True)
class FeatureInput:
    """One transformed feature as the model sees it.

    Attributes:
        name: transformed feature name (= config feature name).
        kind: "ids" (int64 [batch]), "token_ids" (SparseTensor [batch, tokens]) or "numeric" (float32 [batch]).
        num_rows: rows of the embedding table (categorical kinds only).
        dim: embedding dimension (categorical kinds only).
    """
    name: str
    kind: str
    num_rows: int = 0
    dim: int = 0

    @property
    def embedded(self) -> bool:
        return self.kind != "numeric"


def feature_inputs(config: Config, tft_output: tft.TFTransformOutput) -> dict[str, FeatureInput]:
    """Describes every configured feature, sizes taken from the tf.Transform output."""
    spec = tft_output.transformed_feature_spec()
    inputs = {}
    for name, feature in config.features.items():
        if not feature.is_categorical:
            inputs[name] = FeatureInput(name, "numeric")
            continue
        kind = "token_ids" if isinstance(spec[name], tf.io.VarLenFeature) else "ids"
        inputs[name] = FeatureInput(name, kind, num_categories(feature, tft_output), config.model.dim_of(name))
    return inputs


def make_dataset(file_pattern: str, feature_spec: dict, batch_size: int, label: str | None = None,
                 shuffle: bool = False, seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """Reads gzipped transformed tf.Examples in batches, streaming from disk.

    Args:
        file_pattern: glob of `*.tfrecord.gz` files.
        feature_spec: transformed feature spec (tf.io feature configs by name).
        batch_size: examples per batch.
        label: when given, elements are (features, label) instead of features.
        shuffle: shuffle files and examples (seeded).
        seed: shuffle seed.
        repeat: repeat forever (training under a distribution strategy with steps_per_epoch).

    Returns:
        Dataset of dicts {name: Tensor [batch] or SparseTensor [batch, n]} (and labels [batch]).
    """
    files = tf.data.Dataset.list_files(file_pattern, shuffle=shuffle, seed=seed)
    dataset = files.interleave(lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
                               cycle_length=4, num_parallel_calls=AUTOTUNE, deterministic=True)
    if shuffle:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size).map(lambda records: tf.io.parse_example(records, feature_spec),
                                            num_parallel_calls=AUTOTUNE, deterministic=True)
    if label:
        dataset = dataset.map(lambda features: (features, features.pop(label)))
    return dataset.prefetch(AUTOTUNE)


def split_pattern(run_path: str, split: str) -> str:
    return os.path.join(run_path, "data", f"{split}-*.tfrecord.gz")
