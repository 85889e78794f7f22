"""YAML -> `Config`: every key validated once, before any work starts; errors name the key.

The accepted keys are those of DESIGN.md plus the additions documented in docs/config.md.
Anything else is a `ConfigError` that names the key (and suggests the closest known one).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any, Mapping

from pipelines.core.config import (FEATURE_TYPES, INPUT_FORMATS, LABEL_TRANSFORMS, MODEL_KINDS, NORMALIZERS,
                                   OPTIMIZERS, QUERY_ENCODERS, SOFTMAX, SOLVERS, TASKS, Config, EntityConfig, FeatureConfig,
                                   GraphConfig, InputConfig, ModelConfig, RowFilter, SequencesConfig, SideTableConfig,
                                   SplitConfig, WarmStartConfig)
from pipelines.core.config_yaml import Section, parse_yaml, shown
from pipelines.core.dates import check_zone, split_reference
from pipelines.core.errors import ConfigError

# Feature names become Keras layer and input names, signature names and vocabulary file names.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
ENTITY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
MAX_SEED = 2 ** 31 - 1


# ---------------------------------------------------------------------------- sections

_FEATURE_KEYS = {
    "vocabulary": ("top_k", "frequency_threshold", "num_oov_buckets"),
    "vocabulary_list": ("values", "num_oov_buckets"),
    "identity": ("num_buckets",),
    "hash": ("hash_buckets",),
    "cross": ("columns", "hash_buckets", "exact", "top_k", "frequency_threshold", "num_oov_buckets"),
    "numeric": ("normalize", "bucketize"),
    "text": ("delimiter", "top_k", "frequency_threshold", "num_oov_buckets"),
}


def _parse_input(section: Section) -> InputConfig:
    section.check_keys(("path", "format", "delimiter", "text_column", "max_invalid_fraction", "time_zone", "filters"))
    time_zone = section.get("time_zone", str, "UTC")
    try:
        check_zone(time_zone)
    except ValueError as error:
        raise ConfigError(f"{section.key('time_zone')}: {error}") from None
    fraction = section.get("max_invalid_fraction", float, InputConfig.max_invalid_fraction)
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
        time_zone=time_zone,
        filters=_parse_filters(section.get("filters", list, []), section.key("filters")),
    )


def _parse_filters(items: list, path: str) -> tuple[RowFilter, ...]:
    filters = []
    for index, item in enumerate(items):
        section = Section(item, f"{path}[{index}]")
        section.check_keys(("column", "min", "max", "values"))
        values = section.get("values", list, [])
        low, high = section.get("min", float), section.get("max", float)
        if values and (low is not None or high is not None):
            raise ConfigError(f"{section.key('values')}: a filter has values or a range (min, max), not both")
        if not values and low is None and high is None:
            raise ConfigError(f"{section.path}: give min, max or values")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{section.key('min')}: {low:g} is above max {high:g}")
        filters.append(RowFilter(section.get("column", str, required=True), low, high, tuple(map(str, values))))
    return tuple(filters)


def _parse_split(section: Section) -> SplitConfig:
    section.check_keys(("eval_fraction", "key", "column"))
    column = section.get("column", str)
    fraction = section.get("eval_fraction", float, 0.1)
    if column and ("key" in section.data or "eval_fraction" in section.data):
        raise ConfigError(f"{section.key('column')}: cannot be combined with split.key or split.eval_fraction")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{section.key('eval_fraction')}: must be between 0 and 1 (exclusive), got {fraction}")
    return SplitConfig(eval_fraction=fraction, key=section.names("key"), column=column)


def _parse_feature(name: str, section: Section) -> FeatureConfig:
    kind = section.choice("type", FEATURE_TYPES)
    section.check_keys(("type", "column") + _FEATURE_KEYS[kind])
    fields: dict[str, Any] = {"name": name, "type": kind, "column": section.get("column", str, name)}
    exact = kind == "cross" and section.get("exact", bool, False)
    vocabulary_keys = ("top_k", "frequency_threshold", "num_oov_buckets")
    if kind == "cross" and not exact:
        for key in vocabulary_keys:
            if key in section.data:
                raise ConfigError(f"{section.key(key)}: only for an exact cross (exact: true, a vocabulary of the "
                                  "joined values)")
    if kind in ("vocabulary", "text") or exact:
        fields["top_k"] = section.positive_int("top_k")
        fields["frequency_threshold"] = section.positive_int("frequency_threshold")
    if kind in ("vocabulary", "text", "vocabulary_list") or exact:
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
    if kind == "hash" or (kind == "cross" and not exact):
        fields["hash_buckets"] = section.positive_int("hash_buckets", required=True)
    elif "hash_buckets" in section.data:
        raise ConfigError(f"{section.key('hash_buckets')}: an exact cross has a vocabulary, not hash buckets")
    if kind == "cross":
        columns = section.names("columns")
        if len(columns) < 2:
            raise ConfigError(f"{section.key('columns')}: a cross needs two or more columns")
        fields["columns"] = columns
        fields["exact"] = exact
    parts = [r for r in (fields.get("columns") or (fields["column"],)) if split_reference(r)[1]]
    if parts and kind not in ("vocabulary", "vocabulary_list", "hash", "cross"):
        raise ConfigError(f"{section.key('column')}: a date part ({parts[0]}) is a category: use it in a "
                          "vocabulary, vocabulary_list, hash or cross feature")
    if kind == "numeric":
        fields["normalize"] = section.choice("normalize", NORMALIZERS, "zscore")
        fields["bucketize"] = section.positive_int("bucketize", minimum=2)
    if kind == "text":
        delimiter = section.get("delimiter", str)
        if delimiter == "":
            raise ConfigError(f"{section.key('delimiter')}: must not be empty (omit it to split on whitespace)")
        fields["delimiter"] = delimiter
    return FeatureConfig(**fields)


def _parse_model(section: Section, features: Mapping[str, FeatureConfig], shape: str | None) -> ModelConfig:
    section.check_keys(tuple(f.name for f in dataclasses.fields(ModelConfig)))
    kind = section.choice("kind", MODEL_KINDS)
    defaults = {"embedding_dim": 32, "hidden_units": [64, 32], "epochs": 10, "batch_size": 1024,
                "learning_rate": 0.01, "l2": 0.0, "early_stopping_patience": 0}
    query, candidate = section.names("query"), section.names("candidate")
    embeddings = section.get("embeddings", dict, {})
    solver = _solver(section, kind, query, candidate, embeddings)
    if kind == "two_tower":
        # Chosen by the validation sweep in the README (Models); epochs is a bound, early stopping ends training.
        defaults.update({"embedding_dim": 64, "hidden_units": [], "epochs": 30, "batch_size": 512,
                         "learning_rate": 0.005, "l2": 0.1, "early_stopping_patience": 3})
    if solver == "als":
        # Sweeps converge slowly and the validation HR of one sweep is noisy: no early stopping.
        defaults.update({"epochs": 40, "early_stopping_patience": 0})
    for feature, dim in embeddings.items():
        if feature not in features:
            raise ConfigError(f"{section.key('embeddings')}.{feature}: not a configured feature")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ConfigError(f"{section.key('embeddings')}.{feature}: must be a positive integer, got {shown(dim)}")
    hidden = section.get("hidden_units", list, defaults["hidden_units"])
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ConfigError(f"{section.key('hidden_units')}: expected a list of positive integers, got {shown(hidden)}")
    model = ModelConfig(
        kind=kind,
        embedding_dim=section.positive_int("embedding_dim", defaults["embedding_dim"]),
        embeddings=dict(embeddings),
        query=query,
        candidate=candidate,
        label=section.get("label", str),
        task=section.choice("task", TASKS, "regression"),
        label_transform=section.choice("label_transform", LABEL_TRANSFORMS, "none"),
        epochs=section.positive_int("epochs", defaults["epochs"]),
        batch_size=section.positive_int("batch_size", defaults["batch_size"]),
        learning_rate=section.get("learning_rate", float, defaults["learning_rate"]),
        optimizer=section.choice("optimizer", OPTIMIZERS, "adam"),
        hidden_units=tuple(hidden),
        early_stopping_patience=section.positive_int("early_stopping_patience", defaults["early_stopping_patience"],
                                                    minimum=0),
        seed=section.positive_int("seed", 42, minimum=0),
        temperature=section.get("temperature", float, 0.2),
        sampling_correction=section.get("sampling_correction", bool, True),
        softmax=section.choice("softmax", SOFTMAX, "in_batch"),
        solver=solver,
        als_l2=section.get("als_l2", float, ModelConfig.als_l2),
        window=section.positive_int("window", 5),
        negatives=section.positive_int("negatives", 5),
        subsample=section.get("subsample", float, 1e-3),
        l2=section.get("l2", float, defaults["l2"]),
        query_history=section.positive_int("query_history", 0, minimum=0),
        history_order=section.get("history_order", str),
        query_encoder=section.choice("query_encoder", QUERY_ENCODERS, "mean"),
        history_decay=section.get("history_decay", float, HISTORY_DECAY if _ordered_mean_history(section) else 1.0),
        attention_blocks=section.positive_int("attention_blocks", 1),
        attention_heads=section.positive_int("attention_heads", 1),
        attention_dropout=section.get("attention_dropout", float, 0.2),
        eval_max_examples=section.positive_int("eval_max_examples", 20000),
        ablation=section.names("ablation"),
    )
    if model.seed > MAX_SEED:
        raise ConfigError(f"{section.key('seed')}: must be at most {MAX_SEED}, got {model.seed}")
    if model.learning_rate <= 0 or not math.isfinite(model.learning_rate):
        raise ConfigError(f"{section.key('learning_rate')}: must be a positive number")
    if not 0 < model.subsample <= 1:
        raise ConfigError(f"{section.key('subsample')}: must be in (0, 1] (1 keeps every token)")
    if model.l2 < 0:
        raise ConfigError(f"{section.key('l2')}: must be >= 0")
    if model.als_l2 <= 0 or not math.isfinite(model.als_l2):
        raise ConfigError(f"{section.key('als_l2')}: must be a positive number")
    if not 0 < model.history_decay <= 1:
        raise ConfigError(f"{section.key('history_decay')}: must be in (0, 1] (1 weighs every history item alike)")
    if model.temperature <= 0:
        raise ConfigError(f"{section.key('temperature')}: must be a positive number")
    if not 0 <= model.attention_dropout < 1:
        raise ConfigError(f"{section.key('attention_dropout')}: must be in [0, 1)")
    if model.embedding_dim % model.attention_heads:
        raise ConfigError(f"{section.key('attention_heads')}: must divide model.embedding_dim "
                          f"({model.embedding_dim}), got {model.attention_heads}")
    _check_model_features(section, model, features, shape)
    return model


# Settings only gradient training reads: naming one asks for it (`solver: auto`).
GRADIENT_SETTINGS = ("batch_size", "learning_rate", "optimizer", "l2", "temperature", "sampling_correction", "softmax")
# The weight of a history item relative to the next newer one, with an order: chosen on the
# validation split (README, Models: "How `history_decay` and the example's model were chosen").
HISTORY_DECAY = 0.9


def _ordered_mean_history(section: Section) -> bool:
    """Whether the config orders the history and reads it with the mean encoder (whose items can be aged)."""
    return bool(section.data.get("history_order")) and section.data.get("query_encoder") != "attention"


def _solver(section: Section, kind: str, query: tuple[str, ...], candidate: tuple[str, ...],
            embeddings: Mapping[str, Any]) -> str:
    """`model.solver` resolved: `auto` is als for a plain factorisation (one id feature a tower, no
    hidden layers or per-feature dimension of those ids, no history or an ordered one read by the mean
    encoder) that names no gradient setting, else gradient."""
    data = section.data
    if data.get("solver") is not None and kind != "two_tower":
        raise ConfigError(f"{section.key('solver')}: only two_tower models choose a solver (got kind {kind})")
    solver = section.choice("solver", SOLVERS, "auto")
    # ALS solves a query's vector from its latest items, weighted by age: that needs their order.
    history = not data.get("query_history") or _ordered_mean_history(section)
    plain = kind == "two_tower" and len(query) == len(candidate) == 1 and history and \
        not data.get("hidden_units") and not set(query + candidate) & set(embeddings)
    named = [name for name in GRADIENT_SETTINGS if data.get(name) is not None]
    if solver == "auto":
        solver = "als" if plain and not named else "gradient"
    elif solver == "als" and data.get("query_history") and not data.get("history_order"):
        raise ConfigError(f"{section.key('solver')}: als solves each query's vector from its latest items, weighted "
                          "by age: query_history needs a model.history_order (or set solver: gradient)")
    elif solver == "als" and not plain:
        raise ConfigError(f"{section.key('solver')}: als factorises the query x candidate matrix: it needs one id "
                          "feature in each tower, no hidden_units, no per-feature embeddings dimension for them, and "
                          "no query_history or one with a history_order and the mean encoder")
    elif solver == "als" and named:
        raise ConfigError(f"{section.key('solver')}: als does not read {', '.join(named)} (gradient settings); "
                          "its regularisation is model.als_l2")
    if solver != "als" and data.get("als_l2") is not None:
        raise ConfigError(f"{section.key('als_l2')}: only for solver als, and this model trains by gradient "
                          f"({'it names ' + ', '.join(named) if named else 'not a plain factorisation'})")
    return solver


def _check_model_features(section: Section, model: ModelConfig, features: Mapping[str, FeatureConfig],
                          shape: str | None) -> None:
    if shape:
        if model.kind != "skipgram":
            raise ConfigError(f"{section.key('kind')}: a {shape} config trains skip-gram over its "
                              f"{_DOCUMENTS[shape]}; set kind: skipgram (got {model.kind!r})")
        return
    if model.kind == "supervised":
        if not model.label:
            raise ConfigError(f"{section.key('label')}: required for a supervised model")
        if model.label in features:
            raise ConfigError(f"{section.key('label')}: {model.label!r} is also a feature; the label must not be an input")
    if section.data.get("history_decay") is not None and (
            model.kind != "two_tower" or not model.history_order or model.query_encoder == "attention"):
        raise ConfigError(f"{section.key('history_decay')}: weighs a two-tower mean encoder's history items by age, "
                          "so it needs model.history_order and query_encoder: mean")
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
    if model.label_transform != "none" and (model.kind != "supervised" or model.task != "regression"):
        raise ConfigError(f"{section.key('label_transform')}: only for a supervised regression")
    for name in model.ablation:
        if model.kind != "supervised" or name not in features or not features[name].is_categorical:
            raise ConfigError(f"{section.key('ablation')}: {name!r} must be an embedded feature of a supervised model")
    if model.kind == "skipgram":
        texts = [f for f in features.values() if f.type == "text"]
        if len(texts) != 1:
            raise ConfigError(f"{section.key('kind')}: skipgram needs exactly one feature of type text, or a "
                              "sequences or graph section (item or node sequences)")


# ---------------------------------------------------------------------------- sequences and graphs

_DOCUMENTS = {"sequences": "sessions (item2vec)", "graph": "random walks (DeepWalk / node2vec)"}


def _parse_sequences(section: Section) -> SequencesConfig:
    section.check_keys(tuple(f.name for f in dataclasses.fields(SequencesConfig)))
    sequences = SequencesConfig(
        group_by=section.get("group_by", str, required=True),
        order_by=section.get("order_by", str, required=True),
        item=section.get("item", str, required=True),
        max_gap=section.get("max_gap", float),
        min_length=section.positive_int("min_length", 2),
        max_group_events=section.positive_int("max_group_events", 10_000, minimum=2),
    )
    if sequences.max_gap is not None and not (sequences.max_gap > 0 and math.isfinite(sequences.max_gap)):
        raise ConfigError(f"{section.key('max_gap')}: must be a positive number (omit it for one session per "
                          f"group), got {sequences.max_gap}")
    _check_distinct_columns(section, ("group_by", "order_by", "item"), sequences.columns)
    return sequences


def _parse_graph(section: Section) -> GraphConfig:
    section.check_keys(tuple(f.name for f in dataclasses.fields(GraphConfig)))
    graph = GraphConfig(
        source=section.get("source", str, required=True),
        target=section.get("target", str, required=True),
        directed=section.get("directed", bool, False),
        weight=section.get("weight", str),
        walks_per_node=section.positive_int("walks_per_node", 10),
        walk_length=section.positive_int("walk_length", 40, minimum=2),
        p=section.get("p", float, 1.0),
        q=section.get("q", float, 1.0),
    )
    for name in ("p", "q"):
        value = getattr(graph, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{section.key(name)}: must be > 0, got {value}")
    _check_distinct_columns(section, ("source", "target", "weight"), graph.columns)
    return graph


def _check_distinct_columns(section: Section, names: tuple[str, ...], columns: tuple[str, ...]) -> None:
    for index, (name, column) in enumerate(zip(names, columns)):
        if column in columns[:index]:
            other = names[columns.index(column)]
            raise ConfigError(f"{section.key(name)}: {column!r} is already {section.key(other)}; name another column")


def _check_shape(shape: str, spec: SequencesConfig | GraphConfig, features: Mapping[str, FeatureConfig],
                 raw_features: Section, entities: tuple[EntityConfig, ...], split: Section) -> None:
    """What a sequences or graph config needs beyond its own section: one vocabulary feature (the items
    or nodes, read as opaque ids), entities keyed by it, and a split it can apply."""
    what = "item ids" if shape == "sequences" else "node ids"
    example = f"{{{spec.item}: {{type: vocabulary}}}}" if shape == "sequences" else "{node: {type: vocabulary}}"
    feature = next(iter(features.values()))
    if len(features) != 1 or feature.type != "vocabulary":
        got = ", ".join(f"{f.name} ({f.type})" for f in features.values())
        raise ConfigError(f"features: a {shape} config has exactly one feature, a vocabulary of its {what} "
                          f"(features: {example}); got {got}")
    if shape == "sequences" and feature.column != spec.item:
        raise ConfigError(f"sequences.item: {spec.item!r} must be the column of the feature features.{feature.name} "
                          f"(it reads {feature.column!r}); name the feature after the item column (features: {example})")
    if shape == "graph":
        if "column" in raw_features.data[feature.name]:
            raise ConfigError(f"features.{feature.name}.column: a graph's node feature reads graph.source and "
                              "graph.target; remove column")
        for index, entity in enumerate(entities):
            if entity.metadata:
                raise ConfigError(f"entities[{index}].metadata: a graph's nodes have no metadata columns (the "
                                  "input is an edge list: its columns describe edges)")
        for key in ("key", "column"):
            if key in split.data:
                raise ConfigError(f"split.{key}: a graph config holds out whole walks (split.eval_fraction); "
                                  "to hold edges out, leave them out of the input")


def _parse_entities(items: Any, config_features: Mapping[str, FeatureConfig]) -> tuple[EntityConfig, ...]:
    if not isinstance(items, list) or not items:
        raise ConfigError("entities: expected a non-empty list")
    entities = []
    for index, item in enumerate(items):
        section = Section(item, f"entities[{index}]")
        section.check_keys(("name", "key", "metadata", "metadata_from"))
        side = section.get("metadata_from", dict)
        entity = EntityConfig(
            name=section.get("name", str, required=True),
            key=section.get("key", str, required=True),
            metadata=section.names("metadata"),
            metadata_from=None if side is None else _parse_side_table(Section(side, section.key("metadata_from"))),
        )
        if not ENTITY_NAME_PATTERN.match(entity.name):
            raise ConfigError(f"{section.key('name')}: {entity.name!r} must be letters, digits, '_' or '-'")
        feature = config_features.get(entity.key)
        if feature is None:
            raise ConfigError(f"{section.key('key')}: {entity.key!r} is not a configured feature")
        if not feature.is_categorical:
            raise ConfigError(f"{section.key('key')}: {entity.key!r} is numeric; only categorical features are embedded")
        published = list(entity.metadata) + list(entity.metadata_from.columns if entity.metadata_from else ())
        taken = sorted({c for c in published if published.count(c) > 1} | ({"key", "embedding", "count"} & set(published)))
        if taken:
            raise ConfigError(f"{section.key('metadata')}: column {taken[0]!r} would be published twice (metadata "
                              "columns are published beside key, embedding and count)")
        if entity.name in {e.name for e in entities}:
            raise ConfigError(f"{section.key('name')}: duplicate entity name {entity.name!r}")
        entities.append(entity)
    return tuple(entities)


SIDE_TABLE_FORMATS = ("csv", "parquet", "jsonl")


def _parse_side_table(section: Section) -> SideTableConfig:
    section.check_keys(("path", "key", "columns", "format"))
    path = section.get("path", str, required=True)
    guessed = next((f for f in SIDE_TABLE_FORMATS if path.rstrip("*").endswith(f".{f}") or
                    (f == "jsonl" and path.endswith(".json"))), None)
    columns = section.names("columns")
    if not columns:
        raise ConfigError(f"{section.key('columns')}: required (the side table's columns to publish)")
    return SideTableConfig(path=path, key=section.get("key", str, required=True), columns=columns,
                           format=section.choice("format", SIDE_TABLE_FORMATS, guessed or "csv"))


def _parse_warm_start(section: Section, features: Mapping[str, FeatureConfig]) -> WarmStartConfig:
    section.check_keys(("from", "features", "trainable", "freeze"))
    names = section.names("features")
    for key, listed in (("features", names), ("freeze", section.names("freeze"))):
        for name in listed:
            if name not in features or not features[name].is_categorical:
                embedded = sorted(n for n, f in features.items() if f.is_categorical)
                close = difflib.get_close_matches(name, embedded, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"{section.key(key)}: {name!r} is not an embedded feature "
                                  f"({hint}embedded: {', '.join(embedded)})")
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
    root = Section(data, "")
    root.check_keys(("name", "input", "split", "features", "model", "entities", "output", "warm_start",
                     "align_to", "sequences", "graph"))
    name = root.get("name", str, required=True)
    shapes = {key: root.get(key, dict) for key in ("sequences", "graph")}
    if None not in shapes.values():
        raise ConfigError("graph: a config has one input shape; give sequences or graph, not both")
    sequences = None if shapes["sequences"] is None else _parse_sequences(Section(shapes["sequences"], "sequences"))
    graph = None if shapes["graph"] is None else _parse_graph(Section(shapes["graph"], "graph"))
    shape = "sequences" if sequences else "graph" if graph else None
    features_section = Section(root.get("features", dict, required=True), "features")
    if not features_section.data:
        raise ConfigError("features: at least one feature is required")
    _check_feature_names([str(n) for n in features_section.data])
    features = {str(n): _parse_feature(str(n), Section(spec, f"features.{n}"))
                for n, spec in features_section.data.items()}
    model = _parse_model(Section(root.get("model", dict, required=True), "model"), features, shape)
    if model.kind == "supervised" and model.label in {c for f in features.values() for c in f.raw_columns}:
        raise ConfigError(f"model.label: column {model.label!r} is also read by a feature")
    input_config = _parse_input(Section(root.get("input", dict, required=True), "input"))
    split_section = Section(root.get("split", dict, {}), "split")
    split = _parse_split(split_section)
    entities = _parse_entities(root.get("entities", list, required=True), features)
    if shape:
        _check_shape(shape, sequences or graph, features, features_section, entities, split_section)
    if sequences and not split.key and not split.column:
        split = dataclasses.replace(split, key=(sequences.group_by,))  # a group's sessions stay in one split
    return Config(
        name=name,
        input=input_config,
        split=split,
        features=features,
        model=model,
        entities=entities,
        output=root.get("output", str, f"runs/{name}"),
        warm_start=(_parse_warm_start(Section(root.get("warm_start", dict), "warm_start"), features)
                    if root.get("warm_start", dict) else None),
        align_to=root.get("align_to", str),
        sequences=sequences,
        graph=graph,
    )


def _check_feature_names(names: list[str]) -> None:
    folded: dict[str, str] = {}
    for name in names:
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"features.{name}: a feature name is a letter followed by letters, digits or '_' "
                              f"(read a column named {name!r} with `column: {name!r}` under another name)")
        if name.startswith("_") or name.lower() in folded:
            other = folded.get(name.lower())
            raise ConfigError(f"features.{name}: differs from feature {other!r} only in letter case; their "
                              "vocabulary files would collide on case-insensitive filesystems")
        folded[name.lower()] = name


def load_config(path: str) -> tuple[Config, dict]:
    """Reads a YAML config file.

    Returns:
        The validated config and the raw mapping (recorded in the run's manifest).
    """
    from pipelines.core import fs
    try:
        text = fs.read_text(path)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(f"{path}: cannot read config ({reason})") from None
    data = parse_yaml(text, path)
    return config_from_dict(data), data
