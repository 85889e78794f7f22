"""Stage 1: raw rows -> invalid rows, train/eval split, tf.Transform, gzipped TFRecords.

Outputs (published into the run directory only when the whole job succeeded):
    transform/   tf.Transform's transform_fn/ (vocabularies in its assets/), transformed_metadata/,
                 and metadata/ (the raw schema, so `TFTransformOutput.raw_feature_spec()` works)
    data/        train-*.tfrecord.gz, eval-*.tfrecord.gz, entities/<entity>/part-*.parquet
    invalid/     invalid-*.jsonl: {"file", "record", "reason"} per rejected row
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
from tfx_bsl.public import tfxio

from pipelines import columnar
from pipelines.batched_io import LineBatchSource, TFRecordBatchSink, TFRecordBatchSource
from pipelines.config import Config
from pipelines.entities import WriteEntityTables
from pipelines.rows import InvalidRow, RowTyper, Splitter, make_decoder, record_text
from pipelines.rundir import RunDir
from pipelines.schema import FLOAT, INT, RawSchema, inspect_input
from transforms.preprocessing import build_preprocessing_fn

logger = logging.getLogger(__name__)

COUNTERS = ("rows_read", "rows_valid", "rows_invalid", "rows_train", "rows_eval", "identity_out_of_range")
_TF_DTYPES = {FLOAT: tf.float32, INT: tf.int64}


class InvalidInputError(RuntimeError):
    """Too many invalid rows, or no valid row at all."""


def raw_feature_spec(schema: RawSchema) -> dict[str, tf.io.FixedLenFeature]:
    """The raw tf.Transform inputs: one scalar per column (missing values already defaulted)."""
    return {c: tf.io.FixedLenFeature([], _TF_DTYPES.get(t, tf.string)) for c, t in schema.types.items()}


class ReadRawRows(beam.PTransform):
    """Reads the input files in batches: (file name, [line or tf.Example bytes]), or (file name,
    pa.Table) per Parquet row group."""

    def __init__(self, config: Config, schema: RawSchema):
        super().__init__()
        self._format = config.input.format
        self._pattern = config.input.path
        self._files = list(schema.files)

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        if self._format == "tfrecord":
            return pipeline | "ReadExampleBatches" >> beam.io.Read(TFRecordBatchSource(self._pattern))
        if self._format == "parquet":
            return (pipeline | "ListFiles" >> beam.Create(self._files)
                    | "ReadParquetBatches" >> beam.io.ReadAllFromParquetBatched(with_filename=True))
        return pipeline | "ReadLineBatches" >> beam.io.Read(
            LineBatchSource(self._pattern, skip_header_lines=1 if self._format == "csv" else 0))


class DecodeRows(beam.DoFn):
    """A batch of raw records -> typed Arrow record batches tagged `train`/`eval`, plus `invalid` rows.

    Clean CSV and Parquet batches are typed column-wise (`pipelines.columnar`); any other batch,
    or one with a single doubtful value, row by row (`pipelines.rows`), which gives the reasons.
    """

    def __init__(self, config: Config, schema: RawSchema, count: bool = True):
        self._config = config
        self._schema = schema
        self._counters = {name: Metrics.counter("embedpipe", name) for name in COUNTERS} if count else {}

    def setup(self) -> None:
        # pyarrow's default pool (mimalloc) kept the memory of freed batches: read + decode alone
        # peaked at 954 MiB on 1M rows and 1,209 MiB on 3M; with the system allocator, 872 and 878.
        pa.set_memory_pool(pa.system_memory_pool())
        self._decode = make_decoder(self._config, self._schema)
        self._typer = RowTyper(self._config, self._schema)
        self._splitter = Splitter(self._config)

    def process(self, element: Any) -> Iterator[Any]:
        if self._config.input.format == "parquet":
            source, raw = element
            sources, records = [source] * raw.num_rows, None
        else:
            sources, records = [element[0]] * len(element[1]), element[1]
            raw = (columnar.read_csv_batch(records, self._schema.header, self._config.input.delimiter)
                   if self._config.input.format == "csv" else None)
        typed = None if raw is None else columnar.type_batch(raw, self._typer, self._schema, self._config.label_column)
        if typed is None:
            yield from self._rows(sources, records if records is not None else raw.to_pylist())
            return
        table, out_of_range = typed
        if records is None and not self._config.split.key and not self._config.split.column:
            records = raw.to_pylist()  # the whole record is the split key
        is_eval = self._splitter.eval_mask(raw.select(self._splitter.columns).to_pydict(), records)
        mask = pa.array(is_eval, pa.bool_())
        yield from self._emit(table.filter(pc.invert(mask)), table.filter(mask), 0, out_of_range)

    def _rows(self, sources: list[str], records: list[Any]) -> Iterator[Any]:
        rows = {"train": [], "eval": []}
        out_of_range = invalid = 0
        for source, record in zip(sources, records):
            try:
                row = self._decode(record)
                values, bad_ids = self._typer.type_row(row)
            except InvalidRow as error:
                invalid += 1
                yield beam.pvalue.TaggedOutput("invalid", {
                    "file": source, "record": record_text(record), "reason": str(error)})
                continue
            out_of_range += bad_ids
            rows["eval" if self._splitter.is_eval(row, record) else "train"].append(values)
        schema = self._typer.arrow_schema
        tables = [pa.Table.from_arrays([pa.array(list(c), f.type) for c, f in zip(zip(*rows[split]), schema)], schema=schema)
                  if rows[split] else schema.empty_table() for split in ("train", "eval")]
        yield from self._emit(tables[0], tables[1], invalid, out_of_range)

    def _emit(self, train: pa.Table, evaluation: pa.Table, invalid: int, out_of_range: int) -> Iterator[Any]:
        valid = train.num_rows + evaluation.num_rows
        for name, value in (("rows_read", valid + invalid), ("rows_valid", valid), ("rows_invalid", invalid),
                            ("rows_train", train.num_rows), ("rows_eval", evaluation.num_rows),
                            ("identity_out_of_range", out_of_range)):
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
    """Plain typed columns -> the list columns tf.Transform's tensor adapter expects (one value per row)."""
    offsets = pa.array(range(batch.num_rows + 1), type=pa.int64())
    arrays = [pa.LargeListArray.from_arrays(offsets, batch.column(field.name).cast(field.type.value_type))
              for field in adapter.arrow_schema]
    return pa.RecordBatch.from_arrays(arrays, schema=adapter.arrow_schema)


