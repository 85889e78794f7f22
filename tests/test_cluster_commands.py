"""The README's Dataflow, Flink and Vertex AI commands: their options parse, and the Beam jobs build
with them and serialise as a runner receives them (nothing is submitted)."""
from __future__ import annotations

import re
import shlex

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import (FlinkRunnerOptions, GoogleCloudOptions, PipelineOptions,
                                                  PortableOptions, SetupOptions, StandardOptions, WorkerOptions)

from pipelines.cli.parser import build_parser
from pipelines.core.beam_runner import make_pipeline, pipeline_options
from pipelines.core.config_parse import load_config
from pipelines.core.rundir import RunDir
from pipelines.stages.embed.pipeline import EmbedEntities, plan_entities
from pipelines.stages.preprocess.pipeline import build_graph_job, build_pipeline
from pipelines.stages.preprocess.schema import inspect_input
from tests.conftest import ROOT, TAXI_SAMPLE, write_config
from trainer import task


def readme_command(name: str) -> list[str]:
    """The command in the README's fenced block tagged `name`, split as a shell would."""
    match = re.search(rf"```{name}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, f"README has no ```{name} block"
    return shlex.split(match.group(1).replace("\\\n", " "))


def embedpipe_options(name: str) -> tuple[object, PipelineOptions]:
    command = readme_command(name)
    assert command[0] == "embedpipe"
    args, beam_args = build_parser().parse_known_args(command[1:])
    assert args.command == "run" and (ROOT / args.config).exists()
    # Beam's flag for testing runners without submitting; it also skips Dataflow's check of the
    # temp bucket, which needs credentials and the network this test does not have.
    return args, pipeline_options(beam_args + ["--dry_run", "True"])


def transform_names(pipeline: beam.Pipeline) -> set[str]:
    """Serialises the pipeline (pickling every DoFn, as submission does) and returns its step names."""
    proto = pipeline.to_runner_api()
    return {t.unique_name.split("/")[-1] for t in proto.components.transforms.values()}


def assert_jobs_build(options: PipelineOptions, taxi_run, tmp_path) -> None:
    config, _ = load_config(str(write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)})))
    preprocess = make_pipeline(options)
    assert preprocess.runner.__class__.__name__ != "FnApiRunner"     # --runner passes through
    build_pipeline(preprocess, config, inspect_input(config), RunDir(str(tmp_path / "staging")), str(tmp_path / "tmp"))
    assert {"ReadRawRows", "DecodeAndSplitRows", "AnalyzeAndTransform", "WriteTrainExamples",
            "WriteEvalExamples", "WriteInvalidRows", "WriteEntityTables"} <= transform_names(preprocess)
    assert_graph_jobs_build(options, tmp_path)
    run = RunDir(str(taxi_run))
    embed = make_pipeline(options)
    _ = embed | "EmbedEntities" >> EmbedEntities(run, RunDir(str(tmp_path / "embed")), plan_entities(config, run))
    names = transform_names(embed)
    assert {"EmbedBatches", "FlattenEntities"} <= names and any(n.startswith("WriteEmbeddings[") for n in names)


def assert_graph_jobs_build(options: PipelineOptions, tmp_path) -> None:
    """A graph config's two preprocess jobs (build the graph, walk it) build and serialise too."""
    (tmp_path / "edges.csv").write_text("source,target\na,b\nb,c\n")
    settings = yaml.safe_load((ROOT / "examples" / "graph.yaml").read_text())
    settings["input"]["path"] = str(tmp_path / "edges.csv")
    (tmp_path / "graph.yaml").write_text(yaml.safe_dump(settings))
    config, _ = load_config(str(tmp_path / "graph.yaml"))
    schema, staged = inspect_input(config), RunDir(str(tmp_path / "graph-staging"))
    building = make_pipeline(options)
    build_graph_job(building, config, schema, staged, parts_dir=None)
    assert {"GatherNodeNames", "ToShardParts", "GroupPartsByShard", "MergeAndSaveShards", "SaveNodes",
            "WriteInvalidRows"} <= transform_names(building)
    walking = make_pipeline(options)
    build_pipeline(walking, config, schema, staged, str(tmp_path / "tmp"), graph_nodes=3)
    assert {"GenerateWalks", "AnalyzeAndTransform", "WriteTrainExamples"} <= transform_names(walking)


def test_dataflow_command(taxi_run, tmp_path):
    args, options = embedpipe_options("dataflow")
    assert args.output.startswith("gs://")
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region) == ("my-project", "us-central1") and cloud.temp_location.startswith("gs://")
    workers = options.view_as(WorkerOptions)
    assert (workers.machine_type, workers.num_workers, workers.max_num_workers) == ("n2-standard-4", 4, 20)
    assert (ROOT / options.view_as(SetupOptions).setup_file).resolve() == ROOT / "setup.py"
    assert_jobs_build(options, taxi_run, tmp_path)


def test_flink_command(taxi_run, tmp_path):
    _, options = embedpipe_options("flink")
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    flink = options.view_as(FlinkRunnerOptions)
    assert (flink.flink_master, flink.parallelism) == ("flink-jobmanager:8081", 8)
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"
    assert_jobs_build(options, taxi_run, tmp_path)


def test_vertex_training_command():
    command = readme_command("vertex")
    assert command[:4] == ["gcloud", "ai", "custom-jobs", "create"]
    pools = [command[i + 1] for i, part in enumerate(command) if part == "--worker-pool-spec"]
    assert pools and all("python-module=trainer.task" in pool for pool in pools)
    version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    assert any(part.endswith(f"embedpipe-{version}.tar.gz") for part in command)
    job_args = next(part for part in command if part.startswith("--args=")).removeprefix("--args=").split(",")
    args = task.build_parser().parse_args(job_args)
    assert args.run_dir.startswith("gs://") and args.job_dir.startswith("gs://")
    with pytest.raises(SystemExit):
        task.build_parser().parse_args(["--job-dir", "gs://x"])   # --run-dir is required
