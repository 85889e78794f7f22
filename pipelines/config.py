"""The job config: YAML -> frozen dataclasses, validated once, errors naming the key.

The accepted keys are exactly those of DESIGN.md plus the few documented in the README
(`input.delimiter`, `input.text_column`, `input.max_invalid_fraction`, `split.column`, the
model's optimisation settings). Anything else is a `ConfigError` that names the key.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import yaml

INPUT_FORMATS = ("csv", "parquet", "jsonl", "tfrecord", "text")
FEATURE_TYPES = ("vocabulary", "vocabulary_list", "identity", "hash", "cross", "numeric", "text")
CATEGORICAL_TYPES = ("vocabulary", "vocabulary_list", "identity", "hash", "cross", "text")
MODEL_KINDS = ("supervised", "two_tower", "skipgram")
NORMALIZERS = ("zscore", "minmax", "none")
TASKS = ("regression", "classification")
OPTIMIZERS = ("adam", "adagrad", "sgd")
SOFTMAX = ("in_batch", "full")
QUERY_ENCODERS = ("mean", "attention")


class ConfigError(ValueError):
    """A config value is missing, unknown or impossible; the message names the key."""


@dataclasses.dataclass(frozen=True)
class InputConfig:
    path: str
    format: str
    delimiter: str = ","
    text_column: str = "text"
    max_invalid_fraction: float = 0.01


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

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """Raw input columns this feature reads."""
        return self.columns if self.type == "cross" else (self.column,)

    @property
    def is_categorical(self) -> bool:
        """True when the transformed feature is an integer id that can be embedded."""
        return self.type in CATEGORICAL_TYPES or (self.type == "numeric" and self.bucketize is not None)

    @property
    def uses_vocabulary_file(self) -> bool:
        return self.type in ("vocabulary", "text")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    kind: str
    embedding_dim: int = 32
    embeddings: Mapping[str, int] = dataclasses.field(default_factory=dict)
    query: tuple[str, ...] = ()
    candidate: tuple[str, ...] = ()
    label: str | None = None
    task: str = "regression"
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
    window: int = 5
    negatives: int = 5
    subsample: float = 1e-3
    l2: float = 0.0
    query_history: int = 0
    history_order: str | None = None
    query_encoder: str = "mean"
    attention_blocks: int = 1
    attention_heads: int = 1
    attention_dropout: float = 0.2
    eval_max_examples: int = 20000

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
class EntityConfig:
    name: str
    key: str
    metadata: tuple[str, ...] = ()


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

    @property
    def label_column(self) -> str | None:
        return self.model.label if self.model.kind == "supervised" else None

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
        """Every raw column the job reads, in a stable order."""
        seen: dict[str, None] = {}
        for feature in self.features.values():
            for column in feature.raw_columns:
                seen.setdefault(column, None)
        extra = [self.label_column, self.split.column, *self.split.key]
        extra += [m for e in self.entities for m in e.metadata]
        for column in extra:
            if column:
                seen.setdefault(column, None)
        return tuple(seen)


# ---------------------------------------------------------------------------- parsing helpers


class _Section:
    """Reads one mapping of the YAML, remembering its path for error messages."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
        self.data = dict(data)
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for name in self.data:
            if name not in allowed:
                raise ConfigError(f"{self.key(str(name))}: unknown key (allowed: {', '.join(allowed)})")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if name not in self.data or self.data[name] is None:
            if required:
                raise ConfigError(f"{self.key(name)}: required")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kind)}, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.get(name, str, default, required=default is None)
        if value not in choices:
            raise ConfigError(f"{self.key(name)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def positive_int(self, name: str, default: int | None = None, required: bool = False,
                     minimum: int = 1) -> int | None:
        value = self.get(name, int, default, required)
        if value is not None and value < minimum:
            raise ConfigError(f"{self.key(name)}: must be >= {minimum}, got {value}")
        return value

    def names(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(name, (list, str), None)
        if value is None:
            return default
        items = [value] if isinstance(value, str) else value
        if not all(isinstance(item, str) and item for item in items):
            raise ConfigError(f"{self.key(name)}: expected a list of names, got {value!r}")
        return tuple(items)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "list": "a list",
                        "dict": "a mapping", "bool": "true/false"}.get(k.__name__, k.__name__) for k in kinds)


