"""Hash collisions made visible: how many keys of a hashed entity share a bucket (and so a row).

A `hash` feature, or a cross that is not exact, maps keys to `hash_buckets` rows; keys in one bucket
get one vector, and `neighbors` would show them at similarity 1.0. The embed job knows each key's
bucket (the handler computes it with the transform's own hash), so it counts, per entity, the
buckets used, the keys that share one, and names a few of them; the manifest keeps the numbers and
the terminal warns above COLLISION_WARNING_SHARE.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipelines.core.beam_runner import COUNTER_NAMESPACE, read_counters

BUCKET_COLUMN = "_bucket"
COLLISION_EXAMPLES = 5


def _bucket_keys(table: pa.Table) -> Iterator[tuple[int, str]]:
    yield from zip(table.column(BUCKET_COLUMN).to_pylist(), table.column("key").to_pylist())


class _CountBucket(beam.DoFn):
    def __init__(self, entity: str):
        self._buckets = Metrics.counter(COUNTER_NAMESPACE, f"buckets_used_{entity}")
        self._shared = Metrics.counter(COUNTER_NAMESPACE, f"keys_sharing_{entity}")
        self._examples = Metrics.string_set(COUNTER_NAMESPACE, f"shared_buckets_{entity}")
        self._named = 0

    def process(self, item: tuple[int, Iterable[str]]) -> None:
        keys = sorted(item[1])
        self._buckets.inc()
        if len(keys) > 1:
            self._shared.inc(len(keys))
            if self._named < COLLISION_EXAMPLES:
                self._examples.add(" = ".join(repr(k) for k in keys[:3]) + (" = ..." if len(keys) > 3 else ""))
                self._named += 1


class CountSharedBuckets(beam.PTransform):
    """Output tables of a hashed entity (with BUCKET_COLUMN) -> counters of buckets and shared keys."""

    def __init__(self, entity: str):
        super().__init__()
        self._entity = entity

    def expand(self, tables: beam.PCollection) -> beam.PCollection:
        return (tables
                | "KeyByBucket" >> beam.FlatMap(_bucket_keys)
                | "GroupByBucket" >> beam.GroupByKey()
                | "CountBucket" >> beam.ParDo(_CountBucket(self._entity)))


def drop_bucket_column(table: pa.Table) -> pa.Table:
    return table.drop_columns([BUCKET_COLUMN]) if BUCKET_COLUMN in table.column_names else table


def collision_facts(result: beam.runners.runner.PipelineResult, hashed: dict[str, int]) -> dict[str, dict]:
    """Per hashed entity (name -> hash buckets): keys, buckets used, keys sharing a bucket and a few
    examples."""
    from apache_beam.metrics.metric import MetricsFilter
    counts = read_counters(result)
    examples: dict[str, set[str]] = {}
    for metric in result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE)).get("string_sets", []):
        if metric.key.metric.name.startswith("shared_buckets_"):
            examples.setdefault(metric.key.metric.name.removeprefix("shared_buckets_"), set()).update(
                metric.committed or ())
    facts = {}
    for name, buckets in hashed.items():
        keys = counts.get(f"entities_{name}", 0)
        shared = counts.get(f"keys_sharing_{name}", 0)
        facts[name] = {"keys": keys, "hash_buckets": buckets, "buckets_used": counts.get(f"buckets_used_{name}", 0),
                       "keys_sharing_a_bucket": shared, "share": round(shared / keys, 4) if keys else 0.0,
                       "examples": sorted(examples.get(name, ()))[:COLLISION_EXAMPLES]}
    return facts
