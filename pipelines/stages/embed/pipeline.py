"""Stage 3: every entity through the exported model, in batches, to Parquet.

For each `entities` entry the job reads the entity table written by preprocess, keeps every
vocabulary entry (vocabulary and text keys; entries never seen get count 0) or every distinct raw
value (hash, cross, identity, vocabulary_list keys), and feeds the key's raw columns (and, for a
two-tower entity, the rest of its tower's raw features) to the SavedModel's signature through
Beam's RunInference: one `ModelHandler` for all entities, so each worker process loads the model
once, and RunInference reports load and inference metrics. The output is
`embeddings/<entity>/part-*.parquet` with the schema of DESIGN.md.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Callable, Iterable, Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.core import fs
from pipelines.core.beam_runner import COUNTER_NAMESPACE, make_pipeline, read_counters, run_pipeline, runner_name
from pipelines.core.config import Config, FeatureConfig, SideTableConfig
from pipelines.core.config_parse import config_from_dict
from pipelines.core.names import CANDIDATE_SIGNATURE, QUERY_SIGNATURE, signature_name
from pipelines.core.quiet import QUIET_NATIVE_LOGS
from pipelines.core.rundir import RunDir, utc_now
from pipelines.core.vectors import vector_array
from pipelines.stages.embed.collisions import BUCKET_COLUMN, CountSharedBuckets, collision_facts, drop_bucket_column
from pipelines.stages.embed.side_tables import AddSideColumns, ReadSideTable, side_table_types

logger = logging.getLogger(__name__)

EMBED_BATCH_SIZE = 4096
DROPPED_KEYS_SHOWN = 5
METRICS_NAMESPACE = "embedpipe.embed"
_MISSING = {"string": "", "int64": -1, "float32": float("nan")}
_ARROW_INPUT = {"string": pa.string(), "int64": pa.int64(), "float32": pa.float32()}

# Called with the staged run and each entity's vector space; returns the facts to record, if any.
Aligner = Callable[[RunDir, dict[str, str]], dict | None]


@dataclasses.dataclass(frozen=True)
class EntityPlan:
    """How one entity is enumerated and embedded.

    Attributes:
        name: entity name (output directory and Parquet `entity` metadata).
        feature: the key feature.
        signature: SavedModel signature computing the vector.
        inputs: raw column -> dtype name ("string", "int64", "float32"), the signature's inputs.
        vocabulary: the keys to publish when the feature has a fixed key set, else None (all seen keys).
        table_schema: schema of the entity table written by preprocess.
        schema: output Arrow schema with its key-value metadata.
        space: entities in one space (a two-tower run's users and items) share one alignment.
        side: where `metadata_from` columns come from, and their published types (None without).
    """
    name: str
    feature: FeatureConfig
    signature: str
    inputs: dict[str, str]
    vocabulary: tuple[str, ...] | None
    table_schema: pa.Schema
    schema: pa.Schema
    space: str
    side: tuple[SideTableConfig, dict[str, pa.DataType]] | None = None


def plan_entities(config: Config, run: RunDir) -> list[EntityPlan]:
    """One plan per configured entity, read from the run's config, transform output and entity tables."""
    import tensorflow_transform as tft
    tft_output = tft.TFTransformOutput(run.transform_dir)
    raw_spec = tft_output.raw_feature_spec()
    plans = []
    for entity in config.entities:
        feature = config.features[entity.key]
        tower = config.tower_of(entity.key)
        dim = config.model.embedding_dim if tower else config.model.dim_of(entity.key)
        table = fs.read_parquet_schema(run.entity_table_dir(entity.name))
        side = entity.metadata_from
        side_types = {} if side is None else side_table_types(side, f"{entity.name}.metadata_from")
        fields = [pa.field("key", pa.string()), pa.field("embedding", pa.list_(pa.float32(), dim)),
                  pa.field("count", pa.int64())] + [table.field(m) for m in entity.metadata]
        fields += [pa.field(column, kind) for column, kind in side_types.items()]
        metadata = {"run_id": run.run_id, "entity": entity.name, "model_kind": config.model.kind,
                    "dim": str(dim), "similarity": "dot" if tower else "cosine", "created_at": utc_now(),
                    "key_feature": entity.key}
        plans.append(EntityPlan(
            name=entity.name, feature=feature,
            signature={"query": QUERY_SIGNATURE, "candidate": CANDIDATE_SIGNATURE}.get(tower, signature_name(entity.key)),
            inputs={c: raw_spec[c].dtype.name for c in config.entity_feature_columns(entity)},
            vocabulary=_vocabulary(feature, tft_output), table_schema=table,
            schema=pa.schema(fields, metadata=metadata), space="towers" if tower else entity.name,
            side=None if side is None else (side, side_types)))
    return plans


def _vocabulary(feature: FeatureConfig, tft_output) -> tuple[str, ...] | None:
    if feature.uses_vocabulary_file:
        return tuple(v.decode("utf-8") for v in tft_output.vocabulary_by_name(feature.name))
    if feature.type == "vocabulary_list":
        return feature.values
    return None


def slice_table(table: pa.Table, size: int = EMBED_BATCH_SIZE) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


class ReadEntityRows(beam.PTransform):
    """Entity tables of at most EMBED_BATCH_SIZE rows {key, count, raw columns...}.

    With a fixed key set (a vocabulary), exactly those keys: entries never seen get count 0; keys
    outside it (below `frequency_threshold`, beyond `top_k`) are counted and a few of them named.
    """

    def __init__(self, table_dir: str, plan: EntityPlan):
        super().__init__()
        self._pattern = fs.join(table_dir, "*.parquet")
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
                | "KeepVocabulary" >> beam.ParDo(KeepVocabularyRows(self._plan.name))
                | "BatchEntities" >> beam.BatchElements(min_batch_size=EMBED_BATCH_SIZE, max_batch_size=EMBED_BATCH_SIZE)
                | "ToEntityTable" >> beam.Map(lambda rows: pa.Table.from_pylist(rows, schema=schema)))


