"""run, preprocess, train, embed: every check before any work, then the stages under the run's lock.

A command first checks everything it can without side effects (the Beam options, the config, the
run id, an existing run's config and state, the input's columns, the warm-start source, the
tables' memory); only then does it take the run's lock, create the run directory and start.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import sys
import time
import traceback
from typing import Any

from pipelines.cli import summary
from pipelines.cli.console import Console
from pipelines.core import fs
from pipelines.core.config import Config
from pipelines.core.config_parse import config_from_dict, load_config
from pipelines.core.errors import UsageError
from pipelines.core.resources import check_table_memory, known_rows
from pipelines.core.rundir import STAGES, RunDir, check_run_id, latest_id, new_run_id, publish_latest, resolve_run
from pipelines.core.warm_start import plan_warm_start


@dataclasses.dataclass
class RunRequest:
    """A run checked and ready to start.

    Attributes:
        config, raw: the validated config and the mapping recorded in the manifest.
        run: the run directory (it may not exist yet).
        stages: the stages still to do.
        beam_args: the Beam options (checked).
        schema: the input as inspected, when preprocess is among the stages.
        fresh: a new manifest is written (a new run, or --overwrite).
        resume: the command that resumes this run after an interruption.
    """
    config: Config
    raw: dict
    run: RunDir
    stages: tuple[str, ...]
    beam_args: list[str]
    schema: Any
    fresh: bool
    resume: str


def _with_warm_start_flags(args: argparse.Namespace, raw: dict) -> dict:
    """The raw config with --warm-start and --freeze applied; `<output>/LATEST` is resolved now, so the
    manifest records the run it named at this moment."""
    if not (args.warm_start or args.freeze):
        return raw
    warm = dict(raw.get("warm_start") or {})
    if args.freeze and not (args.warm_start or warm.get("from")):
        raise UsageError("--freeze keeps warm-started rows fixed: say where they come from with --warm-start RUN")
    if args.warm_start:
        try:
            warm["from"] = resolve_run(args.warm_start).path
        except UsageError:
            warm["from"] = args.warm_start  # a vector file (checked by the warm-start plan)
    warm["freeze"] = list(dict.fromkeys(list(warm.get("freeze") or []) + args.freeze))
    return {**raw, "warm_start": warm}


def _check_training(config: Config) -> None:
    """The warm-start source and the tables' memory, before any work."""
    plan_warm_start(config)
    if not os.environ.get("TF_CONFIG") or '"ps"' not in os.environ["TF_CONFIG"]:
        check_table_memory(config, known_rows(config))


def prepare_run(args: argparse.Namespace, beam_args: list[str], wanted: tuple[str, ...]) -> RunRequest:
    """Checks a `run`/`preprocess` request; nothing is written.

    Raises:
        UsageError: anything that would stop the run, with the fix.
    """
    config, raw = load_config(args.config)
    raw = _with_warm_start_flags(args, raw)
    config = config_from_dict(raw)
    if beam_args:  # checked only when given: a config error should not wait for Beam to load
        from pipelines.core.beam_runner import pipeline_options
        pipeline_options(beam_args)
    run_id = new_run_id() if args.run_id is None else check_run_id(args.run_id)
    run = RunDir(fs.join(args.output or config.output, run_id))
    fresh = not run.exists() or args.overwrite
    if not fresh:
        if run.read_manifest().get("config") != raw:
            raise UsageError(f"--run-id {run_id}: that run was made from a different config; pick another id")
        owner = run.owner()
        if owner is not None and owner.is_alive():
            raise UsageError(f"run {run.path} is in use by {owner.describe()}")
    stages = wanted if fresh else tuple(s for s in wanted if not run.stage_done(s))
    schema = None
    if "preprocess" in stages:
        from pipelines.stages.preprocess.schema import inspect_input
        schema = inspect_input(config)
    if "train" in stages:
        _check_training(config)
    if "embed" in stages and any(e.metadata_from for e in config.entities):
        from pipelines.stages.embed.side_tables import check_side_tables
        check_side_tables(config)
    flags = [f"--warm-start {shlex.quote(raw['warm_start']['from'])}"] if args.warm_start else []
    flags += [f"--freeze {shlex.quote(f)}" for f in args.freeze]
    resume = " ".join([f"embedpipe {args.command}", shlex.quote(args.config), "--output", shlex.quote(run.output),
                       "--run-id", run_id] + flags)
    return RunRequest(config, raw, run, stages, beam_args, schema, fresh, resume)


def _lock(run: RunDir):
    return run.lock(" ".join(["embedpipe"] + sys.argv[1:])[:200])


# Stage modules are imported inside their stage: what TensorFlow prints on import goes to the log.

def _preprocess(request: RunRequest, console: Console) -> None:
    from pipelines.core.beam_runner import pipeline_options, runner_name
    options = pipeline_options(request.beam_args)
    files = len(request.schema.files)
    with console.stage(request.run, "preprocess", f"{files} input file{'s' if files > 1 else ''}, "
                                                  f"{runner_name(options)}"):
        from pipelines.stages.preprocess.pipeline import run_preprocess
        facts = run_preprocess(request.config, request.schema, request.run, options)
    _done(console, request.run, "preprocess", summary.preprocess_lines(facts))


