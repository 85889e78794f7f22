"""Stage 3: every entity through the exported model, in batches, to Parquet.

For each `entities` entry the job reads the entity table written by preprocess, keeps every
vocabulary entry (vocabulary and text keys; entries never seen get count 0) or every distinct raw
value (hash, cross, identity, vocabulary_list keys), feeds the key's raw columns (and, for a
two-tower entity, the rest of its tower's raw features) to the SavedModel's signature, and writes
`embeddings/<entity>/part-*.parquet` with the schema of DESIGN.md.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_transform as tft
from apache_beam.io import filebasedsink
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.config import Config, FeatureConfig, config_from_dict
from pipelines.entities import ENTITY_TABLES
from pipelines.preprocess import read_counters
from pipelines.rundir import RunDir, resolve_run, utc_now
from pipelines.vector_columns import vector_array
from pipelines.versions import align_embeddings
from trainer.export import signature_name
from transforms.preprocessing import CROSS_SEPARATOR

logger = logging.getLogger(__name__)

EMBED_BATCH_SIZE = 4096
_MISSING = {tf.string: "", tf.int64: -1, tf.float32: float("nan")}
_ARROW_INPUT = {tf.string: pa.string(), tf.int64: pa.int64(), tf.float32: pa.float32()}


@dataclasses.dataclass(frozen=True)
class EntityPlan:
    """How one entity is enumerated and embedded.

    Attributes:
        name: entity name (output directory and Parquet `entity` metadata).
        feature: the key feature.
        signature: SavedModel signature computing the vector.
        inputs: raw column -> tf dtype name, the signature's inputs.
        vocabulary: the keys to publish when the feature has a fixed key set, else None (all seen keys).
        table_schema: schema of the entity table written by preprocess.
        schema: output Arrow schema with its key-value metadata.
    """
    name: str
    feature: FeatureConfig
    signature: str
    inputs: dict[str, str]
    vocabulary: tuple[str, ...] | None
    table_schema: pa.Schema
    schema: pa.Schema

    @property
    def dim(self) -> int:
        return self.schema.field("embedding").type.list_size


def plan_entities(config: Config, run: RunDir, tft_output: tft.TFTransformOutput) -> list[EntityPlan]:
    """One plan per configured entity, read from the run's config, transform output and entity tables."""
    raw_spec = tft_output.raw_feature_spec()
    plans = []
    for entity in config.entities:
        feature = config.features[entity.key]
        tower = config.tower_of(entity.key)
        columns = config.entity_feature_columns(entity)
        dim = config.model.embedding_dim if tower else config.model.dim_of(entity.key)
        table = pq.read_schema(_first_file(run.join(ENTITY_TABLES, entity.name)))
        fields = [pa.field("key", pa.string()), pa.field("embedding", pa.list_(pa.float32(), dim)),
                  pa.field("count", pa.int64())] + [table.field(m) for m in entity.metadata]
        metadata = {"run_id": run.run_id, "entity": entity.name, "model_kind": config.model.kind,
                    "dim": str(dim), "similarity": "dot" if tower else "cosine", "created_at": utc_now(),
                    "key_feature": entity.key}
        plans.append(EntityPlan(
            name=entity.name, feature=feature,
            signature=f"{tower}_embedding" if tower else signature_name(entity.key),
            inputs={c: raw_spec[c].dtype.name for c in columns},
            vocabulary=_vocabulary(feature, tft_output), table_schema=table,
            schema=pa.schema(fields, metadata=metadata)))
    return plans


def _vocabulary(feature: FeatureConfig, tft_output: tft.TFTransformOutput) -> tuple[str, ...] | None:
    if feature.uses_vocabulary_file:
        return tuple(v.decode("utf-8") for v in tft_output.vocabulary_by_name(feature.name))
    if feature.type == "vocabulary_list":
        return feature.values
    return None


