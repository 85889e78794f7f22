"""Feature specs -> a tf.Transform `preprocessing_fn`, and the size of every id space it creates.

Every transformed feature keeps its config name. Categorical features become int64 ids
(shape [batch]; text: a SparseTensor [batch, tokens]); numeric features become float32 [batch]
(or int64 bucket ids with `bucketize`). The supervised label keeps its column name.
"""
from __future__ import annotations

from typing import Callable, Mapping

import tensorflow as tf
import tensorflow_transform as tft

from pipelines.core.config import FeatureConfig
from pipelines.core.dates import split_reference
from pipelines.core.names import CROSS_SEPARATOR, ESCAPE, LABEL_VOCABULARY
from transforms.dates import date_part

Tensors = Mapping[str, tf.Tensor]
_RE2_ESCAPE = ESCAPE * 2          # a literal backslash, in an RE2 pattern and in its rewrite
_RE2_SEPARATOR = ESCAPE + CROSS_SEPARATOR


def build_preprocessing_fn(features: Mapping[str, FeatureConfig], label: str | None = None,
                           classification: bool = False, time_zone: str = "UTC",
                           label_transform: str = "none") -> Callable[[Tensors], dict[str, tf.Tensor]]:
    """Returns the `preprocessing_fn` for these features.

    Args:
        features: feature name -> spec.
        label: raw label column of a supervised model, passed through (regression) or mapped to
            class ids by a vocabulary without OOV buckets (classification).
        classification: whether the label is a class.
        time_zone: the zone date parts of instants are read in (`input.time_zone`).
        label_transform: "log" trains a regression on log(1 + max(label, 0)), for heavy-tailed
            targets such as durations (the SavedModel turns predictions back into label units).
    """

    def preprocessing_fn(inputs: Tensors) -> dict[str, tf.Tensor]:
        outputs = {name: transform_feature(spec, inputs, time_zone) for name, spec in features.items()}
        if label:
            outputs[label] = (tft.compute_and_apply_vocabulary(inputs[label], num_oov_buckets=0, weights=ones(inputs[label]),
                                                               vocab_filename=LABEL_VOCABULARY, name="label")
                              if classification else _target(_as_float(inputs[label]), label_transform))
        return outputs

    return preprocessing_fn


def _target(label: tf.Tensor, transform: str) -> tf.Tensor:
    return tf.math.log1p(tf.maximum(label, 0.0)) if transform == "log" else label


def reference(inputs: Tensors, name: str, time_zone: str) -> tf.Tensor:
    """A raw column, or a date part of one ("time.hour") computed in the graph [batch]."""
    column, part = split_reference(name)
    return inputs[column] if part is None else date_part(_as_string(inputs[column]), part, time_zone)


def transform_feature(spec: FeatureConfig, inputs: Tensors, time_zone: str = "UTC") -> tf.Tensor:
    """One feature's transformed tensor (see the module docstring for shapes)."""
    if spec.type == "cross":
        parts = [escape_part(_as_string(reference(inputs, name, time_zone))) for name in spec.columns]
        joined = tf.strings.join(parts, separator=CROSS_SEPARATOR)
        if spec.exact:
            return tft.compute_and_apply_vocabulary(
                joined, top_k=spec.top_k, frequency_threshold=spec.frequency_threshold, weights=ones(joined),
                num_oov_buckets=spec.num_oov_buckets, vocab_filename=spec.name, name=spec.name)
        return tf.strings.to_hash_bucket_fast(joined, spec.hash_buckets)
    x = reference(inputs, spec.column, time_zone)
    if spec.type == "vocabulary":
        x = _as_string(x)
        return tft.compute_and_apply_vocabulary(
            x, top_k=spec.top_k, frequency_threshold=spec.frequency_threshold, weights=ones(x),
            num_oov_buckets=spec.num_oov_buckets, vocab_filename=spec.name, name=spec.name)
    if spec.type == "text":
        tokens = tokenize(_as_string(x), spec.delimiter)
        ids = tft.compute_and_apply_vocabulary(
            tokens, top_k=spec.top_k, frequency_threshold=spec.frequency_threshold,
            num_oov_buckets=spec.num_oov_buckets, vocab_filename=spec.name, name=spec.name)
        return ids.to_sparse()
    if spec.type == "vocabulary_list":
        return _lookup_list(_as_string(x), spec.values, spec.num_oov_buckets)
    if spec.type == "identity":
        ids = _as_int(x)
        return tf.where((ids >= 0) & (ids < spec.num_buckets), ids, tf.constant(spec.num_buckets, tf.int64))
    if spec.type == "hash":
        return tf.strings.to_hash_bucket_fast(_as_string(x), spec.hash_buckets)
    return _numeric(spec, _as_float(x))


def ones(x: tf.Tensor) -> tf.Tensor:
    """Weight 1 for every value of a dense vocabulary input: the same vocabulary (counts are sums
    of ones, exact in float32 within a batch), but tf.Transform then counts each batch's distinct
    values in the graph instead of making every value a Beam element (900,314 elements per
    vocabulary of the 1M-row benchmark, its largest per-row cost in Beam)."""
    return tf.ones_like(x, dtype=tf.float32)


