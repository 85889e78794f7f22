"""Explore a published entity: k-means clusters, TensorBoard projector files, 2-D plots."""
from __future__ import annotations

import collections
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.neighbors import EntityVectors, load_entity
from pipelines.rundir import RunDir, write_text_atomic
from transforms.preprocessing import CROSS_SEPARATOR

logger = logging.getLogger(__name__)


def label_column(entity: EntityVectors) -> str | None:
    """The first string metadata column (a title reads better than an id), if any."""
    for column in entity.metadata_columns:
        if column != "count" and pa.types.is_string(entity.table.schema.field(column).type):
            return column
    return None


def labels(entity: EntityVectors) -> list[str]:
    column = label_column(entity)
    return entity.keys if column is None else [
        value or key for key, value in zip(entity.keys, entity.table.column(column).to_pylist())]


def cluster(run: RunDir, entity_name: str, k: int, seed: int = 0,
            examples: int = 5) -> tuple[dict[int, list[str]], dict[int, int]]:
    """k-means (scikit-learn) on the entity's vectors (unit length for cosine entities).

    Writes `clusters/<entity>/part-00000.parquet` (key, cluster). Returns cluster -> example labels
    (most frequent keys first), largest cluster first, and cluster -> size.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    entity = load_entity(run, entity_name)
    if not 1 < k <= len(entity.keys):
        raise ValueError(f"--k must be between 2 and the number of keys ({len(entity.keys)}), got {k}")
    vectors = entity.similarity_vectors
    algorithm = KMeans if len(vectors) <= 100_000 else MiniBatchKMeans
    assignments = algorithm(n_clusters=k, random_state=seed, n_init=3).fit_predict(vectors)
    directory = run.join("clusters", entity_name)
    os.makedirs(directory, exist_ok=True)
    table = pa.table({"key": entity.keys, "cluster": pa.array(assignments, pa.int32())})
    pq.write_table(table, os.path.join(directory, "part-00000.parquet.tmp"))
    os.replace(os.path.join(directory, "part-00000.parquet.tmp"), os.path.join(directory, "part-00000.parquet"))
    names = labels(entity)
    members: dict[int, list[int]] = collections.defaultdict(list)
    for row in entity.rows_by_count():
        members[int(assignments[row])].append(int(row))
    ordered = sorted(members.items(), key=lambda item: -len(item[1]))
    return {c: [names[r] for r in rows[:examples]] for c, rows in ordered}, {c: len(rows) for c, rows in ordered}


def write_projector(run: RunDir, entity_name: str, sample: int, seed: int = 0) -> str:
    """TensorBoard projector files for the entity under `projector/<entity>/`; returns the log dir.

    vectors.tsv (no header), metadata.tsv (a header only when there is more than one column) and
    projector_config.pbtxt; a seeded sample of at most `sample` keys, the most frequent kept first.
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    entity = load_entity(run, entity_name)
    rows = entity.rows_by_count()[:sample]
    directory = run.join("projector", entity_name)
    os.makedirs(directory, exist_ok=True)
    write_text_atomic(os.path.join(directory, "vectors.tsv"),
                      "".join("\t".join(f"{x:.6g}" for x in entity.vectors[r]) + "\n" for r in rows))
    extra = [c for c in entity.metadata_columns if c != "count"]
    columns = ["key"] + extra + ["count"]
    values = {c: (entity.keys if c == "key" else entity.table.column(c).to_pylist()) for c in columns}

    def cell(value) -> str:
        return str(value).replace("\t", " ").replace("\n", " ")
    if len(columns) > 1:
        text = "\t".join(columns) + "\n" + "".join("\t".join(cell(values[c][r]) for c in columns) + "\n" for r in rows)
    else:
        text = "".join(cell(entity.keys[r]) + "\n" for r in rows)
    write_text_atomic(os.path.join(directory, "metadata.tsv"), text)
    config = ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = entity_name
    embedding.tensor_path = "vectors.tsv"
    embedding.metadata_path = "metadata.tsv"
    write_text_atomic(os.path.join(directory, "projector_config.pbtxt"), text_format.MessageToString(config))
    return directory


def project_2d(vectors: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """[n, dim] -> [n, 2] by PCA (numpy SVD) or t-SNE (scikit-learn); 2-dim vectors are kept as they are."""
    if vectors.shape[1] == 2:
        return vectors
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(n_components=2, random_state=seed, perplexity=min(30, max(2, len(vectors) // 4))).fit_transform(vectors)
    centered = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    return centered @ components[:2].T


def plot(run: RunDir, entity_name: str, out: str, method: str = "pca", sample: int = 2000, annotate: int = 40,
         size: tuple[int, int] = (1200, 900)) -> str:
    """A PNG of the entity in 2-D. Cross keys ("day|hour") are coloured by their first part and
    annotated with the second (the course's day-of-week x hour-of-day picture); other entities are
    annotated with the labels of their most frequent keys."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    entity = load_entity(run, entity_name)
    rows = entity.rows_by_count()[:sample]
    points = project_2d(entity.vectors[rows], method)
    keys = [entity.keys[r] for r in rows]
    dpi = 100
    figure, axes = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    if keys and all(CROSS_SEPARATOR in key for key in keys):
        first = [key.split(CROSS_SEPARATOR)[0] for key in keys]
        groups = sorted(set(first), key=lambda v: (len(v), v))
        colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for index, group in enumerate(groups):
            mask = np.array([f == group for f in first])
            axes.scatter(points[mask, 0], points[mask, 1], s=30, color=colours(index % colours.N), label=group)
        for (x, y), key in zip(points, keys):
            axes.annotate(key.split(CROSS_SEPARATOR, 1)[1], (x, y), fontsize=7, alpha=0.8)
        axes.legend(title=entity_name.split("_")[0], fontsize=8)
    else:
        axes.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6)
        names = labels(entity)
        for (x, y), row in list(zip(points, rows))[:annotate]:
            axes.annotate(names[row][:30], (x, y), fontsize=7)
    shown = "as they are (2-D)" if entity.vectors.shape[1] == 2 else method.upper()
    axes.set_title(f"{entity_name}: {len(rows)} vectors, {shown}")
    figure.tight_layout()
    figure.savefig(out, dpi=dpi)
    plt.close(figure)
    return out