class AnalyzeAndTransform(beam.PTransform):
    """Analyzes the train split only (no eval leakage into vocabularies or scaling), transforms both.

    Input: (train batches to analyze, train batches to transform, eval batches to transform). The
    analyzed and the transformed train batches are the same rows from two reads of the input:
    batches waiting for the transform_fn side input would otherwise be held by the runner in full
    (in memory on the DirectRunner), so memory would grow with the data.

    Returns:
        (lists of serialized train tf.Examples, the same for eval, transform_fn).
    """

    def __init__(self, config: Config, schema: RawSchema):
        super().__init__()
        self._config = config
        spec = raw_feature_spec(schema)
        self._adapter = tfxio.TFExampleBeamRecord(
            physical_format="arrow", telemetry_descriptors=["embedpipe"],
            schema=schema_utils.schema_from_feature_spec(spec)).TensorAdapterConfig()

    def expand(self, splits: tuple[beam.PCollection, beam.PCollection, beam.PCollection]) -> tuple:
        analyzed, train, evaluation = splits
        preprocessing_fn = build_preprocessing_fn(
            self._config.features, self._config.label_column, self._config.model.task == "classification")
        analyze_input = analyzed | "ToTransformInput[analyze]" >> beam.Map(to_transform_input, self._adapter)
        train_input = train | "ToTransformInput[train]" >> beam.Map(to_transform_input, self._adapter)
        eval_input = evaluation | "ToTransformInput[eval]" >> beam.Map(to_transform_input, self._adapter)
        transform_fn = (analyze_input, self._adapter) | "AnalyzeDataset" >> tft_beam.AnalyzeDataset(preprocessing_fn)
        encoded = []
        for split, data in (("train", train_input), ("eval", eval_input)):
            transformed, metadata = (((data, self._adapter), transform_fn)
                                     | f"TransformDataset[{split}]" >> tft_beam.TransformDataset(output_record_batches=True))
            # As tft_beam.EncodeTransformedDataset, but one element per record batch, not per example.
            encoder = (metadata.deferred_metadata
                       | f"MakeEncoder[{split}]" >> beam.Map(lambda m: tfxio.RecordBatchToExamplesEncoder(m.schema)))
            encoded.append(transformed | f"EncodeExamples[{split}]" >> beam.Map(
                lambda batch, coder: coder.encode(batch[0]), coder=beam.pvalue.AsSingleton(encoder)))
        return encoded[0], encoded[1], transform_fn


