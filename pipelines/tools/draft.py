"""`embedpipe init`: a first config drafted from a sample of the user's own data.

Each column of the sample is profiled (type, missing share, distinct values) and given a feature
type by rules a user can read in the drafted YAML's comments:
- a timestamp (epoch seconds or ISO-8601, or a name saying so) -> the day-of-week x hour cross of
  its date parts, exact (168 keys);
- small non-negative integer codes (at most MAX_IDENTITY values) -> `identity`;
- other numbers -> `numeric` (z-score), except integers whose name says id or code;
- text of several words -> `text`;
- strings and integer ids -> `vocabulary`, with a `frequency_threshold` when many values are rare;
  nearly unique per row (beyond HASH_SHARE of the rows distinct) -> `hash`, its bucket count a power
  of two above HASH_ROOM x the distinct values, so that few keys share a bucket;
- left out, with the reason: constant, mostly missing, unique per row, the label.
Embedding sizes follow the fourth-root rule. An event log (`--sequences`) or an edge list
(`--graph`) gets item2vec or DeepWalk instead: the item or node ids as one vocabulary, skip-gram
settings of the shipped examples, and a batch small enough for about STEPS_PER_EPOCH steps an epoch
on a small file. The draft is validated before it is printed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import yaml

from pipelines.core import dates
from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import UsageError
from pipelines.core.input_files import format_of, match_files, read_sample

SAMPLE_ROWS = 20_000
MAX_IDENTITY = 1000
MOSTLY_MISSING = 0.9
HASH_SHARE = 0.5
HASH_ROOM = 4
RARE_SHARE = 0.3
TEXT_WORDS = 3.0
LIST_SEPARATOR = "|"
STEPS_PER_EPOCH = 20
DOCUMENT_BATCH = 16384
_TIME_NAME = re.compile(r"(time|timestamp|date|datetime|_at|_ts)$", re.I)
_NAME_HINT = re.compile(r"(name|title|label|description)", re.I)
_ID_HINT = re.compile(r"(^id$|_id$|id$|code|key|tract|zip|number$|_no$)", re.I)


@dataclasses.dataclass
class Profile:
    """What a sample says of one column."""
    name: str
    rows: int
    missing: int
    values: list[str]
    kind: str          # "integer", "number", "timestamp", "text", "list", "string", "boolean"
    distinct: int
    once: int          # distinct values seen only once
    low: float = 0.0
    high: float = 0.0

    @property
    def present(self) -> int:
        return self.rows - self.missing


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def profile(name: str, raw: list[Any]) -> Profile:
    """The profile of one column's sampled values."""
    values = [_text(v) for v in raw]
    present = [v for v in values if v != ""]
    counts: dict[str, int] = {}
    for value in present:
        counts[value] = counts.get(value, 0) + 1
    result = Profile(name, len(values), len(values) - len(present), present, "string", len(counts),
                     sum(1 for c in counts.values() if c == 1))
    if not present:
        return result
    if all(isinstance(v, bool) for v in raw if v is not None):
        result.kind = "boolean"
        return result
    numbers = [_number(v) for v in present]
    if all(n is not None for n in numbers):
        result.low, result.high = min(numbers), max(numbers)
        epoch_like = bool(_TIME_NAME.search(name)) and 1e8 <= result.low and result.high <= 4e9
        result.kind = "timestamp" if epoch_like else "integer" if all(n.is_integer() for n in numbers) else "number"
    elif all(dates.is_timestamp(v) for v in present):
        result.kind = "timestamp"
    elif sum(len(v.split()) for v in present) / len(present) > TEXT_WORDS and len(counts) > len(present) / 2:
        result.kind = "text"   # many words, and mostly different: prose, not a category with a long name
    elif sum(LIST_SEPARATOR in v for v in present) > len(present) / 2:
        result.kind = "list"
    return result


def _dim(categories: int) -> int:
    """The fourth-root rule, at least 2."""
    return max(2, math.ceil(categories ** 0.25))


