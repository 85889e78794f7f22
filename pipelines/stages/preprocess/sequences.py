"""Event rows -> sessions: one token document per session of each group, in order (item2vec).

Events are keyed by (split, group) and combined with Beam's `TopCombineFn`: each group keeps its
newest `max_group_events` events, ordered by (order, item), so the order of events with the same
time does not depend on the runner. The combine is lifted (each worker keeps a bounded heap per
group before the shuffle), so a group larger than a worker's memory cannot break the job: it is
bounded, and the events beyond the bound (its oldest) are counted (`events_over_group_limit`).
A group is then cut into sessions where consecutive events are more than `max_gap` apart, and
sessions shorter than `min_length` are dropped and counted (`sessions_too_short`).

Rows are split before they are grouped (`split.key` defaults to `group_by`, so a group's sessions
stay in one split; `split.column` can hold out each group's newest event, leave-last-out).
"""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.combiners import CountCombineFn, SingleInputTupleCombineFn, TopCombineFn

from pipelines.core.beam_runner import COUNTER_NAMESPACE
from pipelines.core.config import Config, SequencesConfig
from pipelines.stages.preprocess.documents import TransformInputs, document_batch, document_column
from pipelines.stages.preprocess.entities import SplitRows

DOCUMENTS_PER_BATCH = 4096
SEQUENCE_COUNTERS = ("groups", "events_over_group_limit", "sessions_too_short", "documents_train", "documents_eval")

Event = tuple[float, str]          # (order in seconds or the column's units, item id)
GroupKey = tuple[str, str]         # (split, group)


@beam.typehints.with_input_types(pa.RecordBatch)
@beam.typehints.with_output_types(tuple[GroupKey, Event])
class KeyEvents(beam.DoFn):
    """Typed event rows of one split -> ((split, group), (order, item)) per row."""

    def __init__(self, sequences: SequencesConfig, split: str):
        self._sequences = sequences
        self._split = split

    def process(self, batch: pa.RecordBatch) -> Iterator[tuple[GroupKey, Event]]:
        sequences = self._sequences
        groups, orders, items = (batch.column(c).to_pylist() for c in sequences.columns)
        for group, order, item in zip(groups, orders, items):
            yield (self._split, group), (order, item)


def sessions(events: list[Event], max_gap: float | None, min_length: int) -> tuple[list[list[str]], int]:
    """A group's events, oldest first -> its sessions' items, and how many sessions were too short.

    A gap larger than `max_gap` between consecutive events starts a new session (None: never).
    """
    starts = [0] + [i for i in range(1, len(events)) if max_gap is not None and events[i][0] - events[i - 1][0] > max_gap]
    found = [[item for _, item in events[start:stop]] for start, stop in zip(starts, starts[1:] + [len(events)])
             if stop > start]
    kept = [session for session in found if len(session) >= min_length]
    return kept, len(found) - len(kept)


@beam.typehints.with_input_types(tuple[GroupKey, tuple[list[Event], int]])
class CutSessions(beam.DoFn):
    """((split, group), (newest events, newest first; all events)) -> each session's items, tagged
    with the split."""

    def __init__(self, sequences: SequencesConfig):
        self._sequences = sequences

    def setup(self) -> None:
        self._counters = {name: Metrics.counter(COUNTER_NAMESPACE, name) for name in SEQUENCE_COUNTERS}

    def process(self, element: tuple[GroupKey, tuple[list[Event], int]]) -> Iterator[beam.pvalue.TaggedOutput]:
        (split, _), (newest, count) = element
        kept, too_short = sessions(newest[::-1], self._sequences.max_gap, self._sequences.min_length)
        self._counters["groups"].inc()
        self._counters["events_over_group_limit"].inc(count - len(newest))
        self._counters["sessions_too_short"].inc(too_short)
        self._counters[f"documents_{split}"].inc(len(kept))
        for session in kept:
            yield beam.pvalue.TaggedOutput(split, session)


class BuildSequences(beam.PTransform):
    """Typed event rows per split -> batches of session documents per split (see the module docstring).

    Sessions are built once and read by both tf.Transform passes: the grouping already holds them
    on the in-process runner, and a distributed runner keeps them in its shuffle.
    """

    def __init__(self, config: Config):
        super().__init__()
        self._sequences = config.sequences
        self._column = document_column(config)

    def expand(self, rows: SplitRows) -> TransformInputs:
        sequences = self._sequences
        newest = ((rows.train | "KeyTrainEvents" >> beam.ParDo(KeyEvents(sequences, "train")),
                   rows.eval | "KeyEvalEvents" >> beam.ParDo(KeyEvents(sequences, "eval")))
                  | "FlattenEvents" >> beam.Flatten()
                  | "NewestEventsPerGroup" >> beam.CombinePerKey(SingleInputTupleCombineFn(
                      TopCombineFn(sequences.max_group_events), CountCombineFn())))
        found = newest | "CutSessions" >> beam.ParDo(CutSessions(sequences)).with_outputs("train", "eval")
        batches = {split: (getattr(found, split)
                           | f"BatchSessions[{split}]" >> beam.BatchElements(min_batch_size=DOCUMENTS_PER_BATCH,
                                                                              max_batch_size=DOCUMENTS_PER_BATCH)
                           | f"ToDocumentBatch[{split}]" >> beam.Map(lambda lists, c: document_batch(c, lists),
                                                                     self._column))
                   for split in ("train", "eval")}
        return TransformInputs(batches["train"], batches["train"], batches["eval"])