class WriteExamples(beam.PTransform):
    """Lists of serialized tf.Examples -> `<prefix>-SSSSS-of-NNNNN.tfrecord.gz`."""

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
                | "WriteInvalidRows" >> beam.io.WriteToText(os.path.join(self._directory, "invalid"),
                                                            file_name_suffix=".jsonl"))


def build_pipeline(pipeline: beam.Pipeline, config: Config, schema: RawSchema, staging: str,
                   temp_dir: str) -> None:
    """Wires the preprocess job into `pipeline`, writing everything under `staging`."""
    with tft_beam.Context(temp_dir=temp_dir):
        records = pipeline | "ReadRawRows" >> ReadRawRows(config, schema)
        rows = records | "DecodeAndSplitRows" >> DecodeAndSplitRows(config, schema)
        # The transform pass reads and decodes the input again (see AnalyzeAndTransform).
        reread = (pipeline | "ReadRawRowsAgain" >> ReadRawRows(config, schema)
                  | "DecodeAndSplitRowsAgain" >> DecodeAndSplitRows(config, schema, count=False))
        train_examples, eval_examples, transform_fn = (
            (rows.train, reread.train, reread.eval) | "AnalyzeAndTransform" >> AnalyzeAndTransform(config, schema))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(os.path.join(staging, "transform"))
        _ = train_examples | "WriteTrainExamples" >> WriteExamples(os.path.join(staging, "data", "train"))
        _ = eval_examples | "WriteEvalExamples" >> WriteExamples(os.path.join(staging, "data", "eval"))
        _ = rows.invalid | "WriteInvalidRows" >> WriteInvalidRows(os.path.join(staging, "invalid"))
        _ = (rows.train, rows.eval) | "WriteEntityTables" >> WriteEntityTables(config, schema, staging)


def read_counters(result: beam.runners.runner.PipelineResult, names: tuple[str, ...]) -> dict[str, int]:
    """Committed values of all embedpipe Beam counters; `names` are reported as 0 when they never fired."""
    counts = {name: 0 for name in names}
    for counter in result.metrics().query(MetricsFilter().with_namespace("embedpipe"))["counters"]:
        name = counter.key.metric.name
        counts[name] = counts.get(name, 0) + (counter.committed or 0)
    return counts


def check_invalid_fraction(counts: dict[str, int], max_fraction: float, invalid_dir: str) -> None:
    """Raises InvalidInputError when the input is empty or has too many invalid rows."""
    read, invalid = counts["rows_read"], counts["rows_invalid"]
    if read == 0:
        raise InvalidInputError("the input has no rows")
    if counts["rows_valid"] == 0 or counts["rows_train"] == 0:
        raise InvalidInputError(f"no valid training row among {read} rows read; see {invalid_dir}")
    if invalid / read > max_fraction:
        raise InvalidInputError(
            f"{invalid} of {read} rows invalid ({invalid / read:.2%}), above input.max_invalid_fraction "
            f"{max_fraction:.2%}; see {invalid_dir}")


def run_preprocess(config: Config, run: RunDir, beam_args: list[str]) -> dict[str, Any]:
    """Runs the preprocess job for `run` and publishes its outputs.

    Returns:
        The row counts recorded in the manifest.

    Raises:
        ConfigError: the input does not match the config (before any Beam work).
        InvalidInputError: too many invalid rows (only `invalid/` is published).
    """
    schema = inspect_input(config)
    with run.stage("preprocess") as info:
        staging = run.clear_staging("preprocess")
        options = PipelineOptions(beam_args)
        temp_dir = options.view_as(GoogleCloudOptions).temp_location or os.path.join(staging, "tmp")
        metadata_io.write_metadata(dataset_metadata.DatasetMetadata(
            schema_utils.schema_from_feature_spec(raw_feature_spec(schema))),
            os.path.join(staging, "transform", "metadata"))
        logger.info("preprocess: %d input file(s) -> %s", len(schema.files), run.path)
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, config, schema, staging, temp_dir)
        result = pipeline.run()
        result.wait_until_finish()
        info["counts"] = counts = read_counters(result, COUNTERS)
        logger.info("preprocess: %s", ", ".join(f"{k}={v}" for k, v in counts.items()))
        try:
            check_invalid_fraction(counts, config.input.max_invalid_fraction, run.join("invalid"))
        except InvalidInputError:
            run.publish("preprocess", ["invalid"])  # so the user can read what was rejected
            raise
    return counts
