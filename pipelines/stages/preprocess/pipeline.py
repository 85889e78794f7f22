"""Stage 1: raw rows -> invalid rows, train/eval split, tf.Transform, gzipped TFRecords.

A sequences or a graph config puts one step between the typed rows and tf.Transform: the rows
become token documents (sessions, `sequences`; random walks, `graph`), and tf.Transform reads
those (`documents`). A graph config runs two jobs: the first builds the graph from the edge rows
and writes it into the staged tmp/ (a file per shard and one of its nodes), the second walks it
(see `graph`).

Outputs (published into the run directory only when the whole job succeeded):
    transform/   tf.Transform's transform_fn/ (vocabularies in its assets/), transformed_metadata/,
                 and metadata/ (the raw schema, so `TFTransformOutput.raw_feature_spec()` works)
    data/        train-*.tfrecord.gz, eval-*.tfrecord.gz, entities/<entity>/part-*.parquet
    invalid/     invalid-*.jsonl: {"file", "record", "reason", "kind"} per rejected row
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import tempfile
from typing import Any, Callable, Iterator, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
from tfx_bsl.public import tfxio

from pipelines.core import fs
from pipelines.core.beam_runner import (COUNTER_NAMESPACE, make_pipeline, read_counters, release_memory, run_pipeline,
                                        runner_name, runs_in_process)
from pipelines.core.config import Config
from pipelines.core.errors import InvalidInputError
from pipelines.core.rundir import RunDir
from pipelines.stages.preprocess import columnar
from pipelines.stages.preprocess.batched_io import (LineBatchSource, TFRecordBatchSink, TFRecordBatchSource,
                                                    frame_records)
from pipelines.stages.preprocess.documents import TransformInputs, document_column
from pipelines.stages.preprocess.entities import SplitRows, WriteEntityTables
from pipelines.stages.preprocess.example_encoder import frame_single_value_examples, numpy_encodable
from pipelines.stages.preprocess.filters import apply_filters
from pipelines.stages.preprocess.adjacency import graph_nodes
from pipelines.stages.preprocess.graph import GRAPH_COUNTERS, BuildGraph, EdgePasses, WalkGraph, WriteNodeTables
from pipelines.stages.preprocess.rows import InvalidRow, RowTyper, Splitter, make_decoder, record_text
from pipelines.stages.preprocess.replay import ReplayBatches
from pipelines.stages.preprocess.schema import FLOAT, INT, RawSchema
from pipelines.stages.preprocess.sequences import SEQUENCE_COUNTERS, BuildSequences
from pipelines.stages.preprocess.statistics import ComputeFeatureStatistics
from transforms.preprocessing import build_preprocessing_fn

logger = logging.getLogger(__name__)

COUNTERS = ("rows_read", "rows_valid", "rows_invalid", "rows_filtered", "rows_train", "rows_eval",
            "identity_out_of_range")
INVALID_NAMESPACE = f"{COUNTER_NAMESPACE}.invalid"
FILTERED_NAMESPACE = f"{COUNTER_NAMESPACE}.filtered"
_TF_DTYPES = {FLOAT: tf.float32, INT: tf.int64}


def raw_feature_spec(config: Config, schema: RawSchema) -> dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature]:
    """The raw tf.Transform inputs: one scalar per column (missing values already defaulted), or for
    sequences and graphs the token documents (one list of ids per document)."""
    if config.discrete:
        return {document_column(config): tf.io.VarLenFeature(tf.string)}
    return {c: tf.io.FixedLenFeature([], _TF_DTYPES.get(t, tf.string)) for c, t in schema.types.items()}


def counter_names(config: Config) -> tuple[str, ...]:
    """The counters the manifest records for this config (zero when they never fired)."""
    return COUNTERS + (SEQUENCE_COUNTERS if config.sequences else GRAPH_COUNTERS if config.graph else ())


class UnreadableRowGroup(NamedTuple):
    """A Parquet row group whose data cannot be read (its footer could): its rows become invalid."""
    index: int
    rows: int
    reason: str


@beam.typehints.with_input_types(str)
@beam.typehints.with_output_types(tuple[str, Any])
class ReadParquetRowGroups(beam.DoFn):
    """A Parquet file -> (file, pa.Table) per row group, only the columns the job reads."""

    def __init__(self, columns: list[str] | None):
        self._columns = columns

    def process(self, path: str) -> Iterator[tuple[str, Any]]:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            parquet = pq.ParquetFile(handle)
            for index in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(index).num_rows
                try:
                    yield path, parquet.read_row_group(index, columns=self._columns)
                except (OSError, pa.ArrowException) as error:
                    yield path, UnreadableRowGroup(index, rows, f"unreadable Parquet row group {index} "
                                                                f"({rows} rows): {error}")


class ReadRawRows(beam.PTransform):
    """Reads the input files in batches: (file name, [record bytes]) for text and TFRecord input,
    (file name, pa.Table) per Parquet row group."""

    def __init__(self, config: Config, schema: RawSchema):
        super().__init__()
        self._config = config
        self._schema = schema

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        fmt, pattern = self._config.input.format, self._config.input.path
        if fmt == "tfrecord":
            return pipeline | "ReadExampleBatches" >> beam.io.Read(TFRecordBatchSource(pattern))
        if fmt == "parquet":
            # Hashing the whole record for the split needs every column; otherwise read only those used.
            columns = None if Splitter(self._config).reads_records else list(self._config.raw_columns())
            return (pipeline
                    | "ListParquetFiles" >> beam.Create(list(self._schema.files))
                    | "SpreadParquetFiles" >> beam.Reshuffle()
                    | "ReadParquetRowGroups" >> beam.ParDo(ReadParquetRowGroups(columns)))
        csv = fmt == "csv"
        return pipeline | "ReadRecordBatches" >> beam.io.Read(LineBatchSource(
            pattern, skip_header_lines=1 if csv else 0, quoted_newlines=csv,
            splittable=not self._schema.quoted_newlines))


@beam.typehints.with_input_types(tuple[str, Any])
class DecodeRows(beam.DoFn):
    """A batch of raw records -> typed Arrow record batches tagged `train`/`eval`, plus `invalid` rows.

    Clean CSV and Parquet batches are typed column-wise (`columnar`); any other batch, or one with
    a single doubtful value, row by row (`rows`), which gives the reasons. Invalid rows are counted
    per reason kind in the `embedpipe.invalid` counters.
    """

    def __init__(self, config: Config, schema: RawSchema, count: bool = True):
        self._config = config
        self._schema = schema
        self._count = count

    def setup(self) -> None:
        # pyarrow's default pool (mimalloc) kept the memory of freed batches: read + decode alone
        # peaked at 954 MiB on 1M rows and 1,209 MiB on 3M; with the system allocator, 872 and 878.
        # The switch is process-wide, so it lasts only as long as this DoFn (see teardown).
        self._previous_pool = pa.default_memory_pool()
        pa.set_memory_pool(pa.system_memory_pool())
        self._decode = make_decoder(self._config, self._schema)
        self._typer = RowTyper(self._config, self._schema)
        self._splitter = Splitter(self._config)
        self._counters = {name: Metrics.counter(COUNTER_NAMESPACE, name) for name in COUNTERS} if self._count else {}

    def teardown(self) -> None:
        pa.set_memory_pool(self._previous_pool)

    def process(self, element: tuple[str, Any]) -> Iterator[Any]:
        source, payload = element
        fmt = self._config.input.format
        if isinstance(payload, UnreadableRowGroup):
            yield from self._emit_invalid(source, f"row group {payload.index}", payload.reason,
                                          "unreadable Parquet row group", payload.rows)
            yield from self._emit(self._typer.arrow_schema.empty_table(), self._typer.arrow_schema.empty_table(),
                                  payload.rows, 0)
            return
        if fmt == "parquet":
            raw, records = payload, None
        else:
            records = payload
            raw = (columnar.read_csv_batch(records, self._schema.header_of(source), self._config.input.delimiter)
                   if fmt == "csv" else None)
        typed = None if raw is None else columnar.type_batch(raw, self._typer, self._schema, self._config.label_column)
        if typed is None:
            yield from self._rows(source, records if records is not None else raw.to_pylist())
            return
        table, out_of_range = typed
        if records is None and self._splitter.reads_records:
            records = raw.to_pylist()  # the whole record is the split key
        is_eval = self._splitter.eval_mask(raw.select(self._splitter.columns).to_pydict(), records, raw.num_rows)
        mask = pa.array(is_eval, pa.bool_())
        yield from self._emit(table.filter(pc.invert(mask)), table.filter(mask), 0, out_of_range)

    def _rows(self, source: str, records: list[Any]) -> Iterator[Any]:
        rows = {"train": [], "eval": []}
        out_of_range = invalid = 0
        for record in records:
            try:
                row = self._decode(record, source)
                values, bad_ids = self._typer.type_row(row)
            except InvalidRow as error:
                invalid += 1
                yield from self._emit_invalid(source, record_text(record), str(error), error.kind, 1)
                continue
            out_of_range += bad_ids
            rows["eval" if self._splitter.is_eval(row, record) else "train"].append(values)
        schema = self._typer.arrow_schema
        tables = [pa.Table.from_arrays([pa.array(list(c), f.type) for c, f in zip(zip(*rows[split]), schema)], schema=schema)
                  if rows[split] else schema.empty_table() for split in ("train", "eval")]
        yield from self._emit(tables[0], tables[1], invalid, out_of_range)

    def _emit_invalid(self, source: str, record: str, reason: str, kind: str, rows: int) -> Iterator[Any]:
        if self._count:
            Metrics.counter(INVALID_NAMESPACE, kind).inc(rows)
        yield beam.pvalue.TaggedOutput("invalid", {"file": source, "record": record, "reason": reason, "kind": kind})

    def _emit(self, train: pa.Table, evaluation: pa.Table, invalid: int, out_of_range: int) -> Iterator[Any]:
        filtered = 0
        if self._config.input.filters:
            (train, left_train), (evaluation, left_eval) = (apply_filters(t, self._config.input.filters)
                                                            for t in (train, evaluation))
            for reason in left_train:
                count = left_train[reason] + left_eval[reason]
                filtered += count
                if self._count and count:
                    Metrics.counter(FILTERED_NAMESPACE, reason).inc(count)
        valid = train.num_rows + evaluation.num_rows
        for name, value in (("rows_read", valid + invalid + filtered), ("rows_valid", valid),
                            ("rows_invalid", invalid), ("rows_filtered", filtered), ("rows_train", train.num_rows),
                            ("rows_eval", evaluation.num_rows), ("identity_out_of_range", out_of_range)):
            if name in self._counters:
                self._counters[name].inc(value)
        for split, table in (("train", train), ("eval", evaluation)):
            if table.num_rows:
                yield beam.pvalue.TaggedOutput(split, table.combine_chunks().to_batches()[0])


class DecodeAndSplitRows(beam.PTransform):
    """Raw records -> {"train", "eval": typed record batches, "invalid": rejected rows}.

    `count=False` for a second pass over the same input, whose rows are already counted.
    """

    def __init__(self, config: Config, schema: RawSchema, count: bool = True):
        super().__init__()
        self._config = config
        self._schema = schema
        self._count = count

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | "DecodeRows" >> beam.ParDo(DecodeRows(self._config, self._schema, self._count)).with_outputs(
            "train", "eval", "invalid")


def to_transform_input(batch: pa.RecordBatch, adapter: tfxio.TensorAdapterConfig) -> pa.RecordBatch:
    """Typed columns -> the list columns tf.Transform's tensor adapter expects: one value per row, or
    a document's ids as they are."""
    offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int64))   # from a range: 17 ms a batch
    arrays = [batch.column(field.name).cast(field.type) if pa.types.is_list(batch.schema.field(field.name).type)
              else pa.LargeListArray.from_arrays(offsets, batch.column(field.name).cast(field.type.value_type))
              for field in adapter.arrow_schema]
    return pa.RecordBatch.from_arrays(arrays, schema=adapter.arrow_schema)