def feature_for(column: Profile, keep_ids: bool = False) -> tuple[dict | None, str]:
    """A feature spec for the column and the comment saying why (None: left out)."""
    if column.present == 0 or column.missing / column.rows > MOSTLY_MISSING:
        return None, f"{column.missing / column.rows:.0%} missing"
    if column.distinct == 1:
        return None, f"constant ({column.values[0]!r})"
    if column.kind == "timestamp":
        return {"type": "cross", "columns": [f"{column.name}.day_of_week", f"{column.name}.hour"], "exact": True}, \
            "timestamps: day of week x hour of day (168 keys)"
    if column.kind == "number":
        return {"type": "numeric"}, f"numbers {column.low:g}..{column.high:g}, z-scored"
    if column.kind in ("text", "list"):
        spec = {"type": "text", **({"delimiter": LIST_SEPARATOR} if column.kind == "list" else {})}
        if column.distinct > 1000:
            spec["frequency_threshold"] = 5
        return spec, ("lists of tokens separated by '|'" if column.kind == "list" else "text of several words") + \
            ": token ids"
    unique = column.distinct == column.present and column.present > 100
    if unique and not keep_ids:
        return None, "unique per row (an id of the row, not a category)"
    if column.kind == "integer" and column.low >= 0 and column.high < MAX_IDENTITY and not keep_ids:
        return {"type": "identity", "num_buckets": int(column.high) + 1}, \
            f"{column.distinct} distinct integer codes {column.low:g}..{column.high:g}"
    if column.kind == "integer" and not keep_ids and not _ID_HINT.search(column.name):
        return {"type": "numeric"}, f"integers {column.low:g}..{column.high:g}, z-scored"
    if column.distinct > HASH_SHARE * column.present and column.present > 1000:
        buckets = 2 ** math.ceil(math.log2(HASH_ROOM * column.distinct * column.rows / max(column.present, 1)))
        return {"type": "hash", "hash_buckets": buckets}, \
            (f"{column.distinct:,} distinct in {column.rows:,} rows, most seen once: hashed into {buckets:,} buckets "
             f"(> {HASH_ROOM}x the keys seen, so few share one)")
    return vocabulary_for(column)


def vocabulary_for(column: Profile) -> tuple[dict, str]:
    """A vocabulary of the column's values, rare ones sharing the OOV row when there are many."""
    spec = {"type": "vocabulary"}
    comment = f"{column.distinct:,} distinct values"
    if column.once > RARE_SHARE * column.distinct and column.distinct > 100:
        spec["frequency_threshold"] = 2
        comment += f", {column.once:,} seen once: those below 2 occurrences share the OOV row"
    return spec, comment


def _categories(spec: dict, column: Profile) -> int:
    if spec["type"] == "identity":
        return spec["num_buckets"] + 1
    if spec["type"] == "hash":
        return spec["hash_buckets"]
    if spec["type"] == "cross":
        return 168
    return column.distinct + 1


def _metadata_for(key: Profile, columns: dict[str, Profile], records: list[dict]) -> list[str]:
    """A readable column naming the key: a string column with a name-like name that holds one value
    per key in the sample."""
    for column in columns.values():
        if column.name == key.name or column.kind not in ("string", "text") or not _NAME_HINT.search(column.name):
            continue
        seen: dict[str, set] = {}
        for record in records:
            seen.setdefault(_text(record.get(key.name)), set()).add(_text(record.get(column.name)))
        if all(len(values) == 1 for values in seen.values()):
            return [column.name]
    return []


def _flow(value: Any) -> str:
    """A value as one line of YAML."""
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z0-9_./-]+", value) else json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False).strip()


