"""Edge lists -> random walks: walk lengths, only existing edges, every node, seeds, weights and node2vec's
bias (NumPy), the Beam job with its counts, then `embedpipe run` on planted communities."""
from __future__ import annotations

import json
import os
import uuid

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from pipelines.core import fs
from pipelines.core.beam_runner import read_counters
from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import ConfigError
from pipelines.core.rundir import RunDir
from pipelines.stages.preprocess.graph import BuildGraph, EdgePasses, GatherNodeNames, WalkGraph, WriteNodeTables
from pipelines.stages.preprocess.schema import RawSchema, required_columns, transform_column_types
from pipelines.stages.preprocess.adjacency import (SHARD_NODES, EdgePart, Graph, adjacency_shard,
                                                   assemble_graph, directed_edges, graph_from_edges, load_edge_part,
                                                   load_graph, node_names, node_numbers, save_edge_parts, save_nodes,
                                                   save_shard, shard_of)
from pipelines.stages.preprocess.walks import random_walks, walk_documents
from pipelines.tools.datasets import planted_partition
from tests.conftest import ROOT, run_cli

# a 4-cycle 0-1-2-3 with the chord 0-2, and node 4 hanging off 3
EDGES = [("0", "1"), ("1", "2"), ("2", "3"), ("3", "0"), ("0", "2"), ("3", "4")]


def graph_of(edges: list[tuple[str, str]], directed: bool = False, weights: list[float] | None = None) -> Graph:
    return graph_from_edges(pa.array([s for s, _ in edges]), pa.array([t for _, t in edges]),
                            None if weights is None else np.array(weights), directed)


def neighbour_sets(graph: Graph) -> list[set[int]]:
    return [set(graph.neighbours[graph.offsets[i]:graph.offsets[i + 1]].tolist()) for i in range(graph.nodes)]


def test_csr_holds_each_edge_both_ways_once():
    graph = graph_of(EDGES + [("1", "0")])   # a duplicate, spelled the other way round
    assert graph.names.to_pylist() == ["0", "1", "2", "3", "4"]
    assert neighbour_sets(graph) == [{1, 2, 3}, {0, 2}, {0, 1, 3}, {0, 2, 4}, {3}]
    assert graph.edges == 6 and graph.duplicates == 1
    directed = graph_of(EDGES, directed=True)
    assert neighbour_sets(directed) == [{1, 2}, {2}, {3}, {0, 4}, set()]


@pytest.mark.parametrize("directed", [False, True])
def test_a_graph_built_in_shards_from_batches_equals_one_built_edge_by_edge(directed):
    rng = np.random.default_rng(3)
    nodes = 3 * SHARD_NODES + 500   # four shards, the last one short
    rows = rng.integers(0, nodes, (40000, 2))
    rows[:300, 1] = rows[:300, 0]   # self-loops
    rows[300:2300] = rows[2300:4300, ::-1] if not directed else rows[2300:4300]   # duplicates
    weights = rng.uniform(0.5, 2.0, len(rows))
    ids = [[f"n{node}" for node in column] for column in rows.T]
    names = node_names([pa.array(ids[0]), pa.array(ids[1])])
    parts: dict[int, list] = {}
    loops = 0
    for batch in np.array_split(np.arange(len(rows)), 3):
        edges, dropped = directed_edges(names, pa.array([ids[0][i] for i in batch]),
                                        pa.array([ids[1][i] for i in batch]), weights[batch], directed)
        loops += dropped
        for shard, part in shard_of(edges, len(names)):
            parts.setdefault(shard, []).append(part)
    assert sorted(parts) == [0, 1, 2, 3]
    graph = assemble_graph(names, [adjacency_shard(shard, group, len(names), directed)
                                   for shard, group in reversed(parts.items())])

    expected: dict[tuple[str, str], float] = {}
    for (source, target), weight in zip(zip(*ids), weights):
        if source != target:
            for edge in [(source, target)] + ([] if directed else [(target, source)]):
                expected[edge] = expected.get(edge, 0.0) + weight
    index = {name: i for i, name in enumerate(names.to_pylist())}
    got = {}
    for i, name in enumerate(names.to_pylist()):
        span = slice(graph.offsets[i], graph.offsets[i + 1])
        neighbours = graph.neighbours[span]
        assert np.all(np.diff(neighbours) > 0)   # sorted, each once
        before = graph.cumulative[graph.offsets[i] - 1] if graph.offsets[i] else 0.0
        for target, total in zip(neighbours, np.diff(np.concatenate([[before], graph.cumulative[span]]))):
            got[(name, names[int(target)].as_py())] = total
    assert got.keys() == expected.keys() and len(index) == graph.nodes
    np.testing.assert_allclose([got[edge] for edge in expected], list(expected.values()))
    distinct = len(expected) if directed else len(expected) // 2
    expected_loops = int(np.count_nonzero(rows[:, 0] == rows[:, 1]))
    assert loops == expected_loops >= 300 and (graph.edges, graph.duplicates) == (distinct, len(rows) - loops - distinct)
    assert graph.duplicates >= 2000