class ExampleCoder(NamedTuple):
    """How one split's transformed batches become tf.Examples: tfx-bsl's encoder for the output
    schema, and whether `example_encoder` may write them instead (`numpy_encodable`)."""
    tfx_bsl: tfxio.RecordBatchToExamplesEncoder
    numpy: bool


def make_example_coder(metadata: dataset_metadata.DatasetMetadata) -> ExampleCoder:
    return ExampleCoder(tfxio.RecordBatchToExamplesEncoder(metadata.schema), numpy_encodable(metadata.schema))


def encode_examples(transformed: tuple[pa.RecordBatch, Any], coder: ExampleCoder) -> bytes:
    """A transformed record batch (and tf.Transform's passthrough) -> its TFRecord-framed tf.Examples:
    with numpy when every feature holds one number a row (`example_encoder`), else with tfx-bsl."""
    batch = transformed[0]
    framed = frame_single_value_examples(batch) if coder.numpy else None
    return frame_records(coder.tfx_bsl.encode(batch)) if framed is None else framed


class TransformOutputs(NamedTuple):
    """TFRecord-framed serialized tf.Examples per split (one bytes element per record batch), and
    tf.Transform's transform_fn."""
    train: beam.PCollection
    eval: beam.PCollection
    transform_fn: beam.PCollection