def _first_file(directory: str) -> str:
    files = sorted(tf.io.gfile.glob(os.path.join(directory, "*.parquet")))
    if not files:
        raise FileNotFoundError(f"{directory}: no entity table; rerun preprocess")
    return files[0]


def key_columns(feature: FeatureConfig, keys: pa.Array) -> dict[str, pa.Array]:
    """Raw column values the keys stand for ("3|17" of a cross -> both columns)."""
    if feature.type != "cross":
        return {feature.column: keys}
    parts = pc.split_pattern(keys, CROSS_SEPARATOR)
    return {column: pc.list_element(parts, index) for index, column in enumerate(feature.columns)}


def slice_table(table: pa.Table, size: int = EMBED_BATCH_SIZE) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


class ReadEntityRows(beam.PTransform):
    """Entity tables of at most EMBED_BATCH_SIZE rows {key, count, raw columns...}.

    With a fixed key set (a vocabulary), exactly those keys: entries never seen get count 0, keys
    outside it are counted (`entity_keys_outside_vocabulary`) and dropped.
    """

    def __init__(self, table_dir: str, plan: EntityPlan):
        super().__init__()
        self._pattern = os.path.join(table_dir, "*.parquet")
        self._plan = plan

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        if self._plan.vocabulary is None:
            return (pipeline | "ReadEntityTable" >> beam.io.ReadFromParquetBatched(self._pattern)
                    | "SliceEntityTable" >> beam.FlatMap(slice_table))
        rows = pipeline | "ReadEntityTable" >> beam.io.ReadFromParquet(self._pattern)
        vocabulary = (pipeline | "CreateVocabulary" >> beam.Create(self._plan.vocabulary)
                      | "KeyVocabulary" >> beam.Map(lambda key: (key, None)))
        schema = self._plan.table_schema
        return ({"vocabulary": vocabulary, "rows": rows | "KeyByEntity" >> beam.Map(lambda row: (row["key"], row))}
                | "JoinVocabulary" >> beam.CoGroupByKey()
                | "KeepVocabulary" >> beam.FlatMap(_vocabulary_row)
                | "BatchEntities" >> beam.BatchElements(min_batch_size=EMBED_BATCH_SIZE, max_batch_size=EMBED_BATCH_SIZE)
                | "ToEntityTable" >> beam.Map(lambda rows: pa.Table.from_pylist(rows, schema=schema)))


def _vocabulary_row(item: tuple[str, dict[str, list]]) -> Iterator[dict[str, Any]]:
    key, groups = item
    if not groups["vocabulary"]:
        Metrics.counter("embedpipe", "entity_keys_outside_vocabulary").inc()
        return
    yield groups["rows"][0] if groups["rows"] else {"key": key, "count": 0}


class EmbedBatches(beam.DoFn):
    """Entity tables -> output tables: one model call per batch, columns built without Python loops.

    The SavedModel is loaded once per DoFn instance (`setup`), as Beam's RunInference does.
    """

    def __init__(self, export_dir: str, plan: EntityPlan):
        self._export_dir = export_dir
        self._plan = plan
        self._counter = Metrics.counter("embedpipe", f"entities_{plan.name}")

    def setup(self) -> None:
        self._signature = tf.saved_model.load(self._export_dir).signatures[self._plan.signature]

    def process(self, table: pa.Table) -> Iterator[pa.Table]:
        plan = self._plan
        keys = table.column("key").combine_chunks()
        from_key = key_columns(plan.feature, keys)
        inputs = {}
        for column, dtype_name in plan.inputs.items():
            dtype = tf.as_dtype(dtype_name)
            values = from_key[column] if column in from_key else table.column(column).combine_chunks()
            values = pc.fill_null(values.cast(_ARROW_INPUT[dtype]), _MISSING[dtype])
            inputs[column] = tf.constant(values.to_numpy(zero_copy_only=False), dtype)
        vectors = self._signature(**inputs)["embedding"].numpy()
        columns = {"key": keys, "embedding": vector_array(vectors),
                   "count": pc.fill_null(table.column("count"), 0)}
        arrays = [columns[f.name] if f.name in columns else table.column(f.name).cast(f.type) for f in plan.schema]
        self._counter.inc(table.num_rows)
        yield pa.Table.from_arrays(arrays, schema=plan.schema)


