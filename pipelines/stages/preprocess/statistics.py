"""Per-feature statistics of the train split -> `data/statistics.json` (read by the run report).

One pass over the typed train record batches. Each batch is reduced with pyarrow and numpy
(moments, value counts); Beam's combiners merge those partial results, so what any worker holds
grows with the features and their distinct values, never with the rows.

- numeric: rows, missing values (NaN or empty), mean, std (population, as tf.Transform's `var`),
  min, max, and the 0%, 5%, ..., 100% quantiles (`beam.ApproximateQuantiles`) for a histogram.
- categorical: the values the model sees (a cross's "day|hour" keys, a text feature's lower-cased
  tokens, identity ids in range; `entities.entity_keys`), rows without one, distinct values, the
  most frequent values, and the id space: `buckets` (hash, cross, identity, bucketized numeric) or
  `vocabulary_size`, counted from the value counts as tf.Transform counts it.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Iterable, Iterator, Mapping

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.stats import ApproximateQuantiles

from pipelines.core.config import Config, FeatureConfig
from pipelines.stages.preprocess.entities import entity_keys

QUANTILES = 21          # 0%, 5%, ..., 100%: twenty equal-mass bins
TOP_VALUES = 10
# (count, missing, mean, sum of squared deviations, min, max) of a column's observed values
Moments = tuple[int, int, float, float, float, float]
EMPTY_MOMENTS: Moments = (0, 0, 0.0, 0.0, float("inf"), float("-inf"))


def numeric_values(column: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """The observed values of a numeric column as float64, and how many are missing (NaN, null or
    ""; a column read both as a number and as a category is typed as strings)."""
    if pa.types.is_string(column.type):
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    values = pc.fill_null(column.cast(pa.float64()), float("nan")).to_numpy()
    observed = values[np.isfinite(values)]
    return observed, len(values) - len(observed)


def batch_moments(observed: np.ndarray, missing: int) -> Moments:
    if not len(observed):
        return (0, missing) + EMPTY_MOMENTS[2:]
    mean = float(observed.mean())
    return (len(observed), missing, mean, float(np.sum((observed - mean) ** 2)), float(observed.min()),
            float(observed.max()))


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan et al.'s pairwise update: exact for any split of the rows into batches."""
    n = a[0] + b[0]
    if n == 0:
        return 0, a[1] + b[1], 0.0, 0.0, float("inf"), float("-inf")
    delta = b[2] - a[2]
    mean = a[2] + delta * b[0] / n
    m2 = a[3] + b[3] + delta * delta * a[0] * b[0] / n
    return n, a[1] + b[1], mean, m2, min(a[4], b[4]), max(a[5], b[5])


def combine_moments(partials: Iterable[Moments]) -> Moments:
    return functools.reduce(merge_moments, partials, EMPTY_MOMENTS)