class AnalyzeAndTransform(beam.PTransform):
    """Analyzes the train split only (no eval leakage into vocabularies or scaling), transforms both."""

    def __init__(self, config: Config, schema: RawSchema):
        super().__init__()
        self._config = config
        spec = raw_feature_spec(config, schema)
        self._adapter = tfxio.TFExampleBeamRecord(
            physical_format="arrow", telemetry_descriptors=["embedpipe"],
            schema=schema_utils.schema_from_feature_spec(spec)).TensorAdapterConfig()

    def expand(self, inputs: TransformInputs) -> TransformOutputs:
        preprocessing_fn = build_preprocessing_fn(
            self._config.features, self._config.label_column, self._config.model.task == "classification",
            self._config.input.time_zone, self._config.model.label_transform)
        analyze_input = inputs.analyze | "ToTransformInput[analyze]" >> beam.Map(to_transform_input, self._adapter)
        transform_fn = (analyze_input, self._adapter) | "AnalyzeDataset" >> tft_beam.AnalyzeDataset(preprocessing_fn)
        encoded = {}
        for split, batches in (("train", inputs.train), ("eval", inputs.eval)):
            data = batches | f"ToTransformInput[{split}]" >> beam.Map(to_transform_input, self._adapter)
            transformed, metadata = (((data, self._adapter), transform_fn)
                                     | f"TransformDataset[{split}]" >> tft_beam.TransformDataset(output_record_batches=True))
            # As tft_beam.EncodeTransformedDataset, but one element per record batch (framed), not per example.
            encoder = metadata.deferred_metadata | f"MakeEncoder[{split}]" >> beam.Map(make_example_coder)
            encoded[split] = transformed | f"EncodeExamples[{split}]" >> beam.Map(
                encode_examples, coder=beam.pvalue.AsSingleton(encoder))
        return TransformOutputs(encoded["train"], encoded["eval"], transform_fn)