def test_node_numbers_follow_the_sorted_ids_and_name_an_id_never_gathered():
    names = node_names([pa.array(["b", "a"]), pa.array(["c", None])])
    assert node_numbers(names, pa.array(["c", "a", "b", "a"])).tolist() == [2, 0, 1, 0]
    with pytest.raises(ValueError, match="node id zz was not among the ids gathered"):
        node_numbers(names, pa.array(["a", "zz"]))


def test_node_ids_are_merged_as_they_are_gathered_not_held_per_batch():
    gather = GatherNodeNames(config_from_dict(walk_config()).graph)
    accumulator = gather.create_accumulator()
    for start in range(0, 50000, 1000):   # 50 batches, each of 1,000 new ids and 1,000 seen ones
        ids = [str(i) for i in range(start, start + 1000)]
        batch = pa.RecordBatch.from_pydict({"src": ids, "dst": [str(i % 1000) for i in range(start, start + 1000)]})
        accumulator = gather.add_input(accumulator, batch)
        assert sum(len(names) for names in accumulator) <= 2 * (start + 1000)
    merged = gather.merge_accumulators([accumulator, gather.add_input(gather.create_accumulator(), batch)])
    names = gather.extract_output(merged)
    assert len(names) == 50000 and names.to_pylist() == sorted(str(i) for i in range(50000))


def test_a_graph_with_too_many_invalid_edges_publishes_only_invalid_and_leaves_no_graph(tmp_path, capsys):
    rows = [f"n{i},n{i + 1}" for i in range(100)] + [f"n{i}," for i in range(30)]
    (tmp_path / "e.csv").write_text("src,dst\n" + "\n".join(rows) + "\n")
    settings = {**walk_config(), "input": {"path": str(tmp_path / "e.csv"), "format": "csv"}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(settings))
    assert run_cli("run", tmp_path / "g.yaml", "--output", tmp_path / "runs", "--run-id", "x") == 1
    err = capsys.readouterr().err
    assert "30 of 130 rows invalid" in err and "max_invalid_fraction" in err
    run = tmp_path / "runs" / "x"
    assert len([line for path in (run / "invalid").glob("*.jsonl") for line in path.read_text().splitlines()]) == 30
    assert not (run / "data").exists() and not (run / "transform").exists()
    assert not list((tmp_path / "runs").rglob("graph"))   # the graph's files went with the staged tmp/


def test_a_graph_of_self_loops_only_is_an_error_before_any_walk(tmp_path, capsys):
    (tmp_path / "e.csv").write_text("src,dst\na,a\nb,b\n")
    settings = {**walk_config(), "input": {"path": str(tmp_path / "e.csv"), "format": "csv"}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(settings))
    assert run_cli("run", tmp_path / "g.yaml", "--output", tmp_path / "runs", "--run-id", "x") == 1
    err = capsys.readouterr().err
    assert "the graph has no edge between two different nodes (2 self-loops dropped)" in err
    assert not (tmp_path / "runs" / "x" / "data").exists()