class EmbeddingParquetSink(filebasedsink.FileBasedSink):
    """Parquet files of Arrow tables; no dictionary encoding of the vectors (they never repeat)."""

    def __init__(self, file_path_prefix: str, schema: pa.Schema):
        super().__init__(file_path_prefix, coder=None, file_name_suffix=".parquet",
                         mime_type="application/x-parquet",
                         compression_type=beam.io.filesystem.CompressionTypes.UNCOMPRESSED)
        self._schema = schema

    def open(self, temp_path: str) -> tuple[Any, pq.ParquetWriter]:
        handle = super().open(temp_path)
        return handle, pq.ParquetWriter(handle, self._schema, use_dictionary=["key"], compression="snappy")

    def write_record(self, file_handle: tuple[Any, pq.ParquetWriter], table: pa.Table) -> None:
        file_handle[1].write_table(table)

    def close(self, file_handle: tuple[Any, pq.ParquetWriter]) -> None:
        handle, writer = file_handle
        writer.close()
        super().close(handle)


class EmbedEntities(beam.PTransform):
    """Entity rows -> batched model calls -> `<root>/embeddings/<entity>/part-*.parquet`."""

    def __init__(self, run: RunDir, staging: str, plan: EntityPlan):
        super().__init__()
        self._run = run
        self._staging = staging
        self._plan = plan

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        plan = self._plan
        return (pipeline
                | "ReadEntityRows" >> ReadEntityRows(self._run.join(ENTITY_TABLES, plan.name), plan)
                | "EmbedBatches" >> beam.ParDo(EmbedBatches(self._run.export_dir, plan))
                | "WriteEmbeddings" >> beam.io.Write(EmbeddingParquetSink(
                    os.path.join(self._staging, "embeddings", plan.name, "part"), plan.schema)))


def previous_run(run: RunDir, align_to: str | None) -> RunDir | None:
    """The run to align to: `previous` is the output's LATEST (when it is another run), else a path."""
    if not align_to:
        return None
    target = resolve_run(run.output if align_to == "previous" else align_to)
    if not target.exists() or target.path == run.path:
        logger.info("align: no previous run to align to")
        return None
    return target


def run_embed(run: RunDir, beam_args: list[str]) -> dict[str, int]:
    """Runs the embed job for a trained run and publishes `embeddings/`; returns entities per name."""
    manifest = run.read_manifest()
    if manifest.get("stages", {}).get("train", {}).get("status") != "succeeded":
        raise RuntimeError(f"{run.path}: train has not succeeded; run `embedpipe train` first")
    config = config_from_dict(manifest["config"])
    plans = plan_entities(config, run, tft.TFTransformOutput(run.transform_dir))
    with run.stage("embed") as info:
        staging = run.clear_staging("embed")
        pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
        for plan in plans:
            _ = pipeline | f"EmbedEntities[{plan.name}]" >> EmbedEntities(run, staging, plan)
        result = pipeline.run()
        result.wait_until_finish()
        counters = read_counters(result, tuple(f"entities_{p.name}" for p in plans))
        info["entities"] = entities = {p.name: counters[f"entities_{p.name}"] for p in plans}
        info["skipped_outside_vocabulary"] = counters.get("entity_keys_outside_vocabulary", 0)
        previous = previous_run(run, config.align_to)
        if previous is not None:
            spaces = {p.name: ("towers" if config.tower_of(p.feature.name) else p.name) for p in plans}
            info["aligned_to"] = {"run": previous.path, "spaces": align_embeddings(
                os.path.join(staging, "embeddings"), previous, [p.name for p in plans], spaces)}
    logger.info("embed: %s", ", ".join(f"{name}={count}" for name, count in entities.items()))
    return entities
