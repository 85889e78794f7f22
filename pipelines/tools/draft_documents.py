"""`embedpipe init --sequences` and `--graph`: item2vec over an event log, DeepWalk over an edge list.

The item or node ids become one vocabulary and the model a skip-gram with settings drawn from the
shipped examples (examples/movielens_sequences.yaml, examples/graph.yaml). Its batch is sized to the
data: about STEPS_PER_EPOCH steps an epoch over the tokens the files are estimated to give (rows
counted when the one file was read whole, Parquet's row counts, or the files' bytes over the
sample's bytes per row), between MIN_BATCH and DOCUMENT_BATCH tokens. Columns the model reads are
checked on the sample: an ordering that is neither numbers nor date-times, or weights that are not
positive numbers, are refused; rows missing a value are allowed for in `input.max_invalid_fraction`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import pyarrow.parquet as pq

from pipelines.core import fs
from pipelines.core.config import InputConfig
from pipelines.core.errors import UsageError
from pipelines.tools.draft import (SAMPLE_ROWS, Profile, Sample, check_columns, commented, finish, flow, header,
                                   metadata_for, name_of, read_data, text_of, vocabulary_for)

STEPS_PER_EPOCH = 20
MIN_BATCH = 256
DOCUMENT_BATCH = 16384
WALKS_PER_NODE = 10
WALK_LENGTH = 40
GZIP_RATIO = 4            # text shrinks about this much in gzip: a .gz file's bytes count this many times
MOSTLY_MISSING = 0.5
ORDER_KINDS = ("timestamp", "integer", "number")


class Model(NamedTuple):
    """What an event log or an edge list makes of the draft."""
    section: list[str]          # the sequences: or graph: lines
    feature: str                # the one feature (and entity): the item or node ids
    spec: tuple[dict, str]      # its feature spec and the comment saying why
    used: set[str]              # the columns the model reads
    tokens: int                 # tokens an epoch, estimated
    settings: list[str]         # model: lines beyond the shared ones


def draft_documents(path: str, fmt: str | None = None, sequences: tuple[str, ...] = (),
                    graph: tuple[str, ...] = (), name: str | None = None, sample_rows: int = SAMPLE_ROWS) -> str:
    """The commented YAML config of item2vec (`sequences`: GROUP ITEM [ORDER]) or DeepWalk (`graph`:
    SOURCE TARGET [WEIGHT]) for the data at `path` (a file or glob).

    Raises:
        UsageError: not two or three columns, a column not in the data, no column to order events by,
            an ordering or weight column of the wrong kind, or columns mostly missing.
    """
    flag, wanted = ("--sequences", sequences) if sequences else ("--graph", graph)
    if len(wanted) not in (2, 3):
        shape = "GROUP ITEM [ORDER]" if sequences else "SOURCE TARGET [WEIGHT]"
        raise UsageError(f"{flag} {shape}: two or three columns (got {len(wanted)})")
    data = read_data(path, fmt, sample_rows)
    check_columns(data, ((flag, wanted),))
    rows = estimated_rows(data, sample_rows)
    model = _sequences(data, sequences, rows) if sequences else _graph(data, graph, rows)
    metadata = metadata_for(data.columns[model.feature], data.columns, data.records) if sequences else []
    entity = {"name": model.feature, "key": model.feature, **({"metadata": metadata} if metadata else {})}
    tokens = model.tokens
    batch = max(MIN_BATCH, min(DOCUMENT_BATCH, 2 ** int(math.log2(max(tokens // STEPS_PER_EPOCH, 1)))))
    name = name or name_of(data.files[0])
    lines = header(data.shown, data.fmt, data.records, name)
    lines += _invalid_allowance(data, model.used) + model.section
    lines += ["features:", commented(f"  {model.feature}: {flow(model.spec[0])}", model.spec[1]), "model:",
              "  kind: skipgram", "  embedding_dim: 64", *model.settings, f"  epochs: {10 if sequences else 5}",
              commented(f"  batch_size: {batch}", f"tokens a step: about {max(tokens // batch, 1):,} steps an epoch "
                                                   f"over about {tokens:,} tokens"),
              "entities:", f"  - {flow(entity)}"]
    left_out = {n: f"not one of the {flag} columns" for n in data.columns if n not in model.used and n not in metadata}
    return finish(lines, name, left_out)


def estimated_rows(data: Sample, sample_rows: int) -> int:
    """Rows in all the files: counted when the one file was read whole, Parquet's own row counts, or
    the files' bytes over the bytes per row (of the first file when it was read whole, else of the
    sampled records written out as text)."""
    records = len(data.records)
    if data.fmt == "parquet":
        total = 0
        for path in data.files:
            with fs.open(path, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        return max(total, records)
    sizes = [fs.size(path) * (GZIP_RATIO if path.endswith(".gz") else 1) for path in data.files]
    if records < sample_rows:   # the first file was read whole
        return max(records, round(records * sum(sizes) / max(sizes[0], 1)))
    separator = "," if data.fmt == "csv" else " "
    per_row = sum(len(separator.join(text_of(v) for v in record.values())) + 1 for record in data.records) / records
    return max(records, round(sum(sizes) / max(per_row, 1.0)))


def _invalid_allowance(data: Sample, used: set[str]) -> list[str]:
    """`input.max_invalid_fraction` raised above the sample's share of rows missing a used column
    (each such row is invalid), or nothing when the default allows it."""
    share = sum(1 for r in data.records if any(text_of(r.get(c)) == "" for c in used)) / len(data.records)
    if share > MOSTLY_MISSING:
        raise UsageError(f"{', '.join(sorted(used))}: {share:.0%} of the sampled rows miss one of them; "
                         "too few rows would be left")
    if share * 2 <= InputConfig.max_invalid_fraction:   # the default allows it
        return []
    allowed = min(MOSTLY_MISSING, math.ceil(round(share * 200, 6)) / 100)   # twice the share, in whole percent
    return [commented(f"  max_invalid_fraction: {allowed}",
                      f"{share:.1%} of the sampled rows miss a value the model reads: they go to invalid/")]


def _sequences(data: Sample, columns: tuple[str, ...], rows: int) -> Model:
    group, item = columns[:2]
    order = columns[2] if len(columns) == 3 else _order_column(data.columns, (group, item))
    kind = data.columns[order].kind
    if kind not in ORDER_KINDS:
        example = data.columns[order].values[0] if data.columns[order].values else ""
        raise UsageError(f"--sequences {group} {item} {order}: {order} holds {kind} values such as {example!r}, "
                         "neither numbers nor date-times to order the events by")
    section = ["sequences:", f"  group_by: {flow(group)}",
               commented(f"  order_by: {flow(order)}", "Unix seconds or ISO 8601 date-times"),
               f"  item: {flow(item)}",
               commented("  # max_gap: 1800", "seconds between events that start a new session (default: none)")]
    settings = [commented("  window: 20", "items of a sequence are related however far apart")]
    return Model(section, item, vocabulary_for(data.columns[item]), {group, item, order}, rows, settings)


def _order_column(columns: dict[str, Profile], taken: tuple[str, ...]) -> str:
    """The first timestamp column not among `taken`: what orders an event log's events."""
    found = [c.name for c in columns.values() if c.kind == "timestamp" and c.name not in taken]
    if not found:
        raise UsageError(f"--sequences {' '.join(taken)}: no timestamp column to order each group's events; "
                         "name the ordering column third (--sequences GROUP ITEM ORDER)")
    return found[0]