# ---------------------------------------------------------------------------- sections

_FEATURE_KEYS = {
    "vocabulary": ("top_k", "frequency_threshold", "num_oov_buckets"),
    "vocabulary_list": ("values", "num_oov_buckets"),
    "identity": ("num_buckets",),
    "hash": ("hash_buckets",),
    "cross": ("columns", "hash_buckets"),
    "numeric": ("normalize", "bucketize"),
    "text": ("delimiter", "top_k", "frequency_threshold", "num_oov_buckets"),
}


def _parse_input(section: _Section) -> InputConfig:
    section.check_keys(("path", "format", "delimiter", "text_column", "max_invalid_fraction"))
    fraction = section.get("max_invalid_fraction", float, 0.01)
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"{section.key('max_invalid_fraction')}: must be between 0 and 1, got {fraction}")
    delimiter = section.get("delimiter", str, ",")
    if len(delimiter) != 1:
        raise ConfigError(f"{section.key('delimiter')}: must be one character, got {delimiter!r}")
    return InputConfig(
        path=section.get("path", str, required=True),
        format=section.choice("format", INPUT_FORMATS),
        delimiter=delimiter,
        text_column=section.get("text_column", str, "text"),
        max_invalid_fraction=fraction,
    )


def _parse_split(section: _Section) -> SplitConfig:
    section.check_keys(("eval_fraction", "key", "column"))
    column = section.get("column", str)
    fraction = section.get("eval_fraction", float, 0.1)
    if column and ("key" in section.data or "eval_fraction" in section.data):
        raise ConfigError(f"{section.key('column')}: cannot be combined with split.key or split.eval_fraction")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{section.key('eval_fraction')}: must be between 0 and 1 (exclusive), got {fraction}")
    return SplitConfig(eval_fraction=fraction, key=section.names("key"), column=column)


def _parse_feature(name: str, section: _Section) -> FeatureConfig:
    kind = section.choice("type", FEATURE_TYPES)
    section.check_keys(("type", "column") + _FEATURE_KEYS[kind])
    fields: dict[str, Any] = {"name": name, "type": kind, "column": section.get("column", str, name)}
    if kind in ("vocabulary", "text"):
        fields["top_k"] = section.positive_int("top_k")
        fields["frequency_threshold"] = section.positive_int("frequency_threshold")
    if kind in ("vocabulary", "text", "vocabulary_list"):
        fields["num_oov_buckets"] = section.positive_int("num_oov_buckets", 1)
    if kind == "vocabulary_list":
        values = section.get("values", list, required=True)
        if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{section.key('values')}: expected a non-empty list of strings")
        if len(set(map(str, values))) != len(values):
            raise ConfigError(f"{section.key('values')}: values must be distinct")
        fields["values"] = tuple(str(v) for v in values)
    if kind == "identity":
        fields["num_buckets"] = section.positive_int("num_buckets", required=True)
    if kind in ("hash", "cross"):
        fields["hash_buckets"] = section.positive_int("hash_buckets", required=True)
    if kind == "cross":
        columns = section.names("columns")
        if len(columns) < 2:
            raise ConfigError(f"{section.key('columns')}: a cross needs two or more columns")
        fields["columns"] = columns
    if kind == "numeric":
        fields["normalize"] = section.choice("normalize", NORMALIZERS, "zscore")
        fields["bucketize"] = section.positive_int("bucketize", minimum=2)
    if kind == "text":
        delimiter = section.get("delimiter", str)
        if delimiter == "":
            raise ConfigError(f"{section.key('delimiter')}: must not be empty (omit it to split on whitespace)")
        fields["delimiter"] = delimiter
    return FeatureConfig(**fields)