def _train(run: RunDir, console: Console) -> dict:
    config = config_from_dict(run.read_manifest()["config"])
    model = config.model
    solver = " (solver als: an epoch is one sweep)" if model.solver == "als" else ""
    with console.stage(run, "train", f"{model.kind} model{solver}, {summary.counted(len(config.features), 'feature')}, "
                                     f"{model.epochs} epochs at most"):
        from trainer.train import train_run
        metrics = train_run(run)
    _done(console, run, "train", summary.train_lines(metrics))
    return metrics


def _embed(run: RunDir, beam_args: list[str], console: Console) -> dict:
    from pipelines.core.beam_runner import pipeline_options, runner_name
    from pipelines.tools.align import Aligner
    options = pipeline_options(beam_args)
    config = config_from_dict(run.read_manifest()["config"])
    entities = summary.counted(len(config.entities), "entity", "entities")
    with console.stage(run, "embed", f"{entities}, {runner_name(options)}"):
        from pipelines.stages.embed.pipeline import run_embed
        facts = run_embed(run, options, Aligner.for_config(config, run))
    _done(console, run, "embed", summary.embed_lines(facts))
    return facts


def _done(console: Console, run: RunDir, stage: str, lines: list[str]) -> None:
    seconds = run.stage_record(stage).get("seconds", 0.0)
    console.stage_line(stage, f"done in {seconds:.1f} s: {lines[0]}")
    for line in lines[1:]:
        console.stage_line(stage, line)


def _write_report(run: RunDir, console: Console) -> str | None:
    """Writes `<run>/report.html` and returns its path. Best effort: a report that cannot be made
    does not fail the run; one warning line says so and `logs/report.log` has the traceback."""
    try:
        from pipelines.tools.report import write_report
        return write_report(run)
    except Exception as error:
        log = run.log_path("report")
        with contextlib.suppress(Exception):
            fs.write_text_atomic(log, traceback.format_exc())
        first = (str(error).strip().splitlines() or [""])[0]
        console.line(f"warning: no run report: {type(error).__name__}: {first} (log: {log})")
        return None


def _publish_latest(run: RunDir, console: Console) -> None:
    if not publish_latest(run):
        console.line(f"LATEST still names {latest_id(run.output)}: its run id is newer than {run.run_id}")


def cmd_run(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    """All three stages; an interrupted run given again by --run-id goes on from its first unfinished stage."""
    request = prepare_run(args, beam_args, STAGES)
    console.resume_hint = request.resume
    run = request.run
    if not request.stages:
        if latest_id(run.output) != run.run_id and publish_latest(run):
            console.line(f"run {run.run_id} was complete; LATEST now names it")
            return 0
        raise UsageError(f"run {run.path} is complete; pass --overwrite to run it again")
    started = time.time()
    console.line(f"{'run':<10} {request.config.name} -> {run.path}"
                 + ("" if request.fresh else f" (resuming: {', '.join(request.stages)} to do)"))
    with _lock(run):
        if request.fresh:
            run.create(request.config.name, request.raw)
        steps = {"preprocess": lambda: _preprocess(request, console), "train": lambda: _train(run, console),
                 "embed": lambda: _embed(run, beam_args, console)}
        try:
            for stage in STAGES:
                if run.stage_done(stage):
                    console.stage_line(stage, "already done")
                else:
                    steps[stage]()
        except Exception:
            report = _write_report(run, console)   # a failed run gets its page too: which stage, why, the log
            if report:
                console.stage_line("report", report)
            raise
        _publish_latest(run, console)
        report = _write_report(run, console)
    for line in summary.run_lines(run, time.time() - started, report):
        console.line(line)
    return 0


def cmd_preprocess(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    request = prepare_run(args, beam_args, ("preprocess",))
    console.resume_hint = request.resume
    if not request.stages:
        raise UsageError(f"run {request.run.path} is already preprocessed; pass --overwrite to do it again")
    with _lock(request.run):
        if request.fresh:
            request.run.create(request.config.name, request.raw)
        _preprocess(request, console)
    console.line(f"next:      embedpipe train {request.run.path}")
    print(request.run.path)
    return 0


def _existing_run(args: argparse.Namespace, earlier: str, command: str) -> RunDir:
    run = resolve_run(args.run_dir)
    run.require_stage(earlier, command)
    return run


def cmd_train(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    run = _existing_run(args, "preprocess", f"preprocess CONFIG --run-id {fs.basename(args.run_dir)}")
    _check_training(config_from_dict(run.read_manifest()["config"]))
    console.resume_hint = f"embedpipe train {shlex.quote(run.path)}"
    with _lock(run):
        _train(run, console)
    console.line(f"next:      embedpipe embed {run.path}")
    return 0


def cmd_embed(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.core.beam_runner import pipeline_options
    run = _existing_run(args, "train", f"train {args.run_dir}")
    pipeline_options(beam_args)
    console.resume_hint = f"embedpipe embed {shlex.quote(run.path)}"
    with _lock(run):
        _embed(run, beam_args, console)
        _publish_latest(run, console)
    for line in summary.next_commands(run):
        console.line(f"next:      {line}")
    return 0