def draft(path: str, fmt: str | None = None, label: str | None = None, query: tuple[str, ...] = (),
          candidate: tuple[str, ...] = (), text: str | None = None, name: str | None = None,
          sample_rows: int = SAMPLE_ROWS, sequences: tuple[str, ...] = (), graph: tuple[str, ...] = ()) -> str:
    """The commented YAML config for the data at `path` (a file or glob; its first file is sampled).

    Args:
        sequences: (group, item) or (group, item, order) columns of an event log: item2vec.
        graph: (source, target) or (source, target, weight) columns of an edge list: DeepWalk.

    Raises:
        UsageError: no model to draft (no --label, --query/--candidate, --text, --sequences or
            --graph) or more than one, or a named column that is not in the data.
    """
    files = match_files(path)
    fmt = fmt or format_of(files[0])
    if fmt is None:
        raise UsageError(f"{files[0]}: say its format with --format (csv, parquet, jsonl or text)")
    records = read_sample(files[0], fmt, sample_rows)
    if not records:
        raise UsageError(f"{files[0]}: no rows to draft a config from")
    names = list(dict.fromkeys(n for record in records for n in record))
    for flag, wanted in (("--label", [label] if label else []), ("--query", query), ("--candidate", candidate),
                         ("--text", [text] if text and fmt != "text" else []), ("--sequences", sequences),
                         ("--graph", graph)):
        for column in wanted:
            if column not in names:
                raise UsageError(f"{flag} {column}: not a column of {files[0]} (columns: {', '.join(names[:30])})")
    goals = [flag for flag, given in (("--label", label), ("--query/--candidate", query or candidate),
                                      ("--text", text), ("--sequences", sequences), ("--graph", graph)) if given]
    if len(goals) > 1:
        raise UsageError(f"{' and '.join(goals)}: choose one model to draft")
    if not goals and fmt != "text":
        raise UsageError("say what to learn: --label COLUMN (supervised), --query COLUMN... --candidate COLUMN... "
                         "(two-tower), --text COLUMN (word embeddings), --sequences GROUP ITEM [ORDER] (item2vec) "
                         "or --graph SOURCE TARGET [WEIGHT] (node embeddings)")
    columns = {n: profile(n, [record.get(n) for record in records]) for n in names}
    shown = files[0] if files[0] == path else path
    if sequences or graph:
        whole_file = len(records) < sample_rows
        return _render_documents(shown, fmt, records, columns, sequences, graph, name or _name_of(files[0]),
                                 whole_file)
    features: dict[str, tuple[dict, str]] = {}
    left_out: dict[str, str] = {}
    if text or fmt == "text":
        column = text or "text"
        features[column] = ({"type": "text", "frequency_threshold": 5}, "the words: skip-gram")
        left_out.update({n: "not the text" for n in names if n != column})
    else:
        towers = list(query) + list(candidate)
        for column in columns.values():
            if column.name == label:
                left_out[column.name] = "the label"
                continue
            if towers and column.name not in towers:
                left_out[column.name] = "in no tower (name it with --query or --candidate to use it)"
                continue
            spec, comment = feature_for(column, keep_ids=column.name in towers[:1] + [c for c in candidate[:1]])
            if spec is None:
                left_out[column.name] = comment
            else:
                key = f"{column.name}_day_hour" if spec["type"] == "cross" else column.name
                features[key] = (spec, comment)
    if not features:
        raise UsageError(f"{files[0]}: no column makes a feature ({'; '.join(f'{k}: {v}' for k, v in left_out.items())})")
    return _render(shown, fmt, records, columns, features, left_out, label, query, candidate, text,
                   name or _name_of(files[0]))


def _name_of(path: str) -> str:
    stem = re.sub(r"\.(csv|tsv|parquet|jsonl|json|ndjson|txt|cor)(\.gz)?$", "", path.rsplit("/", 1)[-1], flags=re.I)
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "data"


def _render(path: str, fmt: str, records: list[dict], columns: dict[str, Profile], features: dict[str, tuple],
            left_out: dict[str, str], label: str | None, query: tuple[str, ...], candidate: tuple[str, ...],
            text: str | None, name: str) -> str:
    embedded = {n: spec for n, (spec, _) in features.items() if spec["type"] != "numeric"}
    lines = _header(path, fmt, records, name)
    if fmt == "text" and text is None:
        lines.append("  text_column: text")
    lines.append("features:")
    width = max(len(n) for n in features) + 1
    for feature, (spec, comment) in features.items():
        spec = dict(spec)
        source = columns.get(feature) or columns.get(feature.removesuffix("_day_hour"))
        if spec["type"] != "cross" and source is not None and source.name != feature:
            spec["column"] = source.name
        if fmt == "text" and spec["type"] == "text" and text is None:
            spec["column"] = "text"
        lines.append(f"  {feature + ':':<{width}} {_flow(spec):<60} # {comment}")
    lines.append("model:")
    if label:
        column = columns[label]
        regression = column.kind in ("number", "integer") and column.distinct > 20
        lines += ["  kind: supervised", f"  label: {label}",
                  f"  task: {'regression' if regression else 'classification'}   # "
                  + (f"a number, {column.distinct:,} distinct" if regression else f"{column.distinct} classes")]
        dims = {n: _dim(_categories(spec, columns.get(n) or columns[n.removesuffix('_day_hour')]))
                for n, spec in embedded.items()}
        if dims:
            lines.append(f"  embeddings: {_flow(dims)}   # the fourth root of each feature's categories")
    elif query:
        lines += ["  kind: two_tower", f"  query: {_flow(list(query))}", f"  candidate: {_flow(list(candidate))}"]
    else:
        lines += ["  kind: skipgram", "  embedding_dim: 100"]
    lines.append("entities:")
    entity_features = [query[0], candidate[0]] if query else list(embedded)
    for feature in entity_features:
        key = columns.get(feature)
        metadata = _metadata_for(key, columns, records) if key is not None else []
        entity = {"name": feature, "key": feature, **({"metadata": metadata} if metadata else {})}
        lines.append(f"  - {_flow(entity)}")
    return _finish(lines, name, left_out)