def test_walks_have_their_length_follow_edges_and_repeat_with_the_seed():
    graph = graph_of(EDGES)
    edges = {(a, b) for a, near in enumerate(neighbour_sets(graph)) for b in near}
    for p, q in ((1.0, 1.0), (0.5, 2.0)):
        walks = random_walks(graph, np.repeat(np.arange(5), 20), 12, p, q, np.random.default_rng(7))
        assert walks.shape == (100, 12) and (walks >= 0).all()
        assert all((a, b) in edges for walk in walks for a, b in zip(walk, walk[1:]))
        assert set(walks[:, 0]) == set(range(5))
        again = random_walks(graph, np.repeat(np.arange(5), 20), 12, p, q, np.random.default_rng(7))
        np.testing.assert_array_equal(walks, again)


def test_directed_walks_end_at_nodes_without_out_edges():
    graph = graph_of(EDGES, directed=True)
    walks = random_walks(graph, np.array([4, 3, 3, 3]), 6, 1.0, 1.0, np.random.default_rng(0))
    assert walks[0].tolist() == [4, -1, -1, -1, -1, -1]
    tokens, lengths = walk_documents(graph, walks)
    assert lengths[0] == 1 and tokens.to_pylist()[0] == "4" and sum(lengths) == len(tokens)


def test_weighted_steps_follow_the_weights():
    graph = graph_of([("a", "b"), ("a", "c"), ("a", "d")], weights=[1.0, 2.0, 7.0])
    steps = random_walks(graph, np.zeros(20000, np.int64), 2, 1.0, 1.0, np.random.default_rng(1))[:, 1]
    shares = np.bincount(steps, minlength=4)[1:] / len(steps)
    np.testing.assert_allclose(shares, [0.1, 0.2, 0.7], atol=0.01)


def test_node2vec_bias_matches_its_transition_probabilities():
    # From t=0 to v=1, then the next step from v: back to t (1/p), to 2 (a neighbour of t: 1), or to
    # 5 (not a neighbour of t: 1/q). Normalised, those are node2vec's transition probabilities.
    graph = graph_of([("0", "1"), ("1", "2"), ("0", "2"), ("1", "5")])
    for p, q in ((0.25, 1.0), (1.0, 4.0), (2.0, 0.5)):
        starts = np.zeros(30000, np.int64)
        walks = random_walks(graph, starts, 3, p, q, np.random.default_rng(3))
        third = walks[walks[:, 1] == 1, 2]
        observed = np.array([np.mean(third == 0), np.mean(third == 2), np.mean(third == 3)])   # node "5" is index 3
        expected = np.array([1 / p, 1.0, 1 / q]) / (1 / p + 1.0 + 1 / q)
        np.testing.assert_allclose(observed, expected, atol=0.015)


def walk_config(**graph) -> dict:
    return {"name": "g", "input": {"path": "x.csv", "format": "csv"},
            "graph": {"source": "src", "target": "dst", "walks_per_node": 3, "walk_length": 5, **graph},
            "features": {"node": {"type": "vocabulary"}}, "model": {"kind": "skipgram", "seed": 5},
            "split": {"eval_fraction": 0.2}, "entities": [{"name": "node", "key": "node"}]}


def same_walks(tagged: list[tuple[str, list[str]]]) -> None:
    first = sorted(walk for tag, walk in tagged if tag == "first")
    assert first and first == sorted(walk for tag, walk in tagged if tag == "again")


