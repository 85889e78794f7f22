"""init, neighbors, index, cluster, projector, plot, runs, compare, evaluate, report: drafting a
config and read-only looks at runs.

They import neither TensorFlow nor Beam (except `neighbors --keys-file`, a Beam job), so they
answer in about a second.
"""
from __future__ import annotations

import argparse
import os

from pipelines.cli.console import Console
from pipelines.cli.parser import positive
from pipelines.cli.summary import counted
from pipelines.core import fs
from pipelines.core.errors import UsageError
from pipelines.core.rundir import latest_id, list_runs, resolve_run


def cmd_neighbors(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.tools.index import indexer_for
    from pipelines.tools.neighbors import is_hashed_entity, load_entity, neighbor_lines
    positive("-k", args.k)
    run = resolve_run(args.run_dir)
    if args.keys_file:
        from pipelines.core.beam_runner import pipeline_options
        from pipelines.tools.batch_neighbors import run_batch_neighbors
        if not args.output_prefix:
            raise UsageError("--keys-file needs --output-prefix")
        if not (fs.exists(args.keys_file) or fs.glob(args.keys_file)):
            raise UsageError(f"--keys-file {args.keys_file}: no such file")
        missing = run_batch_neighbors(run, args.entity, args.keys_file, args.output_prefix, args.k, args.exact,
                                      pipeline_options(beam_args))
        if missing:
            console.line(f"warning: {counted(missing, 'key')} of {args.keys_file} "
                         f"{'is' if missing == 1 else 'are'} not in {args.entity}: no neighbours written")
        print(f"{args.output_prefix}-*.parquet")
        return 0
    entity = load_entity(run, args.entity)
    indexer = None if args.exact else indexer_for(run, entity, args.entity)
    for line in neighbor_lines(entity, args.entity, args.key, args.k, indexer, "exact" if indexer is None else "index",
                               is_hashed_entity(run, args.entity)):
        print(line)
    return 0


def cmd_init(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    positive("--sample", args.sample)
    if bool(args.query) != bool(args.candidate):
        raise UsageError("--query and --candidate go together (a two-tower model needs both towers)")
    goals = [flag for flag, given in (("--label", args.label), ("--query/--candidate", args.query),
                                      ("--text", args.text), ("--sequences", args.sequences), ("--graph", args.graph))
             if given]
    if len(goals) > 1:
        raise UsageError(f"{' and '.join(goals)}: choose one model to draft")
    if args.sequences or args.graph:
        from pipelines.tools.draft_documents import draft_documents
        print(draft_documents(args.data, args.format, tuple(args.sequences), tuple(args.graph), args.name,
                              args.sample), end="")
        return 0
    from pipelines.tools.draft import draft
    print(draft(args.data, args.format, args.label, tuple(args.query), tuple(args.candidate), args.text, args.name,
                args.sample), end="")
    return 0


def cmd_index(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.tools.index import UsearchIndexer, build_index, recall_at_k
    from pipelines.tools.neighbors import load_entity
    run = resolve_run(args.run_dir)
    facts = build_index(run, args.entity)
    recall = recall_at_k(load_entity(run, args.entity), UsearchIndexer(run, args.entity))
    print(f"{facts['entity']}: {facts['vectors']:,} vectors of {facts['dim']} dims, {facts['metric']}, "
          f"recall@10 {recall:.3f} on a sample -> {facts['path']}")
    return 0


def cmd_cluster(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.tools.explore import cluster
    run = resolve_run(args.run_dir)
    examples, sizes = cluster(run, args.entity, args.k)
    for cluster_id, names in examples.items():
        print(f"cluster {cluster_id:3d}  {sizes[cluster_id]:6d} keys  e.g. {'; '.join(names)}")
    print(run.clusters_dir(args.entity))
    return 0


def cmd_projector(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.tools.explore import write_projector
    positive("--sample", args.sample)
    directory = write_projector(resolve_run(args.run_dir), args.entity, args.sample)
    print(f"tensorboard --logdir {directory}")
    return 0


def cmd_plot(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.tools.plot import plot
    positive("--sample", args.sample)
    if args.method == "tsne":
        console.line(f"t-SNE of up to {args.sample:,} vectors (scikit-learn): this can take a minute")
    print(plot(resolve_run(args.run_dir), args.entity, args.out, args.method, args.sample))
    return 0


def cmd_runs(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.tools.runs import describe, prune_runs
    positive("--keep", args.keep)
    if not fs.isdir(args.output):
        raise UsageError(f"{args.output}: no such output directory")
    if args.keep is not None:
        deleted, in_use = prune_runs(args.output, args.keep)
        for run_id in deleted:
            print(f"deleted {run_id}")
        for run_id in in_use:
            console.line(f"kept {run_id}: in use by a running process")
    latest = latest_id(args.output)
    rows = [describe(run) for run in list_runs(args.output)]
    if not rows:
        console.line(f"no runs in {args.output}")
    id_width = max((len(r["run_id"]) for r in rows), default=0)
    status_width = max((len(r["status"]) for r in rows), default=0)
    for facts in rows:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in facts["metrics"].items())
        entities = " ".join(f"{k}={v}" for k, v in facts["entities"].items())
        marker = "*" if facts["run_id"] == latest else " "
        print(f"{marker} {facts['run_id']:<{id_width}}  {facts['status']:<{status_width}}  {metrics}  {entities}".rstrip())
    return 0


def cmd_evaluate(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.tools.neighbors import load_entity
    from pipelines.tools.word_eval import read_word_pairs, text_entity, word_similarity
    run = resolve_run(args.run_dir)
    entity = load_entity(run, args.entity or text_entity(run))
    for path in args.word_pairs:
        if not fs.exists(path):
            raise UsageError(f"--word-pairs {path}: no such file (gensim's test data has wordsim353.tsv and "
                             "simlex999.txt: python -c 'from gensim.test.utils import datapath; "
                             "print(datapath(\"wordsim353.tsv\"))')")
        try:
            result = word_similarity(entity, read_word_pairs(path))
        except (OSError, ValueError) as error:
            raise UsageError(f"--word-pairs {path}: {error}") from None
        spearman = f"{result['spearman']:.4f}" if "spearman" in result else "n/a (under 3 pairs)"
        print(f"{path}: Spearman {spearman} over {result['pairs_evaluated']} of {result['pairs']} pairs, "
              f"{result['oov_share']:.1%} out of vocabulary")
    return 0


def cmd_compare(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.tools.drift import compare_runs
    positive("-k", args.k)
    report = compare_runs(resolve_run(args.old_run), resolve_run(args.new_run), args.entity, args.k)
    for key, value in report.items():
        print(f"{key:<24} {value:.4f}" if isinstance(value, float) else f"{key:<24} {value}")
    return 0


def cmd_report(args: argparse.Namespace, beam_args: list[str], console: Console) -> int:
    from pipelines.core import fs
    from pipelines.tools.report import write_report
    run = resolve_run(args.run_dir)
    against = None
    if args.against:
        try:
            against = resolve_run(args.against)
        except UsageError as error:
            raise UsageError(f"--against: {error}") from None
        if against.path == run.path:
            raise UsageError(f"--against {args.against} is the run itself; give an earlier run")
        if not against.published_entities():
            raise UsageError(f"--against {against.path}: no published entities ({against.status()})")
    out = args.output if args.output is None or fs.is_remote(args.output) else os.path.abspath(args.output)
    print(write_report(run, out, against))
    return 0