class WriteExamples(beam.PTransform):
    """TFRecord-framed serialized tf.Examples -> `<prefix>-SSSSS-of-NNNNN.tfrecord.gz`."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def expand(self, examples: beam.PCollection) -> beam.PCollection:
        return examples | "WriteTFRecords" >> beam.io.Write(TFRecordBatchSink(self._prefix))


class WriteInvalidRows(beam.PTransform):
    """Rejected rows -> `invalid/invalid-*.jsonl`, one JSON object per row."""

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return (rows
                | "FormatInvalidRows" >> beam.Map(json.dumps, ensure_ascii=False)
                | "WriteInvalidRows" >> beam.io.WriteToText(fs.join(self._directory, "invalid"),
                                                            file_name_suffix=".jsonl"))


def graph_dir(staged: RunDir) -> str:
    """Where a graph config's first job leaves the graph for the second (removed with the staged tmp/)."""
    return staged.join("tmp", "graph")


def build_graph_job(pipeline: beam.Pipeline, config: Config, schema: RawSchema, staged: RunDir,
                    parts_dir: str | None) -> None:
    """Wires a graph config's first job into `pipeline`: edge rows, read twice -> the graph's files in
    `graph_dir(staged)`, the node tables and the invalid rows, in the staged run directory `staged`;
    the edges go to their shards through files in `parts_dir`, or the runner's shuffle when None."""
    rows = (pipeline
            | "ReadRawRows" >> ReadRawRows(config, schema)
            | "DecodeAndSplitRows" >> DecodeAndSplitRows(config, schema))
    reread = (pipeline
              | "ReadRawRowsAgain" >> ReadRawRows(config, schema)
              | "DecodeAndSplitRowsAgain" >> DecodeAndSplitRows(config, schema, count=False))
    nodes = EdgePasses(rows.train, reread.train) | "BuildGraph" >> BuildGraph(config.graph, graph_dir(staged),
                                                                               parts_dir)
    _ = nodes | "WriteNodeTables" >> WriteNodeTables(config, schema, staged)
    _ = rows.invalid | "WriteInvalidRows" >> WriteInvalidRows(staged.invalid_dir)