def _graph(data: Sample, columns: tuple[str, ...], rows: int) -> Model:
    if len(columns) == 3:
        weight = data.columns[columns[2]]
        if weight.kind not in ("integer", "number") or weight.low <= 0:
            shown = f"values down to {weight.low:g}" if weight.kind in ("integer", "number") else f"{weight.kind} values"
            raise UsageError(f"--graph {' '.join(columns)}: weights must be positive numbers ({columns[2]} holds "
                             f"{shown})")
    section = ["graph:", f"  source: {flow(columns[0])}", f"  target: {flow(columns[1])}",
               *([f"  weight: {flow(columns[2])}"] if len(columns) == 3 else []),
               commented("  directed: false", "true: walks follow edges from source to target only"),
               f"  walks_per_node: {WALKS_PER_NODE}", f"  walk_length: {WALK_LENGTH}"]
    sampled_nodes = {text_of(r.get(c)) for r in data.records for c in columns[:2]} - {""}
    nodes = round(len(sampled_nodes) * rows / len(data.records))   # at the sample's mean degree
    settings = [commented("  subsample: 1.0", "walks visit nodes by their degree already: keep every step")]
    return Model(section, "node", ({"type": "vocabulary"}, "the node ids of both columns"), set(columns),
                 nodes * WALKS_PER_NODE * WALK_LENGTH, settings)
