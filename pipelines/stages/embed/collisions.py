"""Hash collisions made visible: how many keys of a hashed entity share a bucket (and so a row).

A `hash` feature, or a cross that is not exact, maps keys to `hash_buckets` rows; keys in one bucket
get one vector, and `neighbors` would show them at similarity 1.0. The embed job knows each key's
bucket (the handler computes it with the transform's own hash), so it counts, per entity, the
buckets used, the keys that share one, and names a few of them; the manifest keeps the numbers and
the terminal warns above COLLISION_WARNING_SHARE.
"""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa

BUCKET_COLUMN = "_bucket"
COLLISION_EXAMPLES = 5


class CountBuckets(beam.CombineFn):
    """Output tables -> buckets used, keys sharing a bucket, and a few shared buckets named.

    The accumulator is a count per bucket ([hash_buckets] int64), the first key seen in each bucket
    used, and up to COLLISION_EXAMPLES named collisions: it grows with the buckets, never with the
    rows, and a table is counted with NumPy, not key by key.
    """

    def __init__(self, hash_buckets: int):
        self._buckets = hash_buckets

    def create_accumulator(self) -> tuple[np.ndarray, dict[int, str], list[list[str]]]:
        return np.zeros(self._buckets, np.int64), {}, []

    def add_input(self, accumulator, table: pa.Table):
        counts, first, examples = accumulator
        buckets = table.column(BUCKET_COLUMN).to_numpy()
        keys = table.column("key").to_pylist()
        seen, where = np.unique(buckets, return_index=True)
        fresh = counts[seen] == 0
        first.update(zip(seen[fresh].tolist(), (keys[i] for i in where[fresh].tolist())))
        counts += np.bincount(buckets, minlength=self._buckets)
        if len(examples) < COLLISION_EXAMPLES:
            for row, bucket in enumerate(buckets.tolist()):
                if counts[bucket] > 1 and first[bucket] != keys[row]:
                    examples.append([first[bucket], keys[row]])
                    if len(examples) == COLLISION_EXAMPLES:
                        break
        return counts, first, examples

    def merge_accumulators(self, accumulators: Iterable):
        merged_counts, merged_first, merged_examples = self.create_accumulator()
        for counts, first, examples in accumulators:
            for bucket, key in first.items():
                if merged_counts[bucket] and merged_first.get(bucket, key) != key:
                    merged_examples.append([merged_first[bucket], key])
                merged_first.setdefault(bucket, key)
            merged_counts += counts
            merged_examples.extend(examples)
        return merged_counts, merged_first, merged_examples[:COLLISION_EXAMPLES]

    def extract_output(self, accumulator) -> dict:
        counts, _, examples = accumulator
        return {"buckets_used": int(np.count_nonzero(counts)), "keys_sharing_a_bucket": int(counts[counts > 1].sum()),
                "examples": [" = ".join(repr(k) for k in pair) for pair in examples]}


class CountSharedBuckets(beam.PTransform):
    """Output tables of a hashed entity (with BUCKET_COLUMN) -> one dict: buckets used, keys sharing
    a bucket, a few of them named."""

    def __init__(self, hash_buckets: int):
        super().__init__()
        self._buckets = hash_buckets

    def expand(self, tables: beam.PCollection) -> beam.PCollection:
        return tables | "CountBuckets" >> beam.CombineGlobally(CountBuckets(self._buckets))


def drop_bucket_column(table: pa.Table) -> pa.Table:
    return table.drop_columns([BUCKET_COLUMN]) if BUCKET_COLUMN in table.column_names else table


def collision_facts(found: dict, keys: int, hash_buckets: int) -> dict:
    """The manifest's record of one hashed entity's collisions."""
    shared = found["keys_sharing_a_bucket"]
    return {"keys": keys, "hash_buckets": hash_buckets, "buckets_used": found["buckets_used"],
            "keys_sharing_a_bucket": shared, "share": round(shared / keys, 4) if keys else 0.0,
            "examples": found["examples"]}
