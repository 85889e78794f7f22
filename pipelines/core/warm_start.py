"""Which embedding rows a warm start copies, decided from the two configs before any work starts.

The rule, per feature:
- **by key** when both features give each key its own row (`vocabulary`, `text`, `vocabulary_list`,
  `identity` and exact crosses, in any combination): rows move with their keys, whatever the
  vocabularies' order; new keys keep the initializer, keys gone are dropped;
- **by bucket** when both are `hash` (same column) or both hashed `cross`es (same columns) with the
  same `hash_buckets`: a bucket means nothing in another hash space;
- **not copied** otherwise (key <-> bucket, another bucket count or columns, another dimension,
  a feature the source does not have), with the reason.
A feature named in `warm_start.features` or `freeze` that cannot be copied is a config error; a
feature only implied ("every embedded feature") is skipped with its reason in the plan.
A vector file (Parquet or word2vec text) warm-starts exactly one keyed feature.
"""
from __future__ import annotations

import dataclasses

from pipelines.core import fs
from pipelines.core.config import Config, FeatureConfig
from pipelines.core.errors import ConfigError, UsageError
from pipelines.core.rundir import RunDir, resolve_run
from pipelines.core.vectors import is_word2vec_file



def keyed(feature: FeatureConfig) -> bool:
    """Whether each row of the feature's table stands for one key."""
    return feature.is_categorical and not feature.is_hashed and feature.type != "numeric"


@dataclasses.dataclass(frozen=True)
class FeaturePlan:
    """Attributes:
        feature: the feature of this run.
        how: "key", "bucket" or "skip".
        reason: why it is skipped ("" otherwise).
        frozen: its copied rows stay fixed during training.
    """
    feature: str
    how: str
    reason: str = ""
    frozen: bool = False


@dataclasses.dataclass(frozen=True)
class WarmStartPlan:
    """Attributes:
        source: the resolved run directory or vector file.
        is_run: True for a run, False for a vector file.
        features: one plan per embedded feature considered.
    """
    source: str
    is_run: bool
    features: tuple[FeaturePlan, ...]

    def copied(self) -> list[FeaturePlan]:
        return [p for p in self.features if p.how != "skip"]

    def describe(self) -> list[str]:
        """One line per feature, as the terminal shows it."""
        lines = []
        for plan in self.features:
            if plan.how == "skip":
                lines.append(f"{plan.feature}: not copied ({plan.reason})")
            else:
                lines.append(f"{plan.feature}: copied by {plan.how}{', frozen' if plan.frozen else ''}")
        return lines


def compatibility(new: FeatureConfig, new_dim: int, old: FeatureConfig | None, old_dim: int) -> tuple[str, str]:
    """("key" | "bucket" | "skip", reason) for copying `old`'s rows into `new`'s table."""
    if old is None or not old.is_categorical:
        return "skip", "the source has no embedding of it"
    if new_dim != old_dim:
        return "skip", f"dimension {old_dim} in the source, {new_dim} here"
    if "numeric" in (new.type, old.type):
        return "skip", "quantile buckets are recomputed from each run's data"
    if keyed(new) and keyed(old):
        return "key", ""
    if new.is_hashed and old.is_hashed and old.type == new.type:
        if old.references != new.references:
            return "skip", f"hashes {list(old.references)} in the source, {list(new.references)} here"
        if old.hash_buckets != new.hash_buckets:
            return "skip", f"{old.hash_buckets} hash buckets in the source, {new.hash_buckets} here"
        return "bucket", ""
    return "skip", f"{_kind(old)} in the source, {_kind(new)} here: rows of keys and buckets do not correspond"


def _kind(feature: FeatureConfig) -> str:
    if feature.type == "cross":
        return "hashed cross" if feature.is_hashed else "exact cross"
    return feature.type


def plan_warm_start(config: Config) -> WarmStartPlan | None:
    """The plan for `config.warm_start`, or None without one.

    Raises:
        ConfigError: the source is neither a run with a trained model nor a vector file, a vector
            file is used for other than one keyed feature, or a feature asked for explicitly
            cannot be copied.
    """
    warm = config.warm_start
    if warm is None:
        return None
    asked = set(warm.features) | set(warm.freeze)
    try:
        run = resolve_run(warm.source)
    except UsageError:
        run = None
    if run is not None:
        plans = _plan_from_run(config, run)
        source, is_run = run.path, True
    elif fs.exists(warm.source):
        plans = _plan_from_vectors(config)
        source, is_run = warm.source, False
    else:
        raise ConfigError(f"warm_start.from: {warm.source} is neither a run directory (with a trained model) "
                          "nor a vector file (Parquet or word2vec text)")
    for plan in plans:
        if plan.how == "skip" and plan.feature in asked:
            raise ConfigError(f"warm_start: {plan.feature} cannot be warm-started from {source}: {plan.reason}")
    return WarmStartPlan(source, is_run, tuple(plans))


def _targets(config: Config) -> list[str]:
    return list(config.warm_start.features or config.embedded_features)


def _plan_from_run(config: Config, run: RunDir) -> list[FeaturePlan]:
    from pipelines.core.config_parse import config_from_dict
    if not run.stage_done("train"):
        raise ConfigError(f"warm_start.from: {run.path} has no trained model ({run.status()})")
    old = config_from_dict(run.read_manifest()["config"])
    plans = []
    for name in _targets(config):
        how, reason = compatibility(config.features[name], config.model.dim_of(name), old.features.get(name),
                                    old.model.dim_of(name))
        plans.append(FeaturePlan(name, how, reason, how != "skip" and name in config.warm_start.freeze))
    return plans


def _plan_from_vectors(config: Config) -> list[FeaturePlan]:
    names = list(config.warm_start.features)
    if len(names) != 1:
        raise ConfigError(f"warm_start.features: a vector file ({config.warm_start.source}) warm-starts exactly "
                          f"one feature; name it (embedded features: {', '.join(config.embedded_features)})")
    name = names[0]
    feature = config.features[name]
    if not keyed(feature):
        return [FeaturePlan(name, "skip", f"a {feature.type} feature's rows are buckets, not keys")]
    dim = _vector_file_dim(config.warm_start.source)
    if dim != config.model.dim_of(name):
        return [FeaturePlan(name, "skip", f"the file's vectors have {dim} dimensions, {name} has "
                                          f"{config.model.dim_of(name)}")]
    return [FeaturePlan(name, "key", "", name in config.warm_start.freeze)]


def _vector_file_dim(path: str) -> int:
    """Dimension of a vector file, read from its schema or first vector line."""
    if not is_word2vec_file(path):
        try:
            return fs.read_parquet_schema(path).field("embedding").type.list_size
        except (KeyError, OSError, ValueError) as error:
            raise ConfigError(f"warm_start.from: {path} is not embedpipe Parquet vectors ({error})") from None
    with fs.open(path, "r") as handle:
        for number, line in enumerate(handle):
            parts = line.split()
            if number == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
                return int(parts[1])
            if parts:
                return len(parts) - 1
    raise ConfigError(f"warm_start.from: {path} holds no vectors")