def test_beam_walks_cover_every_node_on_existing_edges_and_count_what_was_dropped(tmp_path):
    parsed = config_from_dict(walk_config())
    schema = RawSchema(files=(), headers={}, types=transform_column_types(parsed), numeric=frozenset(),
                       metadata_types={}, required=required_columns(parsed))
    nodes = SHARD_NODES + 10   # two shards of edges, five chunks of start nodes
    ring = [(str(i), str((i + 1) % nodes)) for i in range(nodes)]
    rows = ring + [("5", "5"), ("1", "0"), ("x", "x")]   # two self-loops (x has no other edge), a duplicate
    batches = [pa.RecordBatch.from_pydict({"src": [s for s, _ in part], "dst": [t for _, t in part]})
               for part in (rows[:1500], rows[1500:3000], rows[3000:])]
    allowed = {edge for a, b in ring for edge in ((a, b), (b, a))}

    def check(walks: list[list[str]]) -> None:
        assert len(walks) == 3 * (nodes + 1)
        assert {walk[0] for walk in walks} == {str(i) for i in range(nodes)} | {"x"}
        assert all(len(walk) == 5 and all(step in allowed for step in zip(walk, walk[1:]))
                   for walk in walks if walk[0] != "x")
        assert [walk for walk in walks if walk[0] == "x"] == [["x"]] * 3

    def build(name: str, parts_dir: str | None) -> dict[str, int]:
        building = TestPipeline(runner=FnApiRunner())
        edge_rows = building | beam.Create(batches)
        built_nodes = (EdgePasses(edge_rows, edge_rows)
                       | BuildGraph(parsed.graph, str(tmp_path / name / "graph"), parts_dir, part_edges=4000))
        _ = built_nodes | WriteNodeTables(parsed, schema, RunDir(str(tmp_path / name)))
        built = building.run()
        built.wait_until_finish()
        return read_counters(built)

    expected = graph_from_edges(pa.array([s for s, _ in rows]), pa.array([t for _, t in rows]), None, directed=False)
    for name, parts_dir in (("shuffled", None), ("graph", str(tmp_path / "parts"))):
        counts = build(name, parts_dir)
        loaded = load_graph(str(tmp_path / name / "graph"))
        np.testing.assert_array_equal(loaded.offsets, expected.offsets)
        np.testing.assert_array_equal(loaded.neighbours, expected.neighbours)
        assert (counts["self_loops"], counts["duplicate_edges"], counts["nodes_without_edges"]) == (2, 1, 1)
        assert counts["nodes"] == nodes + 1 and counts["edges"] == nodes
        table = pd.read_parquet(RunDir(str(tmp_path / name)).entity_table_dir("node"))
        assert len(table) == nodes + 1 and table.set_index("key")["count"].to_dict()["x"] == 0
    # Through files, edges go on once 4,000 are held (after the second batch) and at the bundle's end.
    assert len(os.listdir(tmp_path / "parts")) == 2
    path = str(tmp_path / "graph" / "graph")

    walking = TestPipeline(runner=FnApiRunner())
    inputs = walking | WalkGraph(parsed, path, counts["nodes"])
    walks = ((inputs.train, inputs.eval) | beam.Flatten()
             | beam.FlatMap(lambda documents: documents.column(0).to_pylist()))
    assert_that(walks | beam.combiners.ToList(), lambda got: check(got[0]))
    passes = [collection | f"Tag[{tag}]" >> beam.FlatMap(lambda docs, t: [(t, w) for w in docs.column(0).to_pylist()], tag)
              for tag, collection in (("first", inputs.analyze), ("again", inputs.train))]
    assert_that(passes | "FlattenPasses" >> beam.Flatten() | "Passes" >> beam.combiners.ToList(),
                lambda got: same_walks(got[0]), label="BothPassesWalkAlike")
    walked = walking.run()
    walked.wait_until_finish()
    counts = read_counters(walked)
    assert counts["documents_train"] + counts["documents_eval"] == 3 * (nodes + 1)
    assert 0.1 < counts["documents_eval"] / (3 * (nodes + 1)) < 0.3


@pytest.mark.parametrize("weighted", [False, True])
def test_a_graph_saved_shard_by_shard_loads_back_equal(tmp_path, weighted):
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 2 * SHARD_NODES + 300, (20000, 2))
    sources, targets = (pa.array([f"n{node}" for node in column]) for column in rows.T)
    weights = rng.uniform(0.5, 2.0, len(rows)) if weighted else None
    names = node_names([sources, targets])
    edges, _ = directed_edges(names, sources, targets, weights, directed=False)
    directory = str(tmp_path / "graph")
    written: dict[int, list[EdgePart]] = {}
    remote = f"ram://edges-{uuid.uuid4().hex}"   # the parts read back by ranges, as from gs://
    for half in np.array_split(np.arange(len(edges.sources)), 2):   # the edges written out twice, as a worker does
        for shard, part in save_edge_parts(dict(shard_of(edges.take(half), len(names))), remote):
            written.setdefault(shard, []).append(part)
    assert [len(parts) for parts in written.values()] == [2, 2, 2]
    assert len(fs.listdir(remote)) == 2   # one file each time, for every shard
    shards = [adjacency_shard(shard, [load_edge_part(part) for part in parts], len(names), directed=False)
              for shard, parts in written.items()]
    saved = save_nodes([save_shard(shard, directory) for shard in reversed(shards)], names, directory)
    expected = graph_from_edges(sources, targets, weights, directed=False)
    loaded = load_graph(directory)
    assert len(shards) == 3 and loaded.names.equals(expected.names) and saved.names.equals(expected.names)
    assert (loaded.edges, loaded.duplicates) == (saved.edges, saved.duplicates) == (expected.edges, expected.duplicates)
    np.testing.assert_array_equal(saved.degrees, expected.degrees)
    np.testing.assert_array_equal(loaded.offsets, expected.offsets)
    np.testing.assert_array_equal(loaded.neighbours, expected.neighbours)
    assert loaded.neighbours.dtype == np.int32
    if weighted:
        np.testing.assert_allclose(loaded.cumulative, expected.cumulative)
    else:
        assert loaded.cumulative is None
    (tmp_path / "graph" / "shard-000000004096.npz").unlink()
    with pytest.raises(ValueError, match="shards in .* do not hold the"):
        load_graph(directory)


