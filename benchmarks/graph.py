"""Graph embeddings: embedpipe's walks + skip-gram beside a plain-Python DeepWalk on gensim, same run.

A planted-partition graph (`pipelines.tools.datasets.planted_partition`: equal communities, denser
inside than between) with 10% of its edges held out. Both methods walk the other 90% (uniform
DeepWalk walks, the same number and length) and train skip-gram with the same settings (dim,
window, negatives, no subsampling, epochs; gensim with 2 worker threads). Quality, from each
method's vectors (embedpipe's from the published Parquet): k-means purity against the planted
communities (k = the number of communities), and link-prediction AUC of the held-out edges
against as many node pairs drawn at random (cosine scores).

Walk generation: embedpipe's Beam walk transform (read the CSV, type the rows, build the graph,
walk; nothing else) on the in-process runner, beside two single-process references in the same
run: the plain-Python walker of the DeepWalk baseline, and the same NumPy walk kernel embedpipe
uses, called directly on the graph. Memory: the whole preprocess stage (walks through tf.Transform
to TFRecords) on graphs of the same nodes and walks with more and more edges, each in its own
process; peak RSS from the kernel's accounting of the finished process (`wait4`); `--before` runs
them with the code of another checkout too, side by side.

    python benchmarks/graph.py [--nodes 100000] [--memory-degrees 5,20,40] [--out benchmarks/out/graph]
                               [--before CHECKOUT] [--memory-only]
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import pathlib
import random
import shutil
import sys
import time

import numpy as np
import pandas as pd
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.report import print_ratio_table  # noqa: E402
from benchmarks.scale import embedpipe, measured, stage_facts  # noqa: E402

COMMUNITY_SIZE = 1000
HELD_OUT = 0.1


def settings(data: pathlib.Path) -> dict:
    """examples/graph.yaml on `data`, with walks short enough for a benchmark on two cores (one epoch,
    and the batch of a corpus of millions of tokens)."""
    config = yaml.safe_load((ROOT / "examples" / "graph.yaml").read_text())
    config["input"]["path"] = str(data)
    config["graph"].update({"walks_per_node": 10, "walk_length": 20})
    config["model"].update({"epochs": 1, "batch_size": 16384, "learning_rate": 0.01})
    return config


def python_walks(edges: pd.DataFrame, walks_per_node: int, length: int, seed: int = 0) -> list[list[str]]:
    """DeepWalk's walks as its reference code takes them: adjacency lists, random.choice per step."""
    neighbours: dict[str, list[str]] = {}
    for source, target in zip(edges.source, edges.target):
        neighbours.setdefault(source, []).append(target)
        neighbours.setdefault(target, []).append(source)
    chooser = random.Random(seed)
    nodes = list(neighbours)
    walks = []
    for _ in range(walks_per_node):
        chooser.shuffle(nodes)
        for node in nodes:
            walk = [node]
            while len(walk) < length:
                walk.append(chooser.choice(neighbours[walk[-1]]))
            walks.append(walk)
    return walks


def gensim_vectors(walks: list[list[str]], model: dict) -> tuple[list[str], np.ndarray, float, int]:
    from gensim.models import Word2Vec
    net = Word2Vec(vector_size=model["embedding_dim"], window=model["window"], negative=model["negatives"],
                   sample=0, min_count=1, sg=1, workers=2, seed=1)
    net.build_vocab(walks)
    started = time.perf_counter()
    net.train(walks, total_examples=len(walks), epochs=model["epochs"])
    words = sum(len(walk) for walk in walks) * model["epochs"]
    return list(net.wv.index_to_key), net.wv.vectors, time.perf_counter() - started, words


