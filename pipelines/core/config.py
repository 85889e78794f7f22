"""The job config as frozen dataclasses, one per section (parsed and validated by `config_parse`).

Every key, its default and an example are in docs/config.md.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from pipelines.core.dates import split_reference

INPUT_FORMATS = ("csv", "parquet", "jsonl", "tfrecord", "text")
FEATURE_TYPES = ("vocabulary", "vocabulary_list", "identity", "hash", "cross", "numeric", "text")
CATEGORICAL_TYPES = ("vocabulary", "vocabulary_list", "identity", "hash", "cross", "text")
MODEL_KINDS = ("supervised", "two_tower", "skipgram")
NORMALIZERS = ("zscore", "log", "minmax", "none")
TASKS = ("regression", "classification")
LABEL_TRANSFORMS = ("none", "log")
OPTIMIZERS = ("adam", "adagrad", "sgd")
SOFTMAX = ("in_batch", "full")
SOLVERS = ("auto", "gradient", "als")
QUERY_ENCODERS = ("mean", "attention")


@dataclasses.dataclass(frozen=True)
class RowFilter:
    """Keeps rows whose `column` is within [min, max] (numbers) or among `values` (categories)."""
    column: str
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        return not self.values

    def describe(self) -> str:
        """How rows are counted out: "trip_miles outside [0.5, inf]", "payment_type not in [...]"."""
        if self.values:
            return f"{self.column} not in {list(self.values)}"
        low = "-inf" if self.min is None else f"{self.min:g}"
        high = "inf" if self.max is None else f"{self.max:g}"
        return f"{self.column} outside [{low}, {high}]"


@dataclasses.dataclass(frozen=True)
class InputConfig:
    path: str
    format: str
    delimiter: str = ","
    text_column: str = "text"
    max_invalid_fraction: float = 0.01
    time_zone: str = "UTC"
    filters: tuple[RowFilter, ...] = ()


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Deterministic split: by hash of `key` columns (whole record if empty) or by a flag `column`."""
    eval_fraction: float = 0.1
    key: tuple[str, ...] = ()
    column: str | None = None


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    name: str
    type: str
    column: str
    top_k: int | None = None
    frequency_threshold: int | None = None
    num_oov_buckets: int = 1
    values: tuple[str, ...] = ()
    num_buckets: int | None = None
    hash_buckets: int | None = None
    columns: tuple[str, ...] = ()
    normalize: str = "zscore"
    bucketize: int | None = None
    delimiter: str | None = None
    exact: bool = False

    @property
    def references(self) -> tuple[str, ...]:
        """What the feature reads: columns, or date parts of columns ("time.hour")."""
        return self.columns if self.type == "cross" else (self.column,)

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """Raw input columns this feature reads (a date part's timestamp column)."""
        return tuple(dict.fromkeys(split_reference(reference)[0] for reference in self.references))

    @property
    def timestamp_columns(self) -> tuple[str, ...]:
        """Raw columns it reads date parts of."""
        return tuple(dict.fromkeys(base for base, part in map(split_reference, self.references) if part))

    @property
    def key_is_raw_value(self) -> bool:
        """Whether an entity key is the raw value of the feature's one column (not a cross's joined
        parts, not a date part)."""
        return self.type != "cross" and not self.timestamp_columns

    @property
    def is_categorical(self) -> bool:
        """True when the transformed feature is an integer id that can be embedded."""
        return self.type in CATEGORICAL_TYPES or (self.type == "numeric" and self.bucketize is not None)

    @property
    def uses_vocabulary_file(self) -> bool:
        return self.type in ("vocabulary", "text") or (self.type == "cross" and self.exact)

    @property
    def is_hashed(self) -> bool:
        """Whether different keys may share a row (hash buckets)."""
        return self.type == "hash" or (self.type == "cross" and not self.exact)

    @property
    def rows_bound(self) -> int | None:
        """Most rows its embedding table can have, when the config alone says (None: a vocabulary
        without `top_k`, whose size only preprocessing knows)."""
        if self.is_hashed:
            return self.hash_buckets
        if self.type == "identity":
            return self.num_buckets + 1
        if self.type == "vocabulary_list":
            return len(self.values) + self.num_oov_buckets
        if self.type == "numeric":
            return self.bucketize
        return None if self.top_k is None else self.top_k + self.num_oov_buckets


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    kind: str
    embedding_dim: int = 32
    embeddings: Mapping[str, int] = dataclasses.field(default_factory=dict)
    query: tuple[str, ...] = ()
    candidate: tuple[str, ...] = ()
    label: str | None = None
    task: str = "regression"
    label_transform: str = "none"
    epochs: int = 10
    batch_size: int = 1024
    learning_rate: float = 0.01
    optimizer: str = "adam"
    hidden_units: tuple[int, ...] = (64, 32)
    early_stopping_patience: int = 0
    seed: int = 42
    temperature: float = 0.2
    sampling_correction: bool = True
    softmax: str = "in_batch"
    solver: str = "gradient"
    als_l2: float = 5.0
    window: int = 5
    negatives: int = 5
    subsample: float = 1e-3
    l2: float = 0.0
    query_history: int = 0
    history_order: str | None = None
    query_encoder: str = "mean"
    history_decay: float = 1.0
    attention_blocks: int = 1
    attention_heads: int = 1
    attention_dropout: float = 0.2
    eval_max_examples: int = 20000
    ablation: tuple[str, ...] = ()

    @property
    def tower_history(self) -> int:
        """History length the query tower reads: `query_history` under gradient training; 0 under ALS,
        which solves each query's vector from its history instead (`trainer/als.py`)."""
        return self.query_history if self.solver == "gradient" else 0

    def dim_of(self, feature: str) -> int:
        """Embedding dimension of `feature`: its own setting, else the default."""
        return int(self.embeddings.get(feature, self.embedding_dim))


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    """Initial embedding rows from an earlier run (a run dir, `<output>/LATEST`) or a vector file.

    Attributes:
        source: the run or file.
        features: features to warm-start (empty: every embedded feature the source has).
        freeze: warm-started features whose rows stay fixed during training.
    """
    source: str
    features: tuple[str, ...] = ()
    freeze: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SideTableConfig:
    """Readable columns joined onto an entity's vectors from another table, by key.

    Attributes:
        path: a CSV, Parquet or JSON-lines file (or glob), on any filesystem.
        key: the side table's column holding the entity key.
        columns: its columns to publish.
        format: csv, parquet or jsonl (default: from the file name).
    """
    path: str
    key: str
    columns: tuple[str, ...]
    format: str