def _header(path: str, fmt: str, records: list[dict], name: str) -> list[str]:
    return [f"# Drafted by `embedpipe init` from the first {len(records):,} rows of {path}.",
            "# Every key, its default and an example: docs/config.md. Run it: embedpipe run <this file>",
            f"name: {name}", "input:", f"  path: {_flow(path)}", f"  format: {fmt}"]


def _finish(lines: list[str], name: str, left_out: dict[str, str]) -> str:
    """The output key and the left-out columns appended; the draft validated."""
    lines.append(f"output: runs/{name}")
    if left_out:
        lines.append("# Left out:")
        lines += [f"#   {column}: {reason}" for column, reason in left_out.items()]
    text_out = "\n".join(lines) + "\n"
    config_from_dict(yaml.safe_load(text_out))   # the draft passes validation, or this is a bug
    return text_out


def _commented(line: str, comment: str) -> str:
    return f"{line:<40} # {comment}"


def _order_column(columns: dict[str, Profile], taken: tuple[str, ...]) -> str:
    """The first timestamp column not among `taken`: what orders an event log's events."""
    found = [c.name for c in columns.values() if c.kind == "timestamp" and c.name not in taken]
    if not found:
        raise UsageError(f"--sequences {' '.join(taken)}: no timestamp column to order each group's events; "
                         "name the ordering column third (--sequences GROUP ITEM ORDER)")
    return found[0]


def _render_documents(path: str, fmt: str, records: list[dict], columns: dict[str, Profile],
                      sequences: tuple[str, ...], graph: tuple[str, ...], name: str, whole_file: bool) -> str:
    """item2vec over an event log, or DeepWalk over an edge list."""
    if len(sequences or graph) not in (2, 3):
        flag = "--sequences GROUP ITEM [ORDER]" if sequences else "--graph SOURCE TARGET [WEIGHT]"
        raise UsageError(f"{flag}: two or three columns (got {len(sequences or graph)})")
    lines = _header(path, fmt, records, name)
    if sequences:
        group, item = sequences[:2]
        order = sequences[2] if len(sequences) == 3 else _order_column(columns, (group, item))
        used, feature = {group, item, order}, item
        spec, comment = vocabulary_for(columns[item])
        lines += ["sequences:", f"  group_by: {_flow(group)}",
                  _commented(f"  order_by: {_flow(order)}", "Unix seconds or ISO 8601 date-times"),
                  f"  item: {_flow(item)}",
                  _commented("  # max_gap: 1800", "seconds between events that start a new session (default: none)")]
        tokens = len(records)
        metadata = _metadata_for(columns[item], columns, records)
        model = [_commented("  window: 20", "items of a sequence are related however far apart")]
    else:
        used, feature = set(graph), "node"
        spec, comment = {"type": "vocabulary"}, "the node ids of both columns"
        lines += ["graph:", f"  source: {_flow(graph[0])}", f"  target: {_flow(graph[1])}",
                  *([f"  weight: {_flow(graph[2])}"] if len(graph) == 3 else []),
                  _commented("  directed: false", "true: walks follow edges from source to target only"),
                  "  walks_per_node: 10", "  walk_length: 40"]
        nodes = len({_text(r.get(c)) for r in records for c in graph[:2]})
        tokens, metadata = nodes * 10 * 40, []
        model = [_commented("  subsample: 1.0", "walks visit nodes by their degree already: keep every step")]
    batch = DOCUMENT_BATCH if not whole_file else \
        max(256, min(DOCUMENT_BATCH, 2 ** int(math.log2(max(tokens // STEPS_PER_EPOCH, 1)))))
    why = "tokens a step" if not whole_file else f"tokens a step: about {STEPS_PER_EPOCH}+ steps an epoch here"
    lines += ["features:", _commented(f"  {feature}: {_flow(spec)}", comment), "model:", "  kind: skipgram",
              "  embedding_dim: 64", *model, f"  epochs: {10 if sequences else 5}",
              _commented(f"  batch_size: {batch}", why), "entities:",
              f"  - {_flow({'name': feature, 'key': feature, **({'metadata': metadata} if metadata else {})})}"]
    flag = "--sequences" if sequences else "--graph"
    left_out = {n: f"not one of the {flag} columns" for n in columns if n not in used and n not in metadata}
    return _finish(lines, name, left_out)
