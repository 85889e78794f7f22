"""Memory the embedding tables need, checked before training starts rather than found by an OOM.

A table of `rows` x `dim` float32 weights costs 4 x rows x dim bytes, and the optimizer keeps
slots of the same size (Adam two, Adagrad one, SGD none). A skip-gram model has a second (context)
table for its token feature. With parameter servers the tables are sharded off this machine, so the
check is left to the cluster.
"""
from __future__ import annotations

import os

from pipelines.core.config import Config
from pipelines.core.errors import ConfigError

OPTIMIZER_SLOTS = {"adam": 2, "adagrad": 1, "sgd": 0}
USABLE_SHARE = 0.8  # of physical memory: the rest is TensorFlow, tf.data buffers and the OS


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def table_bytes(config: Config, rows: dict[str, int]) -> dict[str, int]:
    """Training bytes of each embedded feature's tables (weights and optimizer slots), for the
    features whose row count is in `rows`."""
    copies = 1 + OPTIMIZER_SLOTS[config.model.optimizer]
    tables = 2 if config.model.kind == "skipgram" else 1
    return {name: 4 * count * config.model.dim_of(name) * copies * (tables if name == config.token_feature else 1)
            for name, count in rows.items()}


def check_table_memory(config: Config, rows: dict[str, int], available: int | None = None) -> None:
    """Raises ConfigError, naming the largest table, when the tables cannot fit in memory.

    Args:
        config: the run's config.
        rows: rows per embedded feature, as far as they are known (config bounds before
            preprocessing, vocabulary sizes after).
        available: bytes of memory (default: this machine's RAM).
    """
    needed = table_bytes(config, rows)
    total = sum(needed.values())
    limit = USABLE_SHARE * (physical_memory() if available is None else available)
    if total <= limit:
        return
    largest = max(needed, key=needed.get)
    feature = config.features[largest]
    key = {"hash": "hash_buckets", "cross": "hash_buckets", "identity": "num_buckets"}.get(feature.type, "top_k")
    raise ConfigError(
        f"features.{largest}.{key}: the embedding tables need about {_size(total)} to train "
        f"({largest}: {rows[largest]:,} rows x {config.model.dim_of(largest)} dims with {config.model.optimizer}), "
        f"more than this machine can hold ({_size(limit)} usable); lower it, or train with parameter servers "
        "(README: Running at scale)")


def known_rows(config: Config) -> dict[str, int]:
    """Rows of each embedded table that the config alone bounds."""
    return {name: config.features[name].rows_bound for name in config.embedded_features
            if config.features[name].rows_bound is not None}


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} TiB"
