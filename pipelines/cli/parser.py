"""The `embedpipe` argument parser: every command and option, each with its help."""
from __future__ import annotations

import argparse
import difflib
import re

from pipelines.core.errors import UsageError

DESCRIPTION = ("Learn embeddings from raw data with Apache Beam, tf.Transform and TensorFlow, and publish "
               "them as Parquet.")
EPILOG = ("Options a command does not know go to Beam's PipelineOptions (--runner, --direct_num_workers, "
          "--project, --temp_location, ...); without --runner, Beam stages run on Beam's in-process runner. "
          "Exit status: 0 success, 1 job failure, 2 bad config or arguments, 130 interrupted. "
          "RUN_DIR may also be <output>/LATEST or <output>.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:   # "neighbours": did you mean neighbors? (Python 3.12.8+ leaves the choices unquoted)
            choices = [name.strip(" '") for name in choice[2].split(",")]
            close = difflib.get_close_matches(choice[1], choices, n=1)
            message += f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show every library's log lines in the terminal (they are always in <run>/logs/)")


def _run_dir(parser: argparse.ArgumentParser, what: str = "the run") -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help=f"{what}: a run directory, <output>/LATEST or <output>")


def _entity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entity", required=True, help="entity name (as in the config's `entities`)")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="YAML job config (keys: docs/config.md)")
    parser.add_argument("--output", metavar="DIR", help="output root; default: the config's `output`")
    parser.add_argument("--run-id", metavar="ID",
                        help="run id (default: a UTC timestamp); the id of an unfinished run resumes it")
    parser.add_argument("--overwrite", action="store_true", help="run again over a run that is complete")
    parser.add_argument("--warm-start", metavar="RUN_OR_FILE",
                        help="initial embedding rows from an earlier run (or <output>/LATEST) or a vector file")
    parser.add_argument("--freeze", action="append", default=[], metavar="FEATURE",
                        help="keep this warm-started feature's rows fixed (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="embedpipe", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", default=False,
                        help="show every library's log lines in the terminal (they are always in <run>/logs/)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text + ".", epilog=EPILOG)
        _verbose(sub)
        return sub

    _add_run_args(command("run", "preprocess, train and embed into one run directory"))
    _add_run_args(command("preprocess", "raw rows -> TFRecords, transform_fn, vocabularies, entity tables"))
    train = command("train", "train the model of a preprocessed run")
    _run_dir(train)
    embed = command("embed", "write every entity's vector to Parquet")
    _run_dir(embed)

    neighbors = command("neighbors", "nearest neighbours of one key, or of a file of keys (a Beam job)")
    _run_dir(neighbors)
    _entity(neighbors)
    keys = neighbors.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", help="one key, or a metadata value naming one row (a movie's title)")
    keys.add_argument("--keys-file", metavar="FILE", help="one key per line; writes --output-prefix-*.parquet")
    neighbors.add_argument("--output-prefix", metavar="PREFIX", help="with --keys-file: where the Parquet goes")
    neighbors.add_argument("-k", type=int, default=10, help="neighbours per key (default 10)")
    neighbors.add_argument("--exact", action="store_true", help="exact search even when an index was built")

    index = command("index", "build an approximate nearest-neighbour index (usearch HNSW) -> index/<entity>/")
    _run_dir(index)
    _entity(index)
    cluster = command("cluster", "k-means clusters -> clusters/<entity>/")
    _run_dir(cluster)
    _entity(cluster)
    cluster.add_argument("--k", type=int, required=True, help="number of clusters")
    projector = command("projector", "TensorBoard projector files -> projector/<entity>/")
    _run_dir(projector)
    _entity(projector)
    projector.add_argument("--sample", type=int, default=10000, help="most frequent keys written (default 10000)")
    plot = command("plot", "2-D picture of an entity (PNG, SVG or PDF)")
    _run_dir(plot)
    _entity(plot)
    plot.add_argument("--out", required=True, metavar="FILE", help="where the picture goes: .png, .svg or .pdf")
    plot.add_argument("--method", choices=("pca", "tsne"), default="pca", help="projection (default pca)")
    plot.add_argument("--sample", type=int, default=2000, help="most frequent keys drawn (default 2000)")

    init = command("init", "draft a config from a sample of your data (YAML on stdout)")
    init.add_argument("data", metavar="DATA", help="a CSV, Parquet, JSON-lines or text file (or glob), any filesystem")
    init.add_argument("--format", choices=("csv", "parquet", "jsonl", "text"), help="default: from the file name")
    init.add_argument("--label", metavar="COLUMN", help="learn embeddings while predicting this column (supervised)")
    init.add_argument("--query", nargs="+", default=[], metavar="COLUMN",
                      help="two-tower: the query tower's columns, its id first (e.g. a user id)")
    init.add_argument("--candidate", nargs="+", default=[], metavar="COLUMN",
                      help="two-tower: the candidate tower's columns, its id first (e.g. an item id)")
    init.add_argument("--text", metavar="COLUMN", help="word embeddings of this text column (skip-gram)")
    init.add_argument("--sequences", nargs="+", default=[], metavar="COLUMN",
                      help="item2vec over an event log: GROUP ITEM [ORDER] (e.g. userId movieId timestamp; "
                           "ORDER defaults to the first timestamp column)")
    init.add_argument("--graph", nargs="+", default=[], metavar="COLUMN",
                      help="node embeddings (DeepWalk) of an edge list: SOURCE TARGET [WEIGHT]")
    init.add_argument("--name", help="the config's name (default: from the file name)")
    init.add_argument("--sample", type=int, default=20000, help="rows read to profile the columns (default 20000)")

    runs = command("runs", "list the runs of an output directory; prune with --keep")
    runs.add_argument("output", metavar="OUTPUT", help="an output root (the config's `output`)")
    runs.add_argument("--keep", type=int, metavar="N",
                      help="delete all but the newest N runs (never LATEST's run or a run in progress)")
    evaluate = command("evaluate", "word-pair similarity: Spearman correlation and OOV share")
    _run_dir(evaluate)
    evaluate.add_argument("--word-pairs", required=True, action="append", metavar="FILE",
                          help="word<TAB>word<TAB>score file, such as WordSim-353 (repeatable)")
    evaluate.add_argument("--entity", help="default: the entity keyed by the text feature")
    report = command("report", "write the run report: one self-contained HTML page of what a run did and learned")
    _run_dir(report)
    report.add_argument("--against", metavar="OLD_RUN",
                        help="an earlier run to measure drift against (default: the run this one was aligned to)")
    report.add_argument("-o", "--output", metavar="FILE",
                        help="where the page goes, on any filesystem (default: <run>/report.html)")
    compare = command("compare", "drift of an entity between two runs")
    compare.add_argument("old_run", metavar="OLD_RUN", help="the earlier run directory")
    compare.add_argument("new_run", metavar="NEW_RUN", help="the later run directory")
    _entity(compare)
    compare.add_argument("-k", type=int, default=10, help="neighbours compared per key (default 10)")
    return parser


def positive(name: str, value: int | None) -> None:
    """Raises UsageError unless the option's value is at least 1."""
    if value is not None and value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}")
