"""The `embedpipe` command: run, preprocess, train, embed, neighbors.

Options the command does not know go to Beam's `PipelineOptions` untouched. Exit status: 0 success,
1 job failure, 2 bad config or arguments (one line, no traceback).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Callable, Sequence

from pipelines.config import ConfigError, load_config

logger = logging.getLogger("embedpipe")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(message)


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML job config")
    parser.add_argument("--output", help="output root (default: the config's `output`)")
    parser.add_argument("--run-id", help="run id (default: a UTC timestamp); an incomplete run resumes")
    parser.add_argument("--overwrite", action="store_true", help="run again over a run that is complete")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="embedpipe", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_args(commands.add_parser("run", help="preprocess, train and embed into one run directory"))
    _add_run_args(commands.add_parser("preprocess", help="raw rows -> TFRecords, transform_fn, vocabularies"))
    train = commands.add_parser("train", help="train the model of a preprocessed run")
    train.add_argument("run_dir")
    embed = commands.add_parser("embed", help="write every entity's vector to Parquet")
    embed.add_argument("run_dir")
    neighbors = commands.add_parser("neighbors", help="nearest neighbours of one key")
    neighbors.add_argument("run_dir")
    neighbors.add_argument("--entity", required=True)
    neighbors.add_argument("--key", required=True)
    neighbors.add_argument("-k", type=int, default=10)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, beam_args = build_parser().parse_known_args(argv)
        if beam_args and args.command in ("train", "neighbors"):
            raise UsageError(f"unrecognized arguments: {' '.join(beam_args)}")
    except UsageError as error:
        print(f"embedpipe: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "apache_beam.typehints.native_type_compatibility"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # per-feature and per-type-hint chatter
    command: Callable[[argparse.Namespace, list[str]], int] = COMMANDS[args.command]
    try:
        return command(args, beam_args)
    except (ConfigError, UsageError, LookupError) as error:  # LookupError: unknown entity or key
        print(f"embedpipe: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # a failed job: say what failed, keep the traceback for --verbose
        logger.debug("job failed", exc_info=True)
        print(f"embedpipe: {args.command} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED


def _open_run(args: argparse.Namespace, stages: tuple[str, ...]):
    """The config and the run directory to work in: new, resumed, or (with --overwrite) restarted.

    Raises:
        UsageError: the run id belongs to a run of another config, or its `stages` are all done
            and --overwrite was not given.
    """
    from pipelines.rundir import RunDir, new_run_id
    config, raw = load_config(args.config)
    run = RunDir(os.path.join(args.output or config.output, args.run_id or new_run_id()))
    if run.exists():
        if run.read_manifest().get("config") != raw:
            raise UsageError(f"--run-id {run.run_id}: that run was made from a different config; pick another id")
        if all(run.stage_done(stage) for stage in stages):
            if not args.overwrite:
                raise UsageError(f"run {run.path} is complete; pass --overwrite to run it again")
            run.create(config.name, raw)
        else:
            logger.info("resuming run %s", run.path)
    else:
        run.create(config.name, raw)
    return config, run


def cmd_preprocess(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.preprocess import run_preprocess
    config, run = _open_run(args, ("preprocess",))
    run_preprocess(config, run, beam_args)
    print(run.path)
    return EXIT_OK


def cmd_train(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.rundir import resolve_run
    from trainer.train import train_run
    train_run(resolve_run(args.run_dir).path)
    return EXIT_OK


def cmd_embed(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.embed import run_embed
    from pipelines.rundir import resolve_run
    run_embed(resolve_run(args.run_dir), beam_args)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    """All three stages; an interrupted run given again by --run-id goes on from its first unfinished stage."""
    from pipelines.embed import run_embed
    from pipelines.preprocess import run_preprocess
    from pipelines.rundir import STAGES, write_latest
    from trainer.train import train_run
    config, run = _open_run(args, STAGES)
    started = time.time()
    stages = {"preprocess": lambda: run_preprocess(config, run, beam_args), "train": lambda: train_run(run.path),
              "embed": lambda: run_embed(run, beam_args)}
    for stage in STAGES:
        if run.stage_done(stage):
            logger.info("%s: already done", stage)
        else:
            stages[stage]()
    write_latest(run.output, run.run_id)
    logger.info("run %s complete in %.0f s", run.run_id, time.time() - started)
    print(run.path)
    return EXIT_OK


def cmd_neighbors(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.neighbors import print_neighbors
    from pipelines.rundir import resolve_run
    if args.k < 1:
        raise UsageError(f"-k must be >= 1, got {args.k}")
    print_neighbors(resolve_run(args.run_dir), args.entity, args.key, args.k)
    return EXIT_OK


COMMANDS = {"run": cmd_run, "preprocess": cmd_preprocess, "train": cmd_train, "embed": cmd_embed,
            "neighbors": cmd_neighbors}

if __name__ == "__main__":
    sys.exit(main())