@contextlib.contextmanager
def scratch_dir(options: PipelineOptions, name: str) -> Iterator[str | None]:
    """A local scratch directory (`tempfile`'s: TMPDIR) for a job on the in-process runner, which
    holds its shuffle and its waiting PCollections in memory; removed when the job ends, failed or
    not. None on other runners."""
    if not runs_in_process(options):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=f"embedpipe-{name}-") as directory:
        yield directory


def run_build_graph_job(options: PipelineOptions, config: Config, schema: RawSchema,
                        staged: RunDir) -> beam.runners.runner.PipelineResult:
    """Runs a graph config's first job (`build_graph_job`). On the in-process runner the edges go to
    their shards through files in a scratch directory (`scratch_dir`)."""
    with scratch_dir(options, "edges") as parts_dir:
        return run_job(options, lambda pipeline: build_graph_job(pipeline, config, schema, staged, parts_dir))


def read_rows(pipeline: beam.Pipeline, config: Config, schema: RawSchema, staged: RunDir,
              replay_dir: str | None = None) -> TransformInputs:
    """Wires the reading of the raw rows (not a graph's) into `pipeline`: what tf.Transform reads, and
    the invalid rows, entity tables and statistics written to `staged` on the way. The transform
    pass reads the typed rows back from files in `replay_dir` (`ReplayBatches`), or when None reads
    and decodes the input again (see TransformInputs)."""
    records = pipeline | "ReadRawRows" >> ReadRawRows(config, schema)
    rows = records | "DecodeAndSplitRows" >> DecodeAndSplitRows(config, schema)
    if config.sequences:
        inputs = SplitRows(rows.train, rows.eval) | "BuildSequences" >> BuildSequences(config)
    elif replay_dir:
        inputs = TransformInputs(rows.train, rows.train | "ReplayTrainRows" >> ReplayBatches(replay_dir, "train"),
                                 rows.eval | "ReplayEvalRows" >> ReplayBatches(replay_dir, "eval"))
    else:
        reread = (pipeline | "ReadRawRowsAgain" >> ReadRawRows(config, schema)
                  | "DecodeAndSplitRowsAgain" >> DecodeAndSplitRows(config, schema, count=False))
        inputs = TransformInputs(rows.train, reread.train, reread.eval)
    _ = rows.invalid | "WriteInvalidRows" >> WriteInvalidRows(staged.invalid_dir)
    _ = SplitRows(rows.train, rows.eval) | "WriteEntityTables" >> WriteEntityTables(config, schema, staged)
    _ = rows.train | "ComputeFeatureStatistics" >> ComputeFeatureStatistics(config, staged.statistics_path)
    return inputs


def build_pipeline(pipeline: beam.Pipeline, config: Config, schema: RawSchema, staged: RunDir,
                   temp_dir: str, graph_nodes: int = 0, replay_dir: str | None = None) -> None:
    """Wires the preprocess job into `pipeline`, writing into the staged run directory `staged`; for a
    graph config the second job, walking the graph of `graph_nodes` nodes that `build_graph_job` wrote
    into `graph_dir(staged)`. Rows pass to tf.Transform's second pass through `replay_dir` (`read_rows`)."""
    with tft_beam.Context(temp_dir=temp_dir):
        if config.graph:
            inputs = pipeline | "WalkGraph" >> WalkGraph(config, graph_dir(staged), graph_nodes)
        else:
            inputs = read_rows(pipeline, config, schema, staged, replay_dir)
        examples = inputs | "AnalyzeAndTransform" >> AnalyzeAndTransform(config, schema)
        _ = examples.transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staged.transform_dir)
        _ = examples.train | "WriteTrainExamples" >> WriteExamples(staged.join("data", "train"))
        _ = examples.eval | "WriteEvalExamples" >> WriteExamples(staged.join("data", "eval"))


def summed_counters(results: list[beam.runners.runner.PipelineResult], names: tuple[str, ...] = (),
                    namespace: str = COUNTER_NAMESPACE) -> dict[str, int]:
    """`read_counters` over the stage's jobs, summed."""
    total: collections.Counter = collections.Counter()
    for result in results:
        total.update(read_counters(result, names, namespace))
    return dict(total)