def add_tuples(partials: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Element-wise sums; () is the empty partial (Beam may merge an empty accumulator)."""
    totals: tuple[int, ...] = ()
    for partial in partials:
        if partial:
            totals = tuple(a + b for a, b in zip(totals, partial)) if totals else partial
    return totals


def in_vocabulary(feature: FeatureConfig, value: str, count: int) -> bool:
    """Whether tf.Transform's vocabulary keeps `value` before `top_k`: it drops values holding a
    newline and those below `frequency_threshold`."""
    return "\n" not in value and "\r" not in value and count >= (feature.frequency_threshold or 0)


def id_space(feature: FeatureConfig, kept: int) -> dict[str, int]:
    """The ids a categorical feature maps to (OOV buckets not counted); `kept` values pass
    `in_vocabulary`."""
    if feature.uses_vocabulary_file:
        # tf.Transform writes one dummy entry into an empty vocabulary.
        return {"vocabulary_size": max(1, min(kept, feature.top_k or kept))}
    if feature.type == "vocabulary_list":
        return {"vocabulary_size": len(feature.values)}
    if feature.is_hashed:
        return {"buckets": feature.hash_buckets}
    return {"buckets": feature.num_buckets if feature.type == "identity" else feature.bucketize}


@beam.typehints.with_input_types(pa.RecordBatch)
class SummarizeBatch(beam.DoFn):
    """A typed record batch -> per feature, its partial statistics (tagged by how they combine)."""

    def __init__(self, features: Mapping[str, FeatureConfig], time_zone: str):
        self._features = dict(features)
        self._time_zone = time_zone

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        table = pa.Table.from_batches([batch])
        for name, feature in self._features.items():
            if feature.type == "numeric":
                observed, missing = numeric_values(table.column(feature.column))
                yield beam.pvalue.TaggedOutput("moments", (name, batch_moments(observed, missing)))
                if len(observed):
                    yield beam.pvalue.TaggedOutput("numbers", (name, observed.tolist()))
                continue
            keys, rows = entity_keys(feature, table, self._time_zone)
            with_value = len(pc.unique(rows)) if len(rows) else 0
            yield beam.pvalue.TaggedOutput("presence", (name, (table.num_rows, table.num_rows - with_value, len(keys))))
            counts = pc.value_counts(keys)
            for value, count in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()):
                yield beam.pvalue.TaggedOutput("counts", ((name, value), count))


def moments_fields(item: tuple[str, Moments]) -> tuple[str, dict]:
    name, (count, missing, mean, m2, low, high) = item
    rows = count + missing
    fields = {"rows": rows, "missing": missing, "missing_share": missing / rows if rows else 0.0}
    if count:
        fields.update(mean=mean, std=(m2 / count) ** 0.5, min=low, max=high)
    return name, fields


def presence_fields(item: tuple[str, tuple[int, int, int]]) -> tuple[str, dict]:
    name, (rows, missing, values) = item
    return name, {"rows": rows, "missing": missing, "missing_share": missing / rows if rows else 0.0,
                  "values": values}


def top_fields(item: tuple[str, list[tuple[int, str]]]) -> tuple[str, dict]:
    name, top = item
    ordered = sorted(top, key=lambda pair: (-pair[0], pair[1]))
    return name, {"top": [{"value": value, "count": count} for count, value in ordered]}


def merge_fields(parts: Iterable[dict[str, dict]]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for part in parts:
        for name, fields in part.items():
            merged.setdefault(name, {}).update(fields)
    return merged


def statistics_document(fields: dict[str, dict], features: Mapping[str, FeatureConfig]) -> dict:
    """The content of `data/statistics.json`: features in config order, each with its type and columns."""
    document = {}
    for name, feature in features.items():
        found = dict(fields.get(name, {}))
        if feature.is_categorical:
            found.update(id_space(feature, found.pop("kept", 0)))
        document[name] = {"type": feature.type, "columns": list(feature.raw_columns), **found}
    return {"split": "train", "features": document}


class SummarizeFeatures(beam.PTransform):
    """Typed record batches -> one element: the statistics document of `config`'s features."""

    def __init__(self, config: Config):
        super().__init__()
        self._features = dict(config.features)
        self._time_zone = config.input.time_zone

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        features = self._features
        parts = batches | "SummarizeBatches" >> beam.ParDo(SummarizeBatch(features, self._time_zone)).with_outputs(
            "moments", "numbers", "presence", "counts")
        counts = parts.counts | "SumValueCounts" >> beam.CombinePerKey(sum)
        fields = [
            parts.moments | "CombineMoments" >> beam.CombinePerKey(combine_moments)
            | "MomentFields" >> beam.Map(moments_fields),
            parts.numbers | "Quantiles" >> ApproximateQuantiles.PerKey(QUANTILES, input_batched=True)
            | "QuantileFields" >> beam.MapTuple(lambda name, edges: (name, {"quantiles": edges})),
            parts.presence | "CombinePresence" >> beam.CombinePerKey(add_tuples)
            | "PresenceFields" >> beam.Map(presence_fields),
            counts | "ByCount" >> beam.MapTuple(lambda key, count: (key[0], (count, key[1])))
            | "TopValues" >> beam.combiners.Top.PerKey(TOP_VALUES, key=lambda pair: pair[0])
            | "TopFields" >> beam.Map(top_fields),
            counts | "Distinct" >> beam.MapTuple(
                lambda key, count: (key[0], (1, int(in_vocabulary(features[key[0]], key[1], count)))))
            | "CountDistinct" >> beam.CombinePerKey(add_tuples)
            | "DistinctFields" >> beam.MapTuple(lambda name, n: (name, {"distinct": n[0], "kept": n[1]})),
        ]
        return (fields
                | "FlattenFields" >> beam.Flatten()
                | "AsDicts" >> beam.MapTuple(lambda name, found: {name: found})
                | "MergeFields" >> beam.CombineGlobally(merge_fields)
                | "Document" >> beam.Map(statistics_document, features))


class ComputeFeatureStatistics(beam.PTransform):
    """Typed train record batches -> `path`, one JSON file with every feature's statistics.

    Args:
        config: the job config (its features).
        path: the file to write (the staged run's `statistics_path`).
    """

    def __init__(self, config: Config, path: str):
        super().__init__()
        self._config = config
        self._path = path

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return (batches
                | "SummarizeFeatures" >> SummarizeFeatures(self._config)
                | "ToJson" >> beam.Map(json.dumps, indent=1)
                | "WriteStatistics" >> beam.io.WriteToText(self._path, shard_name_template="", num_shards=1))