def test_edge_rows_need_both_ids_and_a_positive_weight():
    from pipelines.stages.preprocess.rows import InvalidRow, RowTyper
    parsed = config_from_dict(walk_config(weight="w"))
    schema = RawSchema(files=(), headers={}, types=transform_column_types(parsed), numeric=frozenset(),
                       metadata_types={}, required=required_columns(parsed))
    typer = RowTyper(parsed, schema)
    assert typer.type_row({"src": "a", "dst": "b", "w": "2.5"})[0] == ["a", "b", 2.5]
    for row, reason in (({"src": "", "dst": "b", "w": 1}, "graph.source: no value in column 'src'"),
                        ({"src": "a", "dst": None, "w": 1}, "graph.target: no value in column 'dst'"),
                        ({"src": "a", "dst": "b", "w": "-3"}, "graph.weight: '-3' is not a positive number"),
                        ({"src": "a", "dst": "b", "w": "abc"}, "graph.weight: 'abc' is not a positive number")):
        with pytest.raises(InvalidRow, match=reason):
            typer.type_row(row)


@pytest.mark.parametrize("changes, message", [
    ({"graph": {"source": "src", "target": "dst", "p": 0}}, "graph.p: must be > 0"),
    ({"graph": {"source": "src", "target": "dst", "q": -1.5}}, "graph.q: must be > 0"),
    ({"graph": {"source": "src", "target": "src"}}, "graph.target: 'src' is already graph.source"),
    ({"graph": {"source": "src", "target": "dst", "walk_length": 1}}, "graph.walk_length: must be >= 2"),
    ({"graph": {"source": "src", "target": "dst", "directed": "yes"}}, "graph.directed: expected true/false"),
    ({"features": {"node": {"type": "vocabulary", "column": "src"}}}, "features.node.column: a graph's node feature"),
    ({"features": {"node": {"type": "hash", "hash_buckets": 8}}}, "features: a graph config has exactly one feature"),
    ({"split": {"column": "held"}}, "split.column: a graph config holds out whole walks"),
    ({"entities": [{"name": "node", "key": "node", "metadata": ["src"]}]}, r"entities\[0\].metadata: a graph's nodes"),
    ({"model": {"kind": "supervised", "label": "w"}}, "model.kind: a graph config trains skip-gram"),
])
def test_config_errors_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**walk_config(), **changes})


def test_a_missing_column_is_named_before_any_work(tmp_path, capsys):
    (tmp_path / "e.csv").write_text("src,dst\na,b\n")
    settings = {**walk_config(), "input": {"path": str(tmp_path / "e.csv"), "format": "csv"},
                "graph": {"source": "src", "target": "to"}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(settings))
    assert run_cli("run", tmp_path / "g.yaml", "--output", tmp_path / "runs") == 2
    assert "graph.target: column 'to' is not in" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def purity(vectors: pd.DataFrame, communities: pd.Series) -> float:
    """Share of nodes whose k-means cluster's majority community is their own."""
    from sklearn.cluster import KMeans
    unit = np.stack(vectors.embedding.to_numpy())
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    clusters = KMeans(communities.nunique(), n_init=4, random_state=0).fit_predict(unit)
    table = pd.crosstab(clusters, communities.loc[vectors.key].to_numpy())
    return float(table.max(axis=1).sum() / len(vectors))


