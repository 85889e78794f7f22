"""Model inputs: what each transformed feature is, and the tf.data pipeline that reads them.

Parsing uses only tf.Transform's transformed feature spec (`transform/transformed_metadata`); the
config only says which features are inputs, their embedding sizes and the label. A training
epoch's order depends only on (seed, epoch) (`epoch_seed`), never on how many epochs an iterator
has already seen, so a training resumed after an interruption sees the same data as one that ran
through.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_transform as tft

from pipelines.core.config import Config
from transforms.preprocessing import num_categories

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 16384
# A training epoch of example rows is shuffled whole, up to this many rows (the serialized records
# are held: about 100 bytes each for a few id features). A smaller buffer only mixes neighbouring
# rows, and input sorted by user, as event logs often are, then fills each batch with a few users'
# rows, while in-batch negatives and their logQ correction assume batches drawn from the whole split.
MAX_ROW_SHUFFLE = 1 << 20


def row_shuffle_buffer(rows: int) -> int:
    """The shuffle buffer of a training epoch of `rows` example rows: all of them, up to MAX_ROW_SHUFFLE."""
    return max(SHUFFLE_BUFFER, min(rows, MAX_ROW_SHUFFLE))


@dataclasses.dataclass(frozen=True)
class FeatureInput:
    """One transformed feature as the model sees it.

    Attributes:
        name: transformed feature name (= config feature name).
        kind: "ids" (int64 [batch]), "token_ids" (SparseTensor [batch, tokens]) or "numeric" (float32 [batch]).
        num_rows: rows of the embedding table (categorical kinds only).
        dim: embedding dimension (categorical kinds only).
        decay: token_ids only: the weight of a token relative to the next one, for a history (oldest
            first) whose mean weighs newer items more; 1 weighs every token alike.
    """
    name: str
    kind: str
    num_rows: int = 0
    dim: int = 0
    decay: float = 1.0

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


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one training epoch: a function of the config's seed and the epoch only."""
    return seed * 1_000_003 + epoch


def make_dataset(file_pattern: str, feature_spec: dict, batch_size: int, label: str | None = None,
                 shuffle_seed: int | None = None, repeat: bool = False,
                 shuffle_buffer: int = SHUFFLE_BUFFER) -> tf.data.Dataset:
    """Reads gzipped transformed tf.Examples in batches, streaming from disk.

    Args:
        file_pattern: glob of `*.tfrecord.gz` files.
        feature_spec: transformed feature spec (tf.io feature configs by name).
        batch_size: examples per batch.
        label: when given, elements are (features, label) instead of features.
        shuffle_seed: shuffle files and examples with this seed (`epoch_seed`); None keeps file order.
        repeat: repeat forever (parameter-server training cuts the stream into epochs).
        shuffle_buffer: records the shuffle holds (`row_shuffle_buffer` for example rows).

    Returns:
        Dataset of dicts {name: Tensor [batch] or SparseTensor [batch, n]} (and labels [batch]).
    """
    shuffle = shuffle_seed is not None
    files = tf.data.Dataset.list_files(file_pattern, shuffle=shuffle, seed=shuffle_seed)
    dataset = files.interleave(lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
                               cycle_length=4, num_parallel_calls=AUTOTUNE, deterministic=True)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size).map(lambda records: tf.io.parse_example(records, feature_spec),
                                            num_parallel_calls=AUTOTUNE, deterministic=True)
    if label:
        dataset = dataset.map(lambda features: (features, features.pop(label)))
    return dataset.prefetch(AUTOTUNE)
