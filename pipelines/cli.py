"""The `embedpipe` command: run, preprocess, train, embed; neighbors, index, cluster, projector, plot;
runs, compare, evaluate.

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

from pipelines.config import ConfigError, config_from_dict, load_config

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
    parser.add_argument("--warm-start", metavar="RUN_OR_FILE",
                        help="initial embedding rows from an earlier run (or <output>/LATEST) or a vector file")
    parser.add_argument("--freeze", action="append", default=[], metavar="FEATURE",
                        help="keep this warm-started feature's rows fixed (repeatable)")


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
    neighbors = commands.add_parser("neighbors", help="nearest neighbours of one key, or of a file of keys")
    neighbors.add_argument("run_dir")
    neighbors.add_argument("--entity", required=True)
    keys = neighbors.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", help="one key (or a metadata value naming one row, e.g. a title)")
    keys.add_argument("--keys-file", help="one key per line; runs a Beam job writing --output-prefix-*.parquet")
    neighbors.add_argument("--output-prefix", help="with --keys-file: where the Parquet files go")
    neighbors.add_argument("-k", type=int, default=10)
    neighbors.add_argument("--exact", action="store_true", help="exact search even when an index exists")
    index = commands.add_parser("index", help="build an approximate nearest-neighbour index (usearch HNSW)")
    index.add_argument("run_dir")
    index.add_argument("--entity", required=True)
    cluster = commands.add_parser("cluster", help="k-means clusters -> clusters/<entity>/")
    cluster.add_argument("run_dir")
    cluster.add_argument("--entity", required=True)
    cluster.add_argument("--k", type=int, required=True)
    projector = commands.add_parser("projector", help="TensorBoard projector files -> projector/<entity>/")
    projector.add_argument("run_dir")
    projector.add_argument("--entity", required=True)
    projector.add_argument("--sample", type=int, default=10000)
    plot = commands.add_parser("plot", help="2-D picture of an entity as PNG")
    plot.add_argument("run_dir")
    plot.add_argument("--entity", required=True)
    plot.add_argument("--out", required=True)
    plot.add_argument("--method", choices=("pca", "tsne"), default="pca")
    plot.add_argument("--sample", type=int, default=2000)
    runs = commands.add_parser("runs", help="list the runs of an output directory; prune with --keep")
    runs.add_argument("output")
    runs.add_argument("--keep", type=int, help="delete all but the newest N runs (LATEST's run is kept)")
    evaluate = commands.add_parser("evaluate", help="word-pair similarity: Spearman correlation and OOV share")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--word-pairs", required=True, action="append", help="word<TAB>word<TAB>score file")
    evaluate.add_argument("--entity", help="default: the entity keyed by the text feature")
    compare = commands.add_parser("compare", help="drift of an entity between two runs")
    compare.add_argument("old_run")
    compare.add_argument("new_run")
    compare.add_argument("--entity", required=True)
    compare.add_argument("-k", type=int, default=10)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, beam_args = build_parser().parse_known_args(argv)
        if beam_args and args.command not in ("run", "preprocess", "embed") and not getattr(args, "keys_file", None):
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
    from pipelines.rundir import RunDir, new_run_id, resolve_run
    config, raw = load_config(args.config)
    if args.warm_start or args.freeze:
        warm = dict(raw.get("warm_start") or {})
        if args.warm_start:
            source = resolve_run(args.warm_start)  # record the run LATEST named at this moment
            warm["from"] = source.path if source.exists() else args.warm_start
        warm["freeze"] = list(dict.fromkeys(list(warm.get("freeze") or []) + args.freeze))
        raw = {**raw, "warm_start": warm}
        config = config_from_dict(raw)
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
    run = resolve_run(args.run_dir)
    if args.keys_file:
        from pipelines.ann import run_batch_neighbors
        if not args.output_prefix:
            raise UsageError("--keys-file needs --output-prefix")
        run_batch_neighbors(run, args.entity, args.keys_file, args.output_prefix, args.k, args.exact, beam_args)
        print(f"{args.output_prefix}-*.parquet")
        return EXIT_OK
    print_neighbors(run, args.entity, args.key, args.k, use_index=not args.exact)
    return EXIT_OK


def cmd_index(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.ann import EntityIndex, build_index, recall_at_k
    from pipelines.neighbors import load_entity
    from pipelines.rundir import resolve_run
    run = resolve_run(args.run_dir)
    facts = build_index(run, args.entity)
    recall = recall_at_k(load_entity(run, args.entity), EntityIndex(run, args.entity))
    print(f"{facts['entity']}: {facts['vectors']} vectors of {facts['dim']} dims, {facts['metric']}, "
          f"recall@10 {recall:.3f} on a sample -> {facts['path']}")
    return EXIT_OK


def cmd_cluster(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.explore import cluster
    from pipelines.rundir import resolve_run
    run = resolve_run(args.run_dir)
    try:
        examples, sizes = cluster(run, args.entity, args.k)
    except ValueError as error:
        raise UsageError(str(error)) from None
    for cluster_id, names in examples.items():
        print(f"cluster {cluster_id:3d}  {sizes[cluster_id]:6d} keys  e.g. {'; '.join(names)}")
    print(run.join("clusters", args.entity))
    return EXIT_OK


def cmd_projector(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.explore import write_projector
    from pipelines.rundir import resolve_run
    directory = write_projector(resolve_run(args.run_dir), args.entity, args.sample)
    print(f"tensorboard --logdir {directory}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.explore import plot
    from pipelines.rundir import resolve_run
    print(plot(resolve_run(args.run_dir), args.entity, args.out, args.method, args.sample))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.versions import describe, latest_id, list_runs, prune_runs
    if args.keep is not None:
        if args.keep < 1:
            raise UsageError(f"--keep must be >= 1, got {args.keep}")
        for run_id in prune_runs(args.output, args.keep):
            print(f"deleted {run_id}")
    latest = latest_id(args.output)
    for run in list_runs(args.output):
        facts = describe(run)
        metrics = " ".join(f"{k}={v:.4g}" for k, v in facts["metrics"].items())
        entities = " ".join(f"{k}={v}" for k, v in facts["entities"].items())
        marker = "*" if run.run_id == latest else " "
        print(f"{marker} {facts['run_id']}  {facts['status']:<22} {metrics}  {entities}".rstrip())
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.neighbors import load_entity
    from pipelines.rundir import resolve_run
    from pipelines.word_eval import read_word_pairs, text_entity, word_similarity
    run = resolve_run(args.run_dir)
    entity = load_entity(run, args.entity or text_entity(run))
    for path in args.word_pairs:
        try:
            result = word_similarity(entity, read_word_pairs(path))
        except (OSError, ValueError) as error:
            raise UsageError(str(error)) from None
        spearman = f"{result['spearman']:.4f}" if "spearman" in result else "n/a (under 3 pairs)"
        print(f"{path}: Spearman {spearman} over {result['pairs_evaluated']} of {result['pairs']} pairs, "
              f"{result['oov_share']:.1%} out of vocabulary")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.rundir import resolve_run
    from pipelines.versions import compare_runs
    report = compare_runs(resolve_run(args.old_run), resolve_run(args.new_run), args.entity, args.k)
    for key, value in report.items():
        print(f"{key:<24} {value:.4f}" if isinstance(value, float) else f"{key:<24} {value}")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "preprocess": cmd_preprocess, "train": cmd_train, "embed": cmd_embed,
            "neighbors": cmd_neighbors, "index": cmd_index, "cluster": cmd_cluster, "projector": cmd_projector,
            "plot": cmd_plot, "runs": cmd_runs, "compare": cmd_compare, "evaluate": cmd_evaluate}

if __name__ == "__main__":
    sys.exit(main())