def test_deepwalk_run_recovers_planted_communities(tmp_path):
    edges, communities = planted_partition(nodes=400, communities=8, degree_in=8, degree_out=1, seed=1)
    bad = pd.DataFrame({"source": ["n3", "", "n7"], "target": ["n3", "n9", None]})   # a self-loop, two missing ids
    edges = pd.concat([edges, bad])
    edges.to_csv(tmp_path / "edges.csv", index=False)
    settings = yaml.safe_load((ROOT / "examples" / "graph.yaml").read_text())
    settings["input"] = {"path": str(tmp_path / "edges.csv"), "format": "csv"}
    settings["model"].update({"epochs": 2, "embedding_dim": 16, "batch_size": 2048})
    (tmp_path / "graph.yaml").write_text(yaml.safe_dump(settings))
    assert run_cli("run", tmp_path / "graph.yaml", "--output", tmp_path / "runs", "--run-id", "g") == 0
    run = tmp_path / "runs" / "g"
    facts = json.loads((run / "manifest.json").read_text())["stages"]["preprocess"]
    assert facts["counts"]["self_loops"] == 1 and facts["counts"]["rows_invalid"] == 2
    assert set(facts["invalid_reasons"]) == {"graph.source: missing value", "graph.target: missing value"}
    vectors = pd.read_parquet(run / "embeddings" / "node")
    assert set(vectors.key) == set(communities.index)
    assert purity(vectors, communities) > 0.9
    assert run_cli("cluster", run, "--entity", "node", "--k", "8") == 0


def test_two_worker_processes_walk_the_graph_one_process_walks(tmp_path):
    """The in-process runner's worker processes share the edges' scratch files and each reads the graph:
    the same walks, examples and node table as one process, shards of the output aside."""
    import tensorflow as tf
    edges, _ = planted_partition(nodes=3000, communities=6, degree_in=6, degree_out=1, seed=2)   # 3 chunks of starts
    edges.to_csv(tmp_path / "edges.csv", index=False)
    settings = yaml.safe_load((ROOT / "examples" / "graph.yaml").read_text())
    settings["input"] = {"path": str(tmp_path / "edges.csv"), "format": "csv"}
    (tmp_path / "graph.yaml").write_text(yaml.safe_dump(settings))
    workers = {"one": [], "two": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]}
    outputs = {}
    for name, options in workers.items():
        assert run_cli("preprocess", tmp_path / "graph.yaml", "--output", tmp_path / "runs", "--run-id", name,
                       *options) == 0
        run = tmp_path / "runs" / name
        files = sorted(str(path) for path in (run / "data").glob("train-*.tfrecord.gz"))
        records = sorted(record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP"))
        table = pd.read_parquet(run / "data" / "entities" / "node").sort_values("key").reset_index(drop=True)
        counts = json.loads((run / "manifest.json").read_text())["stages"]["preprocess"]["counts"]
        outputs[name] = (records, table, counts)
    (one, one_table, one_counts), (two, two_table, two_counts) = outputs["one"], outputs["two"]
    assert len(one) == one_counts["documents_train"] > 0 and one == two
    pd.testing.assert_frame_equal(one_table, two_table)
    assert one_counts == two_counts
    assert len(list((tmp_path / "runs" / "two" / "data").glob("train-*.tfrecord.gz"))) == 2   # both workers walked



def test_the_terminal_splits_a_graphs_walks_not_its_edges():
    from pipelines.cli.summary import preprocess_lines
    counts = {"rows_read": 9627, "rows_valid": 9627, "rows_train": 9627, "rows_eval": 0, "rows_invalid": 0,
              "nodes": 2000, "edges": 9627, "documents_train": 18955, "documents_eval": 1045, "walk_tokens": 800000,
              "self_loops": 0, "duplicate_edges": 0, "nodes_without_edges": 0}
    assert preprocess_lines({"counts": counts}) == [
        "9,627 rows read: 9,627 valid, 0 invalid",
        "2,000 nodes, 9,627 edges; 18,955 train and 1,045 eval walks, 800,000 nodes walked"]