def check_rows(counts: dict[str, int], reasons: dict[str, int], max_fraction: float, invalid_dir: str) -> None:
    """Raises InvalidInputError when the input is empty or has too many invalid rows."""
    read, invalid = counts["rows_read"], counts["rows_invalid"]
    top = "; ".join(f"{count:,} x {kind}" for kind, count in list(reasons.items())[:3])
    if read == 0:
        raise InvalidInputError("the input has no rows")
    if counts["rows_valid"] == 0 or counts["rows_train"] == 0:
        raise InvalidInputError(f"no valid training row among {read:,} rows read ({top}); see {invalid_dir}")
    if invalid / read > max_fraction:
        raise InvalidInputError(
            f"{invalid:,} of {read:,} rows invalid ({invalid / read:.2%}), above input.max_invalid_fraction "
            f"{max_fraction:.2%}: {top}; see {invalid_dir}")


def check_edges(counts: dict[str, int]) -> None:
    """Raises InvalidInputError when a graph has no edge between two different nodes."""
    if counts["edges"] == 0:
        raise InvalidInputError(f"the graph has no edge between two different nodes ({counts['self_loops']:,} "
                                f"self-loops dropped): every walk would be one node, with nothing to learn from")


def check_documents(counts: dict[str, int]) -> None:
    """Raises InvalidInputError when sequences or graphs gave no training document."""
    if counts.get("documents_train", 1) == 0:
        short = counts.get("sessions_too_short")
        why = f"all {short} sessions are shorter than sequences.min_length" if short else "no training walk or session"
        raise InvalidInputError(f"no training document among {counts['rows_valid']} valid rows: {why}")


def run_job(options: PipelineOptions, wire: Callable[[beam.Pipeline], None]) -> beam.runners.runner.PipelineResult:
    """Wires a pipeline on `options`' runner with `wire`, runs it and waits for it."""
    pipeline = make_pipeline(options)
    wire(pipeline)
    return run_pipeline(pipeline)


def record_counts(info: dict[str, Any], config: Config, results: list[beam.runners.runner.PipelineResult]) -> None:
    """Puts the counters of the stage's jobs into the stage's facts `info` (invalid reasons most frequent first)."""
    info["counts"] = summed_counters(results, counter_names(config))
    reasons = summed_counters(results, namespace=INVALID_NAMESPACE)
    info["invalid_reasons"] = dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))
    if config.input.filters:
        info["filtered"] = summed_counters(results, tuple(f.describe() for f in config.input.filters),
                                           FILTERED_NAMESPACE)


def run_preprocess(config: Config, schema: RawSchema, run: RunDir, options: PipelineOptions) -> dict[str, Any]:
    """Runs the preprocess job (two for a graph config) for `run` and publishes its outputs.

    Args:
        config: the run's config.
        schema: the input as `inspect_input` found it (checked before the run started).
        run: the run directory (its lock held by the caller).
        options: Beam pipeline options (`beam_runner.pipeline_options`).

    Returns:
        The facts recorded in the manifest: counts, invalid reasons, runner.

    Raises:
        InvalidInputError: too many invalid rows, or no training document (only `invalid/` is published).
    """
    with run.stage("preprocess") as info:
        staged = RunDir(run.clear_staging("preprocess"))
        temp_dir = options.view_as(GoogleCloudOptions).temp_location or staged.join("tmp")
        metadata_io.write_metadata(dataset_metadata.DatasetMetadata(
            schema_utils.schema_from_feature_spec(raw_feature_spec(config, schema))), staged.raw_metadata_dir)
        info["runner"] = runner_name(options)
        info["input_files"] = len(schema.files)
        try:
            results = []
            if config.graph:
                results.append(run_build_graph_job(options, config, schema, staged))
                release_memory()   # what job 1 left, before the walks (a full collection: 0.7 s, so not after every job)
                record_counts(info, config, results)
                check_rows(info["counts"], info["invalid_reasons"], config.input.max_invalid_fraction, run.invalid_dir)
                check_edges(info["counts"])
            nodes = graph_nodes(graph_dir(staged)) if config.graph else 0
            # Sequences and graphs hand tf.Transform documents, made anew for each pass.
            with scratch_dir(options, "rows") if not config.discrete else contextlib.nullcontext() as replay_dir:
                results.append(run_job(options, lambda pipeline: build_pipeline(
                    pipeline, config, schema, staged, temp_dir, nodes, replay_dir)))
            record_counts(info, config, results)
            check_rows(info["counts"], info["invalid_reasons"], config.input.max_invalid_fraction, run.invalid_dir)
            check_documents(info["counts"])
        except InvalidInputError:
            run.publish("preprocess", ["invalid"])  # so the user can read what was rejected
            raise
        finally:
            fs.remove(staged.join("tmp"))   # the graph's files are as large as its edges
    return info