class KeepVocabularyRows(beam.DoFn):
    """(key, {"vocabulary": [...], "rows": [...]}) -> the key's row when it is in the vocabulary.

    Keys outside it are counted (`dropped_keys_<entity>`) and the first few of each worker named
    (a string-set metric), so the terminal can say which were left out.
    """

    def __init__(self, entity: str):
        self._dropped = Metrics.counter(COUNTER_NAMESPACE, f"dropped_keys_{entity}")
        self._examples = Metrics.string_set(COUNTER_NAMESPACE, f"dropped_keys_{entity}")
        self._named = 0

    def process(self, item: tuple[str, dict[str, list]]) -> Iterator[dict[str, Any]]:
        key, groups = item
        if not groups["vocabulary"]:
            self._dropped.inc()
            if self._named < DROPPED_KEYS_SHOWN:
                self._examples.add(key)
                self._named += 1
            return
        yield groups["rows"][0] if groups["rows"] else {"key": key, "count": 0}


def model_inputs(plan: EntityPlan, table: pa.Table) -> dict[str, Any]:
    """The signature's input columns for a batch of entity rows (NumPy arrays [batch]).

    A single-column key is its own value; a cross's parts and a tower's other features come from
    the entity table.
    """
    inputs = {}
    for column, dtype in plan.inputs.items():
        values = table.column("key") if plan.feature.key_is_raw_value and column == plan.feature.column \
            else table.column(column)
        values = pc.fill_null(values.combine_chunks().cast(_ARROW_INPUT[dtype]), _MISSING[dtype])
        inputs[column] = values.to_numpy(zero_copy_only=False)
    return inputs