def escape_part(part: tf.Tensor) -> tf.Tensor:
    """A cross part with "\\" and "|" escaped, as `pipelines.core.names.escape_part` does: distinct
    tuples of parts join to distinct keys (and usual values are unchanged)."""
    escaped = tf.strings.regex_replace(part, _RE2_ESCAPE, _RE2_ESCAPE * 2)
    return tf.strings.regex_replace(escaped, _RE2_SEPARATOR, _RE2_ESCAPE + CROSS_SEPARATOR)


def tokenize(text: tf.Tensor, delimiter: str | None) -> tf.RaggedTensor:
    """Lower-cased tokens of each string, empty tokens dropped.

    Args:
        text: string tensor [batch].
        delimiter: split on this string; None splits on whitespace.

    Returns:
        Ragged string tensor [batch, (tokens)].
    """
    tokens = tf.strings.split(tf.strings.lower(text, encoding="utf-8"), sep=delimiter)
    if delimiter is not None:
        tokens = tf.strings.strip(tokens)
    return tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)


def _numeric(spec: FeatureConfig, x: tf.Tensor) -> tf.Tensor:
    """Missing values (NaN) take the training mean, so they carry no signal after scaling.

    Every analyzer reads only the observed values, never the imputed column: an analyzer reading
    another analyzer's output needs a second pass over the data, for which tf.Transform keeps the
    whole dataset between the passes (in memory on the DirectRunner).
    """
    if spec.normalize == "log":  # heavy-tailed amounts, distances, counts: log(1 + max(x, 0)), then z-scored
        x = tf.math.log1p(tf.maximum(x, 0.0))
    finite = tf.math.is_finite(x)
    observed = tf.boolean_mask(x, finite)
    if spec.normalize in ("zscore", "log") and not spec.bucketize:
        mean = tft.mean(observed, name=f"{spec.name}_mean")
        variance = tft.var(observed, name=f"{spec.name}_var")
        deviation = tf.math.divide_no_nan(x - tf.cast(mean, x.dtype), tf.sqrt(tf.cast(variance, x.dtype)))
        return tf.where(finite, deviation, tf.zeros_like(x))
    mean = tf.cast(tft.mean(observed, name=f"{spec.name}_mean"), x.dtype)
    imputed = tf.where(finite, x, mean)
    if spec.bucketize:
        boundaries = tft.quantiles(observed, spec.bucketize, min(1.0 / spec.bucketize, 0.01),
                                   name=f"{spec.name}_bucketize")
        return tft.apply_buckets(imputed, boundaries)
    if spec.normalize == "minmax":
        low = tf.cast(tft.min(observed, name=f"{spec.name}_min"), x.dtype)
        high = tf.cast(tft.max(observed, name=f"{spec.name}_max"), x.dtype)
        return tf.math.divide_no_nan(imputed - low, high - low)
    return imputed


def _lookup_list(x: tf.Tensor, values: tuple[str, ...], num_oov_buckets: int) -> tf.Tensor:
    """Index of x in `values`; unknown values hash into `num_oov_buckets` ids after the list."""
    matches = tf.equal(tf.expand_dims(x, -1), tf.constant(values))
    known = tf.reduce_any(matches, axis=-1)
    oov = len(values) + tf.strings.to_hash_bucket_fast(x, num_oov_buckets)
    return tf.where(known, tf.argmax(tf.cast(matches, tf.int64), axis=-1), oov)


def _as_string(x: tf.Tensor) -> tf.Tensor:
    return x if x.dtype == tf.string else tf.strings.as_string(x)


def _as_float(x: tf.Tensor) -> tf.Tensor:
    if x.dtype == tf.string:
        # "" is a missing value: NaN, like a missing number.
        return tf.strings.to_number(tf.where(tf.strings.length(x) > 0, x, "nan"), tf.float32)
    return tf.cast(x, tf.float32)


def _as_int(x: tf.Tensor) -> tf.Tensor:
    if x.dtype == tf.int64:
        return x
    x = _as_float(x)
    return tf.cast(tf.where(tf.math.is_finite(x), x, -1.0), tf.int64)


def num_categories(spec: FeatureConfig, tft_output: tft.TFTransformOutput) -> int:
    """Rows of the embedding table of a categorical feature (ids are in [0, rows))."""
    if spec.uses_vocabulary_file:
        return tft_output.vocabulary_size_by_name(spec.name) + spec.num_oov_buckets
    if spec.type == "vocabulary_list":
        return len(spec.values) + spec.num_oov_buckets
    if spec.type == "identity":
        return spec.num_buckets + 1
    if spec.is_hashed:
        return spec.hash_buckets
    if spec.type == "numeric" and spec.bucketize:
        return spec.bucketize
    raise ValueError(f"feature {spec.name!r} ({spec.type}) has no categories")
