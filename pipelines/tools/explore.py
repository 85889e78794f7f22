"""Explore a published entity: k-means clusters and TensorBoard projector files."""
from __future__ import annotations

import collections

import pyarrow as pa

from pipelines.core import fs
from pipelines.core.errors import UsageError
from pipelines.core.rundir import RunDir
from pipelines.tools.neighbors import load_entity


def cluster(run: RunDir, entity_name: str, k: int, seed: int = 0,
            examples: int = 5) -> tuple[dict[int, list[str]], dict[int, int]]:
    """k-means (scikit-learn) on the entity's vectors (unit length for cosine entities).

    Writes `clusters/<entity>/part-00000.parquet` (key, cluster). Returns cluster -> example labels
    (most frequent keys first), largest cluster first, and cluster -> size.

    Raises:
        UsageError: k is not between 2 and the number of keys.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    entity = load_entity(run, entity_name)
    if not 1 < k <= len(entity.keys):
        raise UsageError(f"--k must be between 2 and the number of keys ({len(entity.keys)}), got {k}")
    vectors = entity.similarity_vectors
    algorithm = KMeans if len(vectors) <= 100_000 else MiniBatchKMeans
    assignments = algorithm(n_clusters=k, random_state=seed, n_init=3).fit_predict(vectors)
    table = pa.table({"key": entity.keys, "cluster": pa.array(assignments, pa.int32())})
    fs.write_parquet(table, fs.join(run.clusters_dir(entity_name), "part-00000.parquet"))
    names = entity.labels()
    members: dict[int, list[int]] = collections.defaultdict(list)
    for row in entity.rows_by_count():
        members[int(assignments[row])].append(int(row))
    ordered = sorted(members.items(), key=lambda item: -len(item[1]))
    return {c: [names[r] for r in rows[:examples]] for c, rows in ordered}, {c: len(rows) for c, rows in ordered}


def write_projector(run: RunDir, entity_name: str, sample: int) -> str:
    """TensorBoard projector files for the entity under `projector/<entity>/`; returns the log dir.

    vectors.tsv (no header), metadata.tsv (a header only when there is more than one column) and
    projector_config.pbtxt; the `sample` most frequent keys.
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    entity = load_entity(run, entity_name)
    rows = entity.rows_by_count()[:sample]
    directory = run.projector_dir(entity_name)
    fs.write_text_atomic(fs.join(directory, "vectors.tsv"),
                         "".join("\t".join(f"{x:.6g}" for x in entity.vectors[r]) + "\n" for r in rows))
    columns = ["key"] + entity.metadata_columns + ["count"]
    values = {c: (entity.keys if c == "key" else entity.table.column(c).to_pylist()) for c in columns}

    def cell(value) -> str:
        return str(value).replace("\t", " ").replace("\n", " ")
    text = "\t".join(columns) + "\n" + "".join("\t".join(cell(values[c][r]) for c in columns) + "\n" for r in rows)
    fs.write_text_atomic(fs.join(directory, "metadata.tsv"), text)
    config = ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = entity_name
    embedding.tensor_path = "vectors.tsv"
    embedding.metadata_path = "metadata.tsv"
    fs.write_text_atomic(fs.join(directory, "projector_config.pbtxt"), text_format.MessageToString(config))
    return directory
