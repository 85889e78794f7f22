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
Embedding sizes follow the fourth-root rule. The draft is validated before it is printed. Event
logs and edge lists: draft_documents.py, on the sampling and rendering helpers here.
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


def text_of(value: Any) -> str:
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
    values = [text_of(v) for v in raw]
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


def metadata_for(key: Profile, columns: dict[str, Profile], records: list[dict]) -> list[str]:
    """A readable column naming the key: a string column with a name-like name that holds one value
    per key in the sample."""
    for column in columns.values():
        if column.name == key.name or column.kind not in ("string", "text") or not _NAME_HINT.search(column.name):
            continue
        seen: dict[str, set] = {}
        for record in records:
            seen.setdefault(text_of(record.get(key.name)), set()).add(text_of(record.get(column.name)))
        if all(len(values) == 1 for values in seen.values()):
            return [column.name]
    return []


def flow(value: Any) -> str:
    """A value as one line of YAML."""
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z0-9_./-]+", value) else json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False).strip()


@dataclasses.dataclass(frozen=True)
class Sample:
    """The files a path matches, their format, and the first file's sampled records profiled."""
    files: list[str]
    fmt: str
    records: list[dict]
    columns: dict[str, Profile]
    shown: str   # the path as the draft's input.path shows it: the glob, or the one file


def read_data(path: str, fmt: str | None, sample_rows: int) -> Sample:
    """The sample of `path` (a file or glob; its first file is read).

    Raises:
        UsageError: no file matches, an unknown format, or no rows.
    """
    files = match_files(path)
    fmt = fmt or format_of(files[0])
    if fmt is None:
        raise UsageError(f"{files[0]}: say its format with --format (csv, parquet, jsonl or text)")
    records = read_sample(files[0], fmt, sample_rows)
    if not records:
        raise UsageError(f"{files[0]}: no rows to draft a config from")
    names = list(dict.fromkeys(n for record in records for n in record))
    columns = {n: profile(n, [record.get(n) for record in records]) for n in names}
    return Sample(files, fmt, records, columns, files[0] if files[0] == path else path)


def check_columns(data: Sample, wanted: tuple[tuple[str, Any], ...]) -> None:
    """Raises UsageError for a flag's column that is not in the data."""
    for flag, columns in wanted:
        for column in columns:
            if column not in data.columns:
                raise UsageError(f"{flag} {column}: not a column of {data.files[0]} "
                                 f"(columns: {', '.join(list(data.columns)[:30])})")


def draft(path: str, fmt: str | None = None, label: str | None = None, query: tuple[str, ...] = (),
          candidate: tuple[str, ...] = (), text: str | None = None, name: str | None = None,
          sample_rows: int = SAMPLE_ROWS) -> str:
    """The commented YAML config for the data at `path` (a file or glob; its first file is sampled).

    Raises:
        UsageError: no model to draft (no --label, --query/--candidate or --text), or a named
            column that is not in the data.
    """
    data = read_data(path, fmt, sample_rows)
    fmt, records, columns = data.fmt, data.records, data.columns
    check_columns(data, (("--label", [label] if label else []), ("--query", query), ("--candidate", candidate),
                         ("--text", [text] if text and fmt != "text" else [])))
    if not (label or (query and candidate) or text or fmt == "text"):
        raise UsageError("say what to learn: --label COLUMN (supervised), --query COLUMN... --candidate COLUMN... "
                         "(two-tower), --text COLUMN (word embeddings), --sequences GROUP ITEM [ORDER] (item2vec) "
                         "or --graph SOURCE TARGET [WEIGHT] (node embeddings)")
    names = list(columns)
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
        raise UsageError(f"{data.files[0]}: no column makes a feature "
                         f"({'; '.join(f'{k}: {v}' for k, v in left_out.items())})")
    return _render(data.shown, fmt, records, columns, features, left_out, label, query, candidate, text,
                   name or name_of(data.files[0]))


def name_of(path: str) -> str:
    stem = re.sub(r"\.(csv|tsv|parquet|jsonl|json|ndjson|txt|cor)(\.gz)?$", "", path.rsplit("/", 1)[-1], flags=re.I)
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "data"


def _render(path: str, fmt: str, records: list[dict], columns: dict[str, Profile], features: dict[str, tuple],
            left_out: dict[str, str], label: str | None, query: tuple[str, ...], candidate: tuple[str, ...],
            text: str | None, name: str) -> str:
    embedded = {n: spec for n, (spec, _) in features.items() if spec["type"] != "numeric"}
    lines = header(path, fmt, records, name)
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
        lines.append(f"  {feature + ':':<{width}} {flow(spec):<60} # {comment}")
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
            lines.append(f"  embeddings: {flow(dims)}   # the fourth root of each feature's categories")
    elif query:
        lines += ["  kind: two_tower", f"  query: {flow(list(query))}", f"  candidate: {flow(list(candidate))}"]
    else:
        lines += ["  kind: skipgram", "  embedding_dim: 100"]
    lines.append("entities:")
    entity_features = [query[0], candidate[0]] if query else list(embedded)
    for feature in entity_features:
        key = columns.get(feature)
        metadata = metadata_for(key, columns, records) if key is not None else []
        entity = {"name": feature, "key": feature, **({"metadata": metadata} if metadata else {})}
        lines.append(f"  - {flow(entity)}")
    return finish(lines, name, left_out)


def header(path: str, fmt: str, records: list[dict], name: str) -> list[str]:
    """The draft's first lines: where it came from, its name, and the input section's path and format."""
    return [f"# Drafted by `embedpipe init` from the first {len(records):,} rows of {path}.",
            "# Every key, its default and an example: docs/config.md. Run it: embedpipe run <this file>",
            f"name: {name}", "input:", f"  path: {flow(path)}", f"  format: {fmt}"]


def finish(lines: list[str], name: str, left_out: dict[str, str]) -> str:
    """The output key and the left-out columns appended; the draft validated."""
    lines.append(f"output: runs/{name}")
    if left_out:
        lines.append("# Left out:")
        lines += [f"#   {column}: {reason}" for column, reason in left_out.items()]
    text_out = "\n".join(lines) + "\n"
    config_from_dict(yaml.safe_load(text_out))   # the draft passes validation, or this is a bug
    return text_out


def commented(line: str, comment: str) -> str:
    """A YAML line with its comment in the drafts' comment column."""
    return f"{line:<40} # {comment}"