@dataclasses.dataclass(frozen=True)
class EntityConfig:
    name: str
    key: str
    metadata: tuple[str, ...] = ()
    metadata_from: SideTableConfig | None = None


@dataclasses.dataclass(frozen=True)
class SequencesConfig:
    """An event log read as item sequences (item2vec): one token document per session.

    Attributes:
        group_by: column grouping the events (a user).
        order_by: column ordering a group's events: a number (Unix seconds) or an ISO 8601 date-time.
        item: column of the item id; the config's one feature is the vocabulary of this column.
        max_gap: a gap between consecutive events larger than this (order_by units; seconds for
            date-times) starts a new session; None: one session per group.
        min_length: sessions with fewer events are dropped (counted).
        max_group_events: a group keeps its newest this many events (the older ones are counted).
    """
    group_by: str
    order_by: str
    item: str
    max_gap: float | None = None
    min_length: int = 2
    max_group_events: int = 10_000

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.group_by, self.order_by, self.item)


@dataclasses.dataclass(frozen=True)
class GraphConfig:
    """An edge list read as a graph (DeepWalk / node2vec): random walks are the token documents.

    Attributes:
        source, target: columns of each edge's node ids.
        directed: walks follow edges from source to target only.
        weight: column of positive edge weights (walks step in proportion); None: unweighted.
        walks_per_node: walks starting at every node.
        walk_length: nodes per walk (fewer when a directed walk reaches a node without out-edges).
        p, q: node2vec's return and in-out parameters (1, 1: DeepWalk's uniform walks).
    """
    source: str
    target: str
    directed: bool = False
    weight: str | None = None
    walks_per_node: int = 10
    walk_length: int = 40
    p: float = 1.0
    q: float = 1.0

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.source, self.target) + ((self.weight,) if self.weight else ())

    @property
    def biased(self) -> bool:
        """Whether walks are second-order (node2vec) rather than uniform."""
        return self.p != 1.0 or self.q != 1.0


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    input: InputConfig
    split: SplitConfig
    features: Mapping[str, FeatureConfig]
    model: ModelConfig
    entities: tuple[EntityConfig, ...]
    output: str
    warm_start: WarmStartConfig | None = None
    align_to: str | None = None
    sequences: SequencesConfig | None = None
    graph: GraphConfig | None = None

    @property
    def discrete(self) -> SequencesConfig | GraphConfig | None:
        """The input shape whose token documents the preprocess stage builds (sequences or a graph)."""
        return self.sequences or self.graph

    @property
    def label_column(self) -> str | None:
        return self.model.label if self.model.kind == "supervised" else None

    @property
    def text_features(self) -> tuple[str, ...]:
        """Names of the `text` features (a skip-gram model has exactly one: its words)."""
        return tuple(name for name, feature in self.features.items() if feature.type == "text")

    @property
    def token_feature(self) -> str | None:
        """The feature skip-gram trains on: the one feature of a sequences or graph config (its items or
        nodes), else the one text feature; None for other model kinds."""
        if self.model.kind != "skipgram":
            return None
        return next(iter(self.features)) if self.discrete else self.text_features[0]

    @property
    def embedded_features(self) -> tuple[str, ...]:
        """Names of the features that get an embedding table."""
        return tuple(name for name, feature in self.features.items() if feature.is_categorical)

    def tower_of(self, feature: str) -> str | None:
        """`query` or `candidate` for a two-tower feature, else None."""
        if self.model.kind != "two_tower":
            return None
        if feature in self.model.query:
            return "query"
        return "candidate" if feature in self.model.candidate else None

    def entity_feature_columns(self, entity: EntityConfig) -> tuple[str, ...]:
        """Raw columns whose values the embed job needs to compute this entity's vector."""
        tower = self.tower_of(entity.key)
        names = getattr(self.model, tower) if tower else (entity.key,)
        seen: dict[str, None] = {}
        for name in names:
            for column in self.features[name].raw_columns:
                seen.setdefault(column, None)
        return tuple(seen)

    def raw_columns(self) -> tuple[str, ...]:
        """Every raw input column the job reads, in a stable order (a graph's node feature reads none
        itself: its documents are walks over the source and target columns)."""
        seen: dict[str, None] = {}
        shape = self.discrete.columns if self.discrete else [c for f in self.features.values() for c in f.raw_columns]
        for column in shape:
            seen.setdefault(column, None)
        extra = [self.label_column, self.split.column, *self.split.key, *(f.column for f in self.input.filters)]
        extra += [m for e in self.entities for m in e.metadata]
        for column in extra:
            if column:
                seen.setdefault(column, None)
        return tuple(seen)