class EntityModelHandler(ModelHandler[tuple[str, pa.Table], tuple[str, pa.Table], Any]):
    """RunInference's view of the exported SavedModel: (entity, entity rows) -> (entity, output rows).

    Elements are already tables of EMBED_BATCH_SIZE rows, so RunInference batches one at a time.
    """

    def __init__(self, export_dir: str, plans: list[EntityPlan]):
        super().__init__(min_batch_size=1, max_batch_size=1, env_vars=dict(QUIET_NATIVE_LOGS))
        self._export_dir = export_dir
        self._plans = {plan.name: plan for plan in plans}

    def load_model(self) -> Any:
        import tensorflow as tf
        return tf.saved_model.load(self._export_dir)

    def run_inference(self, batch: Sequence[tuple[str, pa.Table]], model: Any,
                      inference_args: dict[str, Any] | None = None) -> Iterable[tuple[str, pa.Table]]:
        import tensorflow as tf
        for name, table in batch:
            plan = self._plans[name]
            inputs = {column: tf.constant(values) for column, values in model_inputs(plan, table).items()}
            vectors = model.signatures[plan.signature](**inputs)["embedding"].numpy()
            keys = table.column("key").combine_chunks()
            columns = {"key": keys, "embedding": vector_array(vectors), "count": pc.fill_null(table.column("count"), 0)}
            side_columns = plan.side[1] if plan.side else {}
            arrays = [columns[f.name] if f.name in columns else pa.nulls(len(keys), f.type) if f.name in side_columns
                      else table.column(f.name).cast(f.type) for f in plan.schema]
            output = pa.Table.from_arrays(arrays, schema=plan.schema)
            if plan.feature.is_hashed:  # the transform's own hash of the key: which keys share a row
                buckets = tf.strings.to_hash_bucket_fast(keys.to_numpy(zero_copy_only=False), plan.feature.hash_buckets)
                output = output.append_column(BUCKET_COLUMN, pa.array(buckets.numpy(), pa.int64()))
            Metrics.counter(COUNTER_NAMESPACE, f"entities_{name}").inc(table.num_rows)
            yield name, output

    def get_num_bytes(self, batch: Sequence[tuple[str, pa.Table]]) -> int:
        return sum(table.nbytes for _, table in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


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


def count_untrained(table: pa.Table, entity: str) -> pa.Table:
    """Counts the batch's keys never seen in training (count 0: their vectors are still the initial ones)."""
    untrained = pc.sum(pc.equal(table.column("count"), 0)).as_py() or 0
    Metrics.counter(COUNTER_NAMESPACE, f"untrained_keys_{entity}").inc(untrained)
    return table


class EmbedEntities(beam.PTransform):
    """Every entity's rows -> RunInference -> `embeddings/<entity>/part-*.parquet` in the staged run."""

    def __init__(self, run: RunDir, staged: RunDir, plans: list[EntityPlan]):
        super().__init__()
        self._run = run
        self._staged = staged
        self._plans = plans

    def expand(self, pipeline: beam.Pipeline) -> dict[str, beam.PCollection]:
        tagged = [pipeline
                  | f"ReadEntityRows[{plan.name}]" >> ReadEntityRows(self._run.entity_table_dir(plan.name), plan)
                  | f"CountUntrained[{plan.name}]" >> beam.Map(count_untrained, plan.name)
                  | f"TagEntity[{plan.name}]" >> beam.Map(lambda table, name: (name, table), plan.name)
                  for plan in self._plans]
        embedded = (tagged | "FlattenEntities" >> beam.Flatten()
                    | "EmbedBatches" >> RunInference(EntityModelHandler(self._run.export_dir, self._plans)))
        names = [plan.name for plan in self._plans]
        parts = embedded | "PartitionByEntity" >> beam.Partition(lambda item, _: names.index(item[0]), len(names))
        written = {}
        for plan, part in zip(self._plans, parts):
            tables = part | f"DropEntityName[{plan.name}]" >> beam.Map(lambda item: item[1])
            if plan.feature.is_hashed:
                _ = (tables
                     | f"CountSharedBuckets[{plan.name}]" >> CountSharedBuckets(plan.feature.hash_buckets)
                     | f"FormatCollisions[{plan.name}]" >> beam.Map(json.dumps)
                     | f"WriteCollisions[{plan.name}]" >> beam.io.WriteToText(
                         fs.join(self._staged.join("collisions"), plan.name), shard_name_template=""))
                tables = tables | f"DropBuckets[{plan.name}]" >> beam.Map(drop_bucket_column)
            if plan.side is not None:
                side, types = plan.side
                rows = pipeline | f"ReadSideTable[{plan.name}]" >> ReadSideTable(side)
                tables = tables | f"AddSideColumns[{plan.name}]" >> beam.ParDo(
                    AddSideColumns(plan.name, side.columns, types), side=beam.pvalue.AsDict(rows))
            written[plan.name] = tables | f"WriteEmbeddings[{plan.name}]" >> beam.io.Write(EmbeddingParquetSink(
                fs.join(self._staged.embeddings_dir(plan.name), "part"), plan.schema))
        return written


def dropped_key_examples(result: beam.runners.runner.PipelineResult) -> dict[str, list[str]]:
    """Per entity, a few keys left out of its vocabulary, sorted."""
    from apache_beam.metrics.metric import MetricsFilter
    found: dict[str, set[str]] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))
    for metric in query.get("string_sets", []):
        name = metric.key.metric.name.removeprefix("dropped_keys_")
        found.setdefault(name, set()).update(metric.committed or ())
    return {name: sorted(keys)[:DROPPED_KEYS_SHOWN] for name, keys in found.items()}