def _parse_model(section: _Section, features: Mapping[str, FeatureConfig]) -> ModelConfig:
    section.check_keys(tuple(f.name for f in dataclasses.fields(ModelConfig)))
    kind = section.choice("kind", MODEL_KINDS)
    defaults = {"embedding_dim": 32, "hidden_units": [64, 32], "epochs": 10, "batch_size": 1024,
                "learning_rate": 0.01, "l2": 0.0, "early_stopping_patience": 0}
    if kind == "two_tower":
        # Chosen by the validation sweep in the README (Models); epochs is a bound, early stopping ends training.
        defaults.update({"embedding_dim": 64, "hidden_units": [], "epochs": 30, "batch_size": 512,
                         "learning_rate": 0.005, "l2": 0.1, "early_stopping_patience": 3})
    embeddings = section.get("embeddings", dict, {})
    for feature, dim in embeddings.items():
        if feature not in features:
            raise ConfigError(f"{section.key('embeddings')}.{feature}: not a configured feature")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ConfigError(f"{section.key('embeddings')}.{feature}: must be a positive integer, got {dim!r}")
    hidden = section.get("hidden_units", list, defaults["hidden_units"])
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ConfigError(f"{section.key('hidden_units')}: expected a list of positive integers, got {hidden!r}")
    model = ModelConfig(
        kind=kind,
        embedding_dim=section.positive_int("embedding_dim", defaults["embedding_dim"]),
        embeddings=dict(embeddings),
        query=section.names("query"),
        candidate=section.names("candidate"),
        label=section.get("label", str),
        task=section.choice("task", TASKS, "regression"),
        epochs=section.positive_int("epochs", defaults["epochs"]),
        batch_size=section.positive_int("batch_size", defaults["batch_size"]),
        learning_rate=section.get("learning_rate", float, defaults["learning_rate"]),
        optimizer=section.choice("optimizer", OPTIMIZERS, "adam"),
        hidden_units=tuple(hidden),
        early_stopping_patience=section.positive_int("early_stopping_patience", defaults["early_stopping_patience"],
                                                    minimum=0),
        seed=section.get("seed", int, 42),
        temperature=section.get("temperature", float, 0.2),
        sampling_correction=section.get("sampling_correction", bool, True),
        softmax=section.choice("softmax", SOFTMAX, "in_batch"),
        window=section.positive_int("window", 5),
        negatives=section.positive_int("negatives", 5),
        subsample=section.get("subsample", float, 1e-3),
        l2=section.get("l2", float, defaults["l2"]),
        query_history=section.positive_int("query_history", 0, minimum=0),
        history_order=section.get("history_order", str),
        query_encoder=section.choice("query_encoder", QUERY_ENCODERS, "mean"),
        attention_blocks=section.positive_int("attention_blocks", 1),
        attention_heads=section.positive_int("attention_heads", 1),
        attention_dropout=section.get("attention_dropout", float, 0.2),
        eval_max_examples=section.positive_int("eval_max_examples", 20000),
    )
    if model.learning_rate <= 0 or not math.isfinite(model.learning_rate):
        raise ConfigError(f"{section.key('learning_rate')}: must be a positive number")
    if not 0 < model.subsample <= 1:
        raise ConfigError(f"{section.key('subsample')}: must be in (0, 1] (1 keeps every token)")
    if model.l2 < 0:
        raise ConfigError(f"{section.key('l2')}: must be >= 0")
    if model.temperature <= 0:
        raise ConfigError(f"{section.key('temperature')}: must be a positive number")
    if not 0 <= model.attention_dropout < 1:
        raise ConfigError(f"{section.key('attention_dropout')}: must be in [0, 1)")
    if model.embedding_dim % model.attention_heads:
        raise ConfigError(f"{section.key('attention_heads')}: must divide model.embedding_dim "
                          f"({model.embedding_dim}), got {model.attention_heads}")
    _check_model_features(section, model, features)
    return model


def _check_model_features(section: _Section, model: ModelConfig, features: Mapping[str, FeatureConfig]) -> None:
    if model.kind == "supervised":
        if not model.label:
            raise ConfigError(f"{section.key('label')}: required for a supervised model")
        if model.label in features:
            raise ConfigError(f"{section.key('label')}: {model.label!r} is also a feature; the label must not be an input")
    if model.kind == "two_tower":
        for tower in ("query", "candidate"):
            names = getattr(model, tower)
            if not names:
                raise ConfigError(f"{section.key(tower)}: required for a two_tower model")
            for name in names:
                if name not in features:
                    raise ConfigError(f"{section.key(tower)}: {name!r} is not a configured feature")
            if not features[names[0]].is_categorical or features[names[0]].type == "text":
                raise ConfigError(f"{section.key(tower)}: the first feature ({names[0]!r}) must be the "
                                  "tower's id feature (vocabulary, vocabulary_list, identity or hash)")
        order = model.history_order
        if order and (order not in features or features[order].type != "numeric" or features[order].bucketize):
            raise ConfigError(f"{section.key('history_order')}: {order!r} must be a numeric feature (not bucketized)")
        if order and not model.query_history:
            raise ConfigError(f"{section.key('history_order')}: needs model.query_history")
        if model.query_encoder == "attention" and not model.query_history:
            raise ConfigError(f"{section.key('query_encoder')}: attention needs model.query_history (its length)")
        shared = set(model.query) & set(model.candidate)
        if shared:
            raise ConfigError(f"{section.key('candidate')}: {sorted(shared)} also in model.query")
    if model.kind == "skipgram":
        texts = [f for f in features.values() if f.type == "text"]
        if len(texts) != 1:
            raise ConfigError(f"{section.key('kind')}: skipgram needs exactly one feature of type text")


