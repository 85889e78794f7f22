"""Exploring published vectors: exact neighbours, the ANN index, batch neighbours, clusters, projector, plot."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.core.beam_runner import pipeline_options
from pipelines.core.rundir import RunDir
from pipelines.tools.batch_neighbors import run_batch_neighbors
from pipelines.tools.explore import cluster, write_projector
from pipelines.tools.index import UsearchIndexer, build_index, recall_at_k
from pipelines.tools.neighbors import exact_neighbors, load_entity
from pipelines.tools.plot import entity_clusters
from tests.conftest import run_cli


def publish(run: pathlib.Path | str, entity: str, keys: list[str], vectors: np.ndarray, similarity: str = "cosine",
            **metadata_columns) -> RunDir:
    """Writes an entity as the embed job does (schema and file metadata), into a run whose manifest
    says it was embedded; `run` may be on any filesystem (ram://)."""
    from pipelines.core import fs
    run_dir = RunDir(str(run))
    manifest = run_dir.read_manifest() if run_dir.exists() else run_dir.create("test", {
        "name": "test", "input": {"path": "x.csv", "format": "csv"}, "features": {entity: {"type": "vocabulary"}},
        "model": {"kind": "supervised", "label": "y"},
        "entities": [{"name": entity, "key": entity}]})
    stages = manifest.setdefault("stages", {})
    for stage in ("preprocess", "train"):
        stages.setdefault(stage, {"status": "succeeded"})
    embed = stages.setdefault("embed", {"status": "succeeded", "entities": {}})
    embed["entities"][entity] = len(keys)
    run_dir.write_manifest(manifest)
    dim = vectors.shape[1]
    columns = {"key": pa.array(keys), "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.astype(np.float32).reshape(-1)), dim),
        "count": pa.array(np.arange(len(keys))[::-1], pa.int64()), **{k: pa.array(v) for k, v in metadata_columns.items()}}
    schema = pa.table(columns).schema.with_metadata({"similarity": similarity, "dim": str(dim), "entity": entity,
                                                     "created_at": "2026-01-01T00:00:00+00:00"})
    fs.write_parquet(pa.table(columns, schema=schema), fs.join(run_dir.embeddings_dir(entity), "part-00000-of-00001.parquet"))
    return run_dir


def planted(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Three tight groups of 20 around orthogonal directions: a0..a19, b0.., c0.."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8) * 10
    vectors = np.concatenate([centres[g] + rng.normal(scale=0.1, size=(20, 8)) for g in range(3)])
    return [f"{g}{i}" for g in "abc" for i in range(20)], vectors


def test_exact_neighbours_of_planted_groups(tmp_path):
    keys, vectors = planted()
    run = publish(tmp_path, "thing", keys, vectors, title=[f"Title {k}" for k in keys])
    entity = load_entity(run, "thing")
    for group in "abc":
        row = entity.find_row(f"{group}3")
        found = exact_neighbors(entity, row, 19)
        assert {entity.keys[r] for r, _ in found} == {f"{group}{i}" for i in range(20)} - {f"{group}3"}
        assert all(a >= b for (_, a), (_, b) in zip(found, found[1:]))
    assert entity.find_row("Title b7") == keys.index("b7")
    dot = publish(tmp_path / "dot", "thing", ["x", "y", "z"], np.array([[1.0, 0], [10.0, 0], [0, 1.0]]), "dot")
    assert [r for r, _ in exact_neighbors(load_entity(dot, "thing"), 0, 2)] == [1, 2]


@pytest.fixture(scope="module")
def large_run(tmp_path_factory) -> RunDir:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(20000, 32))
    return publish(tmp_path_factory.mktemp("large"), "item", [f"i{i}" for i in range(20000)], vectors)


def test_index_recall_against_exact_search(large_run, capsys):
    facts = build_index(large_run, "item")
    assert facts["vectors"] == 20000 and facts["metric"] == "cosine"
    recall = recall_at_k(load_entity(large_run, "item"), UsearchIndexer(large_run, "item"), k=10, queries=500)
    print(f"usearch HNSW recall@10 on 20,000 random 32-dim vectors: {recall:.3f}")
    assert recall > 0.95
    capsys.readouterr()
    assert run_cli("neighbors", large_run.path, "--entity", "item", "--key", "i5", "-k", "3") == 0
    out = capsys.readouterr().out
    assert "(index)" in out and len(out.strip().splitlines()) == 2 + 3


def test_batch_neighbours_job(tmp_path, large_run):
    keys = [f"i{i}" for i in range(0, 20000, 97)]
    (tmp_path / "keys.txt").write_text("\n".join(keys + ["missing", ""]) + "\n")
    missing = run_batch_neighbors(large_run, "item", str(tmp_path / "keys.txt"), str(tmp_path / "out" / "nn"), 5, True,
                                  pipeline_options([]))
    assert missing == 1
    result = pd.read_parquet(tmp_path / "out")
    assert len(result) == len(keys) * 5 and set(result.key) == set(keys)
    entity = load_entity(large_run, "item")
    first = result[result.key == "i97"].sort_values("rank")
    assert list(first.neighbor) == [entity.keys[r] for r, _ in exact_neighbors(entity, 97, 5)]


def test_clusters_recover_planted_groups(tmp_path, capsys):
    keys, vectors = planted()
    run = publish(tmp_path, "thing", keys, vectors)
    examples, sizes = cluster(run, "thing", 3)
    assert sorted(sizes.values()) == [20, 20, 20]
    table = pd.read_parquet(tmp_path / "clusters" / "thing")
    assert table.groupby(table.key.str[0]).cluster.nunique().tolist() == [1, 1, 1]
    assert table.cluster.nunique() == 3
    assert run_cli("cluster", run.path, "--entity", "thing", "--k", "100") == 2


def test_a_plot_is_coloured_by_the_clusters_once_they_are_made(tmp_path):
    import matplotlib.image
    keys, vectors = planted()
    run = publish(tmp_path, "thing", keys, vectors)
    assert entity_clusters(run, "thing", keys) is None   # `embedpipe cluster` has not run
    assert run_cli("plot", run.path, "--entity", "thing", "--out", tmp_path / "plain.png") == 0
    cluster(run, "thing", 3)
    found = entity_clusters(run, "thing", keys + ["unclustered"])
    assert found[-1] == -1 and pd.Series(found[:-1]).groupby([key[0] for key in keys]).nunique().tolist() == [1, 1, 1]
    assert run_cli("plot", run.path, "--entity", "thing", "--out", tmp_path / "coloured.png") == 0
    plain, coloured = (matplotlib.image.imread(tmp_path / name)[..., :3] for name in ("plain.png", "coloured.png"))

    def colours(image: np.ndarray) -> int:   # distinct saturated colours: the points', not the grey and black
        pixels = image.reshape(-1, 3)
        saturated = pixels[pixels.max(axis=1) - pixels.min(axis=1) > 0.3]
        return len(np.unique((saturated * 4).round(), axis=0))
    assert colours(plain) < colours(coloured)


def test_projector_files_load_and_line_up(tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    keys, vectors = planted()
    run = publish(tmp_path, "thing", keys, vectors, title=[f"T {k}" for k in keys])
    directory = pathlib.Path(write_projector(run, "thing", sample=25))
    config = text_format.Parse((directory / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert config.embeddings[0].tensor_path == "vectors.tsv" and config.embeddings[0].metadata_path == "metadata.tsv"
    vector_lines = (directory / "vectors.tsv").read_text().splitlines()
    metadata_lines = (directory / "metadata.tsv").read_text().splitlines()
    assert len(vector_lines) == 25 and all(len(line.split("\t")) == 8 for line in vector_lines)
    assert metadata_lines[0] == "key\ttitle\tcount" and len(metadata_lines) == 26
    single = publish(tmp_path / "single", "thing", keys, vectors)
    only_keys = pathlib.Path(write_projector(single, "thing", sample=10)) / "metadata.tsv"
    assert len(only_keys.read_text().splitlines()) == 10 + 1   # key and count: a header


def test_plot_png(tmp_path, monkeypatch, capsys):
    import matplotlib.image
    keys = [f"{d}|{h}" for d in range(1, 8) for h in range(24)]
    rng = np.random.default_rng(0)
    run = publish(tmp_path, "day_hour", keys, rng.normal(size=(168, 2)))
    out = tmp_path / "day_hour.png"
    assert run_cli("plot", run.path, "--entity", "day_hour", "--out", out) == 0
    image = matplotlib.image.imread(out)
    # a day x hour cross gets its 7 x 24 grid under the scatter
    assert image.shape[:2] == (1300, 1200) and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.chdir(tmp_path)   # a bare file name is written in the working directory
    assert run_cli("plot", run.path, "--entity", "day_hour", "--out", "bare.svg") == 0
    assert (tmp_path / "bare.svg").read_text().lstrip().startswith("<?xml")
    assert run_cli("plot", run.path, "--entity", "day_hour", "--out", "day_hour.jpg") == 2
    assert "write a .png, .svg or .pdf file" in capsys.readouterr().err
    keys_other, vectors = planted()
    other = publish(tmp_path / "o", "thing", keys_other, vectors)
    assert run_cli("plot", other.path, "--entity", "thing", "--out", tmp_path / "t.png", "--method", "tsne") == 0
    assert matplotlib.image.imread(tmp_path / "t.png").shape[:2] == (900, 1200)