def inference_facts(result: beam.runners.runner.PipelineResult) -> dict[str, float]:
    """RunInference's own metrics: model loads (one per worker process) and their time, batch latency."""
    from apache_beam.metrics.metric import MetricsFilter
    facts: dict[str, float] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for metric in query.get("distributions", []):
        value, name = metric.committed, metric.key.metric.name
        if value is None or not value.count:
            continue
        if name == "load_model_latency_milli_secs":
            facts["model_loads"] = facts.get("model_loads", 0) + value.count
            facts["model_load_seconds"] = round(value.sum / value.count / 1000, 3)
        elif name == "inference_batch_latency_micro_secs":
            facts["batches"] = facts.get("batches", 0) + value.count
            facts["milliseconds_per_batch"] = round(value.sum / value.count / 1000, 3)
    return facts


def run_embed(run: RunDir, options: PipelineOptions, align: Aligner | None = None) -> dict[str, Any]:
    """Runs the embed job for a trained run and publishes `embeddings/`.

    Args:
        run: a run whose train stage succeeded (its lock held by the caller).
        options: Beam pipeline options.
        align: rotates the staged vectors onto another run's space before they are published.

    Returns:
        The facts recorded in the manifest (entities written per name, keys left out, runner, ...).
    """
    run.require_stage("train", f"train {run.path}")
    config = config_from_dict(run.read_manifest()["config"])
    plans = plan_entities(config, run)
    with run.stage("embed") as info:
        staged = RunDir(run.clear_staging("embed"))
        info["runner"] = runner_name(options)
        pipeline = make_pipeline(options)
        _ = pipeline | "EmbedEntities" >> EmbedEntities(run, staged, plans)
        result = run_pipeline(pipeline)
        counters = read_counters(result, tuple(f"entities_{p.name}" for p in plans))
        info["entities"] = {p.name: counters[f"entities_{p.name}"] for p in plans}
        info["dropped_keys"] = {p.name: counters.get(f"dropped_keys_{p.name}", 0) for p in plans}
        info["dropped_key_examples"] = dropped_key_examples(result)
        info["untrained_keys"] = {p.name: counters.get(f"untrained_keys_{p.name}", 0) for p in plans}
        hashed = [p for p in plans if p.feature.is_hashed]
        if hashed:
            info["collisions"] = {p.name: collision_facts(json.loads(fs.read_text(fs.join(staged.join("collisions"), p.name))),
                                                          info["entities"][p.name], p.feature.hash_buckets)
                                  for p in hashed}
            fs.remove(staged.join("collisions"))
        missing = {p.name: counters.get(f"metadata_missing_{p.name}", 0) for p in plans if p.side is not None}
        if missing:
            info["metadata_missing"] = missing
        info["inference"] = inference_facts(result)
        if align is not None:
            aligned = align(staged, {p.name: p.space for p in plans})
            if aligned is not None:
                info["aligned_to"] = aligned
    return info