def _parse_entities(items: Any, config_features: Mapping[str, FeatureConfig]) -> tuple[EntityConfig, ...]:
    if not isinstance(items, list) or not items:
        raise ConfigError("entities: expected a non-empty list")
    entities = []
    for index, item in enumerate(items):
        section = _Section(item, f"entities[{index}]")
        section.check_keys(("name", "key", "metadata"))
        entity = EntityConfig(
            name=section.get("name", str, required=True),
            key=section.get("key", str, required=True),
            metadata=section.names("metadata"),
        )
        if not entity.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{section.key('name')}: {entity.name!r} must be letters, digits, '_' or '-'")
        feature = config_features.get(entity.key)
        if feature is None:
            raise ConfigError(f"{section.key('key')}: {entity.key!r} is not a configured feature")
        if not feature.is_categorical:
            raise ConfigError(f"{section.key('key')}: {entity.key!r} is numeric; only categorical features are embedded")
        if entity.name in {e.name for e in entities}:
            raise ConfigError(f"{section.key('name')}: duplicate entity name {entity.name!r}")
        entities.append(entity)
    return tuple(entities)


def _parse_warm_start(section: _Section, features: Mapping[str, FeatureConfig]) -> WarmStartConfig:
    section.check_keys(("from", "features", "trainable", "freeze"))
    names = section.names("features")
    for key, listed in (("features", names), ("freeze", section.names("freeze"))):
        for name in listed:
            if name not in features or not features[name].is_categorical:
                raise ConfigError(f"{section.key(key)}: {name!r} is not an embedded feature")
    freeze = section.names("freeze")
    if not section.get("trainable", bool, True):
        freeze = names or tuple(n for n, f in features.items() if f.is_categorical)
    return WarmStartConfig(source=section.get("from", str, required=True), features=names,
                           freeze=tuple(dict.fromkeys(freeze)))


def config_from_dict(data: Any) -> Config:
    """Builds and validates a `Config` from the parsed YAML mapping.

    Raises:
        ConfigError: naming the offending key.
    """
    root = _Section(data, "")
    root.check_keys(("name", "input", "split", "features", "model", "entities", "output", "warm_start",
                     "align_to"))
    name = root.get("name", str, required=True)
    features_section = _Section(root.get("features", dict, required=True), "features")
    if not features_section.data:
        raise ConfigError("features: at least one feature is required")
    features = {str(n): _parse_feature(str(n), _Section(spec, f"features.{n}"))
                for n, spec in features_section.data.items()}
    model = _parse_model(_Section(root.get("model", dict, required=True), "model"), features)
    if model.kind == "supervised" and model.label in {c for f in features.values() for c in f.raw_columns}:
        raise ConfigError(f"model.label: column {model.label!r} is also read by a feature")
    return Config(
        name=name,
        input=_parse_input(_Section(root.get("input", dict, required=True), "input")),
        split=_parse_split(_Section(root.get("split", dict, {}), "split")),
        features=features,
        model=model,
        entities=_parse_entities(root.get("entities", list, required=True), features),
        output=root.get("output", str, f"runs/{name}"),
        warm_start=(_parse_warm_start(_Section(root.get("warm_start", dict), "warm_start"), features)
                    if root.get("warm_start", dict) else None),
        align_to=root.get("align_to", str),
    )


def load_config(path: str) -> tuple[Config, dict]:
    """Reads a YAML config file.

    Returns:
        The validated config and the raw mapping (recorded in the run's manifest).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    return config_from_dict(data), data