def quality(keys: list[str], vectors: np.ndarray, communities: pd.Series, held_out: pd.DataFrame,
            seed: int = 0) -> dict[str, float]:
    """k-means purity (k = communities) and held-out link-prediction AUC of unit vectors."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import roc_auc_score
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    clusters = MiniBatchKMeans(communities.nunique(), n_init=3, random_state=seed, batch_size=4096).fit_predict(unit)
    table = pd.crosstab(clusters, communities.loc[keys].to_numpy())
    row = {key: i for i, key in enumerate(keys)}
    rng = np.random.default_rng(seed)
    known = held_out[held_out.source.isin(row) & held_out.target.isin(row)]
    positives = np.einsum("ij,ij->i", unit[known.source.map(row)], unit[known.target.map(row)])
    pairs = rng.integers(0, len(keys), (len(known), 2))
    negatives = np.einsum("ij,ij->i", unit[pairs[:, 0]], unit[pairs[:, 1]])
    labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    return {"purity": float(table.max(axis=1).sum() / len(keys)),
            "auc": float(roc_auc_score(labels, np.concatenate([positives, negatives])))}


def beam_walk_seconds(config: dict, out: pathlib.Path) -> tuple[float, int]:
    """Seconds of embedpipe's walk generation alone (its two Beam jobs, in-process runner: the job that
    reads the edge rows and builds and saves the graph, then one pass of walks) and the walks it made."""
    import apache_beam as beam
    from apache_beam.utils import shared
    from pipelines.core.beam_runner import pipeline_options, read_counters
    from pipelines.core.config_parse import config_from_dict
    from pipelines.core.rundir import RunDir
    from pipelines.stages.preprocess.adjacency import graph_nodes
    from pipelines.stages.preprocess.graph import WalkFromEveryNode
    from pipelines.stages.preprocess.pipeline import graph_dir, run_build_graph_job, run_job
    from pipelines.stages.preprocess.schema import inspect_input
    logging.getLogger("apache_beam").setLevel(logging.WARNING)   # the runner's INFO lines are not the table's
    parsed = config_from_dict(config)
    schema, options = inspect_input(parsed), pipeline_options([])
    staged = RunDir(str(out / "walk-graph"))
    shutil.rmtree(staged.path, ignore_errors=True)   # a graph's directory holds one file per shard
    started = time.perf_counter()
    run_build_graph_job(options, parsed, schema, staged)
    path = graph_dir(staged)

    def walk(pipeline) -> None:
        walks = pipeline | WalkFromEveryNode(parsed, path, graph_nodes(path), shared.Shared(), count=True)
        _ = (walks.train, walks.eval) | beam.Flatten() | beam.Map(lambda batch: batch.num_rows)

    counts = read_counters(run_job(options, walk))
    return time.perf_counter() - started, counts["documents_train"] + counts["documents_eval"]


def numpy_walk_seconds(edges: pd.DataFrame, config: dict) -> tuple[float, int]:
    """Seconds of the NumPy walk kernel called directly on the graph (one process, no Beam)."""
    import pyarrow as pa
    from pipelines.stages.preprocess.adjacency import graph_from_edges
    from pipelines.stages.preprocess.walks import random_walks, walk_documents
    graph = graph_from_edges(pa.array(edges.source, pa.string()), pa.array(edges.target, pa.string()), None,
                             directed=False)
    walk = config["graph"]
    started = time.perf_counter()
    starts = np.tile(np.arange(graph.nodes), walk["walks_per_node"])
    walks = random_walks(graph, starts, walk["walk_length"], 1.0, 1.0, np.random.default_rng(0))
    walk_documents(graph, walks)
    return time.perf_counter() - started, len(starts)


def write_edges(path: pathlib.Path, nodes: int, communities: int, degree: float) -> None:
    """A planted partition of `nodes` nodes with this average degree, as a CSV edge list."""
    from pipelines.tools.datasets import planted_partition
    edges, _ = planted_partition(nodes, communities, degree_in=degree * 0.8, degree_out=degree * 0.2)
    edges.to_csv(path, index=False)


def memory_runs(nodes: int, communities: int, degrees: list[float], out: pathlib.Path,
                trees: dict[str, pathlib.Path]) -> list[tuple]:
    """(edges, walks, nodes walked, {tree: (preprocess seconds, peak RSS MiB)}) of the preprocess stage on
    graphs of `nodes` nodes with these average degrees, with the code of each of `trees`, each run in
    its own process.

    Run before this process grows: a child's peak RSS counts the pages it shared with its parent
    when it was forked (Linux keeps the high-water mark across exec).
    """
    memory = []
    for degree in degrees:
        path = out / f"edges-{degree:g}.csv"
        config_path = out / f"graph-{degree:g}.yaml"
        config_path.write_text(yaml.safe_dump(settings(path)))
        # Drawn in a process of its own: this one must stay small (see above).
        writer = multiprocessing.get_context("spawn").Process(target=write_edges,
                                                              args=(path, nodes, communities, degree))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise SystemExit(f"drawing the graph of degree {degree:g} failed")
        runs = {}
        for name, tree in trees.items():
            run_id = f"{name}-d{degree:g}"
            _, rss = measured(embedpipe("preprocess", str(config_path), "--output", str(out / "memory"),
                                        "--run-id", run_id, "--overwrite"), out / f"preprocess-{run_id}.log", tree)
            facts = stage_facts(out / "memory" / run_id, "preprocess")
            runs[name] = (facts["seconds"], rss)
        counts = stage_facts(out / "memory" / f"now-d{degree:g}", "preprocess")["counts"]
        memory.append((counts["rows_valid"], counts["documents_train"] + counts["documents_eval"],
                       counts["walk_tokens"], runs))
        path.unlink()
    return memory


def print_memory(memory: list[tuple], nodes: int) -> None:
    """The memory runs' table: per code tree, preprocess seconds and peak RSS, and the growth per million edges."""
    names = list(memory[0][3])
    print(f"\nGraph preprocess peak memory as edges grow ({nodes:,} nodes, the same walks; each in its own process)")
    print("| edges | nodes walked | " + " | ".join(f"{name}: seconds | {name}: peak RSS MiB" for name in names) + " |")
    print("| --- | --- | " + " | ".join("--- | ---" for _ in names) + " |")
    for size, _, tokens, runs in memory:
        print(f"| {size:,} | {tokens:,} | " + " | ".join(f"{runs[n][0]:.1f} | {runs[n][1]:,.0f}" for n in names) + " |")
    (small, *_, small_runs), (large, *_, large_runs) = memory[0], memory[-1]
    if large > small:
        growth = ", ".join(f"{name} {(large_runs[name][1] - small_runs[name][1]) / (large - small) * 1e6:,.0f}"
                           for name in names)
        print(f"Peak RSS growth per million edges (MiB): {growth}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--memory-degrees", default="5,20,40", help="average degrees of the memory runs")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "graph")
    parser.add_argument("--before", type=pathlib.Path,
                        help="another checkout (an earlier commit) whose preprocess runs the memory runs too")
    parser.add_argument("--memory-only", action="store_true", help="only the memory runs")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()   # the runs of another checkout start in its own directory
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipelines import cli
    from pipelines.tools.datasets import planted_partition
    args.out.mkdir(parents=True, exist_ok=True)
    communities_count = max(2, args.nodes // COMMUNITY_SIZE)
    trees = {"now": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    memory = memory_runs(args.nodes, communities_count, [float(d) for d in args.memory_degrees.split(",")], args.out,
                         trees)
    if args.memory_only:
        print_memory(memory, args.nodes)
        return 0
    edges, communities = planted_partition(args.nodes, communities_count, degree_in=8.0, degree_out=2.0)
    cut = int(len(edges) * (1 - HELD_OUT))
    train, held_out = edges.iloc[:cut], edges.iloc[cut:]   # the edges come shuffled
    data = args.out / "edges.csv"
    train.to_csv(data, index=False)
    config = settings(data)
    walk, model = config["graph"], config["model"]

    run_id = time.strftime("%Y%m%dT%H%M%S")
    (args.out / "graph.yaml").write_text(yaml.safe_dump(config))
    if cli.main(["run", str(args.out / "graph.yaml"), "--output", str(args.out / "runs"), "--run-id", run_id]) != 0:
        raise SystemExit("embedpipe run failed")
    run = args.out / "runs" / run_id
    metrics = json.loads((run / "metrics.json").read_text())
    vectors = pd.read_parquet(run / "embeddings" / "node")
    rows = {"embedpipe DeepWalk (walks + skip-gram)": {
        **quality(vectors.key.tolist(), np.stack(vectors.embedding.to_numpy()), communities, held_out),
        "seconds": metrics["fit_seconds"], "words_per_second": metrics["words_per_second"]}}

    started = time.perf_counter()
    walks = python_walks(train, walk["walks_per_node"], walk["walk_length"])
    python_seconds = time.perf_counter() - started
    keys, gensim, seconds, words = gensim_vectors(walks, model)
    rows["plain-Python walks + gensim Word2Vec (2 workers)"] = {
        **quality(keys, gensim, communities, held_out), "seconds": seconds, "words_per_second": words / seconds}
    del walks

    print(f"\nGraph communities: planted partition of {len(communities):,} nodes in {communities_count} communities, "
          f"{len(train):,} edges walked, {len(held_out):,} held out ({walk['walks_per_node']} walks of "
          f"{walk['walk_length']} per node; dim {model['embedding_dim']}, window {model['window']}, "
          f"{model['negatives']} negatives, {model['epochs']} epoch)")
    print("| method | k-means purity | held-out link AUC | train seconds | words/s |\n| --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['purity']:.3f} | {row['auc']:.3f} | {row['seconds']:.1f} | {row['words_per_second']:,.0f} |")

    numpy_seconds, count = numpy_walk_seconds(train, config)
    beam_seconds, beam_count = beam_walk_seconds(config, args.out)
    assert beam_count == count, (beam_count, count)
    preprocess = stage_facts(run, "preprocess")["seconds"]
    print_ratio_table(f"Graph walk generation: {count:,} walks of {walk['walk_length']} nodes "
                      f"({len(train):,} edges, in-process runner)", "walker", "walks", count,
                      [("plain-Python walker (1 process)", python_seconds), ("NumPy walk kernel (1 process)", numpy_seconds),
                       ("embedpipe Beam walks (read, type, graph, walk)", beam_seconds),
                       ("embedpipe preprocess stage (walks twice, tf.Transform, TFRecords)", preprocess)])

    print_memory(memory, args.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
